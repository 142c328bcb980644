"""The policy engine: which deployments may a tenant use for this request, and why.

One ``PolicyEngine`` exists per (policy version, registry version). It holds the parsed Cedar
policy set, schema-checked entities and a decision cache; when either version moves, the router
builds a new engine, so a cached decision can never outlive the policy or registry it came from.

Every decision is Cedar's (deny by default, any matching forbid wins). On top of it, the engine
fails closed: an unknown tenant or deployment, or any error while Cedar evaluates a policy,
is a denial.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import cedarpy

from registry.snapshot import DeploymentSnap, PolicySnap, RegistrySnapshot, TenantSnap
from router.policy.compiler import DEFAULT_POLICY_SOURCE, CompiledPolicy, compile_policy
from router.policy.context import RequestContext
from router.policy.entities import RegistryEntities, build_registry_entities, uid
from router.policy.reasons import decision_reasons
from router.policy.schema import ACTION_TYPE, ACTIONS, DEPLOYMENT_TYPE, TENANT_TYPE, parsed_schema
from router.policy.specs import DecisionInput

DEFAULT_POLICY_VERSION = 0  # the version recorded when no policy has been saved yet
CACHE_SIZE = 100_000  # decisions kept per engine (an LRU)

# tenant, action, deployment, and the effective context's classification, purpose, caller_region
CacheKey: TypeAlias = tuple[str, str, str, str, str | None, str | None]


@dataclass(frozen=True, slots=True)
class CandidateDecision:
    """The verdict on one candidate deployment, with the deciding rule ids and their reasons."""

    deployment_id: str
    allowed: bool
    rule_ids: tuple[str, ...]
    reasons: tuple[str, ...]


class PolicyEngine:
    """Decisions for one policy version over one registry version, cached."""

    def __init__(
        self, *, policy: CompiledPolicy, entities: RegistryEntities, policy_version: int
    ) -> None:
        self.policy = policy
        self.entities = entities
        self.policy_version = policy_version
        self.registry_version = entities.registry_version
        self._rules = policy.rules_by_id()
        self._order = {rule_id: n for n, rule_id in enumerate(policy.rule_ids)}
        self._cedar_entities = cedarpy.Entities.from_json_str(
            entities.cedar_json(), parsed_schema()
        )
        self._cache = DecisionCache(CACHE_SIZE)

    @classmethod
    def build(cls, snapshot: RegistrySnapshot, policy: PolicySnap | None) -> PolicyEngine:
        """Compile ``policy`` (None: the default policy) and load ``snapshot``, once."""
        if policy is None:
            compiled = compile_policy("yaml", DEFAULT_POLICY_SOURCE)
        else:
            compiled = compile_policy(policy.format, policy.source)
        version = policy.version if policy else DEFAULT_POLICY_VERSION
        entities = build_registry_entities(snapshot)
        return cls(policy=compiled, entities=entities, policy_version=version)

    def decide(
        self, *, tenant_id: str, action: str, deployment_id: str, context: RequestContext
    ) -> CandidateDecision:
        """May ``tenant_id`` use ``deployment_id`` for ``action`` in ``context``?"""
        (decision,) = self.decide_many(
            tenant_id=tenant_id, action=action, deployment_ids=(deployment_id,), context=context
        )
        return decision

    def decide_many(
        self,
        *,
        tenant_id: str,
        action: str,
        deployment_ids: Sequence[str],
        context: RequestContext,
    ) -> list[CandidateDecision]:
        """``decide`` for several deployments at once, in the same order; one Cedar batch."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
        tenant = self.entities.tenants.get(tenant_id)
        if tenant is None:
            return [_denied(d, f"unknown tenant {tenant_id!r}") for d in deployment_ids]
        context = context.effective_for(tenant)
        keys = [cache_key(tenant_id, action, d, context) for d in deployment_ids]
        cached = [self._cache.get(key) for key in keys]
        missing = [key[2] for key, hit in zip(keys, cached, strict=True) if hit is None]
        fresh = self._evaluate(tenant, action, context, missing) if missing else {}
        return [
            hit if hit is not None else fresh[key[2]] for key, hit in zip(keys, cached, strict=True)
        ]

    def effective_context(self, tenant_id: str, context: RequestContext) -> RequestContext:
        """The context decisions use: classification raised to the tenant's default."""
        tenant = self.entities.tenants.get(tenant_id)
        return context.effective_for(tenant) if tenant else context

    def _evaluate(
        self, tenant: TenantSnap, action: str, context: RequestContext, deployment_ids: list[str]
    ) -> dict[str, CandidateDecision]:
        """Ask Cedar about these deployments in one batch, and remember the answers."""
        known = [d for d in dict.fromkeys(deployment_ids) if d in self.entities.deployments]
        context_json = json.dumps(context.cedar())  # once for the whole batch
        requests = [_cedar_request(tenant.id, action, d, context_json) for d in known]
        results = (
            cedarpy.is_authorized_batch(requests, self.policy.policy_set, self._cedar_entities)
            if requests
            else []
        )
        decisions = {
            deployment_id: self._verdict(tenant, action, context, deployment_id, result)
            for deployment_id, result in zip(known, results, strict=True)
        }
        for deployment_id in deployment_ids:
            decision = decisions.get(deployment_id) or _denied(
                deployment_id, f"unknown deployment {deployment_id!r}"
            )
            decisions[deployment_id] = decision
            self._cache.put(cache_key(tenant.id, action, deployment_id, context), decision)
        return decisions

    def _verdict(
        self,
        tenant: TenantSnap,
        action: str,
        context: RequestContext,
        deployment_id: str,
        result: cedarpy.AuthzResult,
    ) -> CandidateDecision:
        """Cedar's answer as a CandidateDecision; any evaluation error denies (fail closed)."""
        if result.diagnostics.errors:
            errors = result.diagnostics.errors
            reasons = tuple(f"denied: policy evaluation error: {error}" for error in errors)
            return CandidateDecision(deployment_id, False, (), reasons)
        rule_ids = tuple(sorted(result.diagnostics.reasons, key=self._order.__getitem__))
        subject = DecisionInput(tenant, action, context, self.entities.deployments[deployment_id])
        reasons = decision_reasons(self._rules, rule_ids, result.allowed, subject)
        return CandidateDecision(deployment_id, result.allowed, rule_ids, reasons)


def eligible_deployments(
    engine: PolicyEngine,
    *,
    tenant_id: str,
    action: str,
    context: RequestContext,
    candidates: Sequence[DeploymentSnap],
) -> list[CandidateDecision]:
    """THE seam the router calls: a decision for every candidate, in the candidates' order.

    The router may call only deployments whose decision is ``allowed``, on the first attempt and
    on every retry or fallback. ``candidates`` must come from the snapshot the engine was built
    from (``engine.registry_version``)."""
    return engine.decide_many(
        tenant_id=tenant_id,
        action=action,
        deployment_ids=[candidate.id for candidate in candidates],
        context=context,
    )


class DecisionCache:
    """Bounded LRU of decisions for one engine: the least recently used entry goes first.

    Keys are (tenant, action, deployment, effective context); the policy and registry versions
    are those of the engine that owns the cache, so a version change starts an empty cache."""

    def __init__(self, max_entries: int) -> None:
        self._entries: OrderedDict[CacheKey, CandidateDecision] = OrderedDict()
        self._max_entries = max_entries
        self._lock = threading.Lock()

    def get(self, key: CacheKey) -> CandidateDecision | None:
        with self._lock:
            decision = self._entries.get(key)
            if decision is not None:
                self._entries.move_to_end(key)
            return decision

    def put(self, key: CacheKey, decision: CandidateDecision) -> None:
        with self._lock:
            self._entries[key] = decision
            self._entries.move_to_end(key)
            if len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def cache_key(tenant_id: str, action: str, deployment_id: str, context: RequestContext) -> CacheKey:
    """Plain strings: cheap to hash on the hot path."""
    return (
        tenant_id,
        action,
        deployment_id,
        context.classification,
        context.purpose,
        context.caller_region,
    )


def _cedar_request(
    tenant_id: str, action: str, deployment_id: str, context_json: str
) -> dict[str, Any]:
    return {
        "principal": uid(TENANT_TYPE, tenant_id),
        "action": uid(ACTION_TYPE, action),
        "resource": uid(DEPLOYMENT_TYPE, deployment_id),
        "context": context_json,
    }


def _denied(deployment_id: str, reason: str) -> CandidateDecision:
    return CandidateDecision(deployment_id, False, (), (f"denied: {reason}",))
