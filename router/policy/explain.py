"""``explain``: for a tenant, a model or route name and a context, every candidate deployment,
allowed or denied, the rules that decided and why. It calls ``eligible_deployments``, the same
seam live traffic goes through, so it cannot disagree with the router.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from registry.snapshot import DeploymentSnap, RegistrySnapshot
from registry.vocabulary import did_you_mean
from router.policy.context import RequestContext
from router.policy.engine import PolicyEngine, eligible_deployments
from router.policy.errors import UnknownModelOrRoute, UnknownTenant

# Facts shown next to each candidate, so a reader sees what the rules saw.
PROVENANCE_FIELDS = (
    "model",
    "developer",
    "developer_country",
    "ancestor_developer_countries",
    "ancestor_countries_confidence",
    "effective_licenses",
    "license_confidence",
    "hosting",
    "location_country",
    "location_eea",
    "operator",
    "operator_country",
    "hardware_vendor",
    "first_party",
    "operator_listings",
    "developer_listings",
    "ancestor_training_hardware_vendors",
    "training_data_countries",
    "restricted_topics",
    "trains_on_inputs",
    "zero_data_retention",
    "review_status",
    "model_review_status",
    "min_confidence",
)


@dataclass(frozen=True, slots=True)
class CandidateExplanation:
    deployment_id: str
    model_id: str
    allowed: bool
    rule_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    provenance: Mapping[str, Any]  # PROVENANCE_FIELDS; "unknown" where the fact is unknown


@dataclass(frozen=True, slots=True)
class Explanation:
    tenant_id: str
    requested: str
    action: str
    context: RequestContext  # effective: classification raised to the tenant default
    policy_version: int
    registry_version: int
    candidates: tuple[CandidateExplanation, ...]

    @property
    def allowed_deployments(self) -> tuple[str, ...]:
        return tuple(c.deployment_id for c in self.candidates if c.allowed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the admin API and the CLI."""
        data = asdict(self)
        data["allowed_deployments"] = list(self.allowed_deployments)
        return data


def candidate_deployments(
    snapshot: RegistrySnapshot, model_or_route: str
) -> tuple[DeploymentSnap, ...]:
    """THE candidate resolver: the deployments a request for ``model_or_route`` is decided
    over, in fallback order. Live routing (``router.table.candidate_index``), ``/v1/models``,
    the audit row and ``explain`` all get their candidates here, so they cannot disagree.

    What a client may send as ``model`` is a route name or a model id (a deployment id is not:
    raises UnknownModelOrRoute, as live routing answers 404). A route lists deployment ids and
    model ids; a model stands for its deployments by priority. Disabled and unreviewed
    deployments stay in the list: the policy denies them (``baseline-disabled``, ...), so
    every answer names them with the rule that decided."""
    route = snapshot.routes.get(model_or_route)
    if route is None and model_or_route not in snapshot.models:
        hint = did_you_mean(model_or_route, [*snapshot.routes, *snapshot.models])
        raise UnknownModelOrRoute(f"no route or model is called {model_or_route!r}{hint}")
    names = route.candidates if route else (model_or_route,)
    found: dict[str, DeploymentSnap] = {}
    for name in names:
        for deployment in _deployments_named(snapshot, name):
            found.setdefault(deployment.id, deployment)
    return tuple(found.values())


def _deployments_named(snapshot: RegistrySnapshot, name: str) -> tuple[DeploymentSnap, ...]:
    if name in snapshot.deployments:
        return (snapshot.deployments[name],)
    return tuple(sorted(snapshot.deployments_of(name), key=lambda d: (d.priority, d.id)))


def explain(
    engine: PolicyEngine,
    snapshot: RegistrySnapshot,
    *,
    tenant_id: str,
    model_or_route: str,
    action: str,
    context: RequestContext,
) -> Explanation:
    """Every candidate deployment of ``model_or_route`` for this tenant, decided and explained."""
    if snapshot.version != engine.registry_version:
        raise ValueError(
            f"snapshot version {snapshot.version} is not the engine's "
            f"registry version {engine.registry_version}"
        )
    if tenant_id not in snapshot.tenants:
        hint = did_you_mean(tenant_id, snapshot.tenants)
        raise UnknownTenant(f"no tenant is called {tenant_id!r}{hint}")
    candidates = candidate_deployments(snapshot, model_or_route)
    decisions = eligible_deployments(
        engine, tenant_id=tenant_id, action=action, context=context, candidates=candidates
    )
    explained = tuple(
        CandidateExplanation(
            deployment_id=d.id,
            model_id=d.model_id,
            allowed=decision.allowed,
            rule_ids=decision.rule_ids,
            reasons=decision.reasons,
            provenance=_provenance(engine, d.id),
        )
        for d, decision in zip(candidates, decisions, strict=True)
    )
    return Explanation(
        tenant_id=tenant_id,
        requested=model_or_route,
        action=action,
        context=engine.effective_context(tenant_id, context),
        policy_version=engine.policy_version,
        registry_version=engine.registry_version,
        candidates=explained,
    )


def _provenance(engine: PolicyEngine, deployment_id: str) -> dict[str, Any]:
    facts = engine.entities.deployments.get(deployment_id)
    attrs = facts.attrs if facts else {}
    return {
        name: list(value) if isinstance(value, tuple) else value
        for name in PROVENANCE_FIELDS
        for value in [attrs.get(name, "unknown")]
    }
