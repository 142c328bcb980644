"""The routing table: everything the hot path needs, computed once per registry snapshot.

Built off the hot path (at start and on each registry or policy change) and swapped whole, so a
request sees one consistent version of registry, policy and precomputed headers.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from adapters.base import BackendTarget
from registry.audit_record import Evaluation
from registry.snapshot import DeploymentSnap, KeySnap, RegistrySnapshot, Strategy
from router.policy import (
    CandidateDecision,
    CedarValue,
    DeploymentFacts,
    PolicyEngine,
    RequestContext,
    candidate_deployments,
)

Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class VisibleModel:
    """One entry of ``GET /v1/models`` (``router.openai.models`` builds it; the table caches
    each caller's list)."""

    name: str
    entry: dict[str, Any]


CACHE_MAX = 65_536
# The enabled deployments the policy allows, and every enabled candidate's decision.
Filtered = tuple[tuple[DeploymentSnap, ...], tuple[CandidateDecision, ...]]
FilterKey = tuple[str, str, str, RequestContext]  # model, tenant, action, context
# tenant, context, and the key's allowed routes and models (None: unrestricted)
ListingKey = tuple[str, RequestContext, frozenset[str] | None, frozenset[str] | None]
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(Generic[K, V]):
    """Values computed once per key for the life of one routing table; a bounded LRU, so that
    no caller can evict everyone else's entries by sending many distinct keys (the context in
    a key comes from vocabularies, and the least recently used entry goes first)."""

    __slots__ = ("_items", "_limit")

    def __init__(self, limit: int = CACHE_MAX) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._limit = limit

    def get(self, key: K, compute: Callable[[], V]) -> V:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
            return value
        value = self._items[key] = compute()
        if len(self._items) > self._limit:
            self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True, slots=True)
class Candidates:
    """What a requested name resolves to: deployments in fallback order and how to order them."""

    deployments: tuple[DeploymentSnap, ...]
    strategy: Strategy = "priority"


@dataclass(frozen=True, slots=True)
class RoutingTable:
    snapshot: RegistrySnapshot
    engine: PolicyEngine
    candidates: Mapping[str, Candidates]  # requested name -> deployments in fallback order
    headers: Mapping[str, Headers]  # deployment id -> provenance headers
    targets: Mapping[str, BackendTarget]  # deployment id -> what the adapter is given
    policy_version: int
    # Everything below depends only on this table's registry and policy versions and its key,
    # so it is computed once per key while the table serves.
    filtered: Memo[FilterKey, Filtered] = field(default_factory=Memo, repr=False, compare=False)
    # ``filtered`` narrowed to the models a key's allow-list names (router.routing).
    narrowed: Memo[tuple[FilterKey, frozenset[str]], Filtered] = field(
        default_factory=Memo, repr=False, compare=False
    )
    # Per (tenant, context, key allow-lists): the model objects of GET /v1/models
    # (router.openai.models).
    listings: Memo[ListingKey, list[VisibleModel]] = field(
        default_factory=Memo, repr=False, compare=False
    )
    # The audit log's evaluation per cached decisions tuple, encoded and digested once. Keyed
    # by identity (the value keeps the tuple alive, so an id is not reused while cached).
    _evaluations: Memo[int, tuple[tuple[CandidateDecision, ...], Evaluation]] = field(
        default_factory=Memo, repr=False, compare=False
    )

    @property
    def registry_version(self) -> int:
        return self.snapshot.version

    def key(self, key_hash: str) -> KeySnap | None:
        return self.snapshot.keys_by_hash.get(key_hash)

    def audit_evaluation(self, decisions: tuple[CandidateDecision, ...]) -> Evaluation:
        """The audit log's record of these decisions (stored once per distinct verdict)."""

        def encode() -> tuple[tuple[CandidateDecision, ...], Evaluation]:
            return decisions, Evaluation.of([_decision_row(d) for d in decisions])

        return self._evaluations.get(id(decisions), encode)[1]


def _decision_row(decision: CandidateDecision) -> dict[str, Any]:
    return {
        "deployment": decision.deployment_id,
        "allowed": decision.allowed,
        "rule_ids": list(decision.rule_ids),
        "reasons": list(decision.reasons),
    }


def build_table(
    snapshot: RegistrySnapshot,
    engine: PolicyEngine,
    *,
    local_urls: Mapping[str, str],
    secret: Callable[[str], str | None],
) -> RoutingTable:
    """``local_urls`` maps a local deployment's upstream model alias to the URL of the server
    this process started for it; ``secret`` resolves a secret reference to its value."""
    deployments = snapshot.deployments.values()
    return RoutingTable(
        snapshot=snapshot,
        engine=engine,
        candidates=candidate_index(snapshot),
        headers={d.id: provenance_headers(engine.entities.deployments[d.id]) for d in deployments},
        targets={d.id: backend_target(d, local_urls, secret) for d in deployments},
        policy_version=engine.policy_version,
    )


def backend_target(
    deployment: DeploymentSnap,
    local_urls: Mapping[str, str],
    secret: Callable[[str], str | None],
) -> BackendTarget:
    if deployment.adapter == "local":
        base_url = local_urls.get(deployment.upstream_model or "", "http://127.0.0.1:9/v1")
    else:
        base_url = (deployment.endpoint_url or "").rstrip("/")
    return BackendTarget(
        deployment_id=deployment.id,
        kind=deployment.adapter,
        base_url=base_url,
        upstream_model=deployment.upstream_model,
        api_key=secret(deployment.secret_ref) if deployment.secret_ref else None,
        timeout_s=deployment.timeout_s,
    )


def candidate_index(snapshot: RegistrySnapshot) -> dict[str, Candidates]:
    """Map every name a client may send as ``model`` (route names and model ids) to its
    deployments in fallback order, with the same resolver ``explain`` uses, so the two can
    never disagree about the candidates of a request."""
    index: dict[str, Candidates] = {}
    for name in (*snapshot.models, *snapshot.routes):
        route = snapshot.routes.get(name)
        strategy: Strategy = route.strategy if route else "priority"
        index[name] = Candidates(candidate_deployments(snapshot, name), strategy)
    return index


def provenance_headers(facts: DeploymentFacts) -> Headers:
    """The ``x-provenance-*`` headers for responses served by a deployment: the facts the
    policy engine saw, so a fact it treats as unknown (no value, or an ``unknown`` claim)
    reads ``unknown`` here too. The developer country names the model's own developer and,
    when the model derives from others, every country along its lineage:
    ``US; lineage=CN,US`` (``unknown`` among them when a lineage member's country is).

    Every value is checked: registry writes only store header-safe text, and a value that
    is not (stored some other way) is replaced rather than sent."""
    attrs = facts.attrs
    location = _known_join(attrs, "location_country", "location_region")
    hardware = _known_join(attrs, "hardware_vendor", "accelerator")
    licenses = ",".join(str(x) for x in _tuple(attrs, "effective_licenses"))
    if attrs.get("license_confidence") == "unknown":
        licenses = ",".join(filter(None, (licenses, "unknown")))
    values = {
        b"x-provenance-model": str(attrs["model"]),
        b"x-provenance-deployment": facts.deployment_id,
        b"x-provenance-developer-country": _developer_country(attrs),
        b"x-provenance-license": licenses,
        b"x-provenance-location": location,
        b"x-provenance-hardware": hardware,
    }
    return tuple((name, header_value(value)) for name, value in values.items())


def _developer_country(attrs: Mapping[str, CedarValue]) -> str:
    own = str(attrs.get("developer_country", "unknown"))
    if not attrs.get("ancestor_ids"):
        return own
    lineage = [str(c) for c in _tuple(attrs, "ancestor_developer_countries")]
    if attrs.get("ancestor_countries_confidence") == "unknown":
        lineage.append("unknown")
    return f"{own}; lineage={','.join(lineage)}"


def _known_join(attrs: Mapping[str, CedarValue], *names: str) -> str:
    """Known facts joined with ``/``; empty (then ``unknown``) when none is known."""
    return "/".join(str(attrs[name]) for name in names if name in attrs)


def _tuple(attrs: Mapping[str, CedarValue], name: str) -> tuple[str, ...]:
    value = attrs.get(name)
    return value if isinstance(value, tuple) else ()


_HEADER_SAFE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


def header_value(value: str) -> bytes:
    """``value`` as a header value: visible ASCII only, ``unknown`` when empty, ``invalid``
    when it holds anything else (a line break would split the response's headers)."""
    if not value:
        return b"unknown"
    return value.encode("ascii") if _HEADER_SAFE.fullmatch(value) else b"invalid"
