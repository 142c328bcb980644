"""The routing table: everything the hot path needs, computed once per registry snapshot.

Built off the hot path (at start and on each registry or policy change) and swapped whole, so a
request sees one consistent version of registry, policy and precomputed headers.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from adapters.base import BackendTarget
from registry.audit_record import Evaluation
from registry.lineage import effective_provenance
from registry.snapshot import DeploymentSnap, KeySnap, RegistrySnapshot, Strategy
from router.policy import (
    CandidateDecision,
    PolicyEngine,
    RequestContext,
    candidate_deployments,
)

if TYPE_CHECKING:
    from router.openai.models import VisibleModel

Headers = tuple[tuple[bytes, bytes], ...]
CACHE_MAX = 65_536
# The enabled deployments the policy allows, and every enabled candidate's decision.
Filtered = tuple[tuple[DeploymentSnap, ...], tuple[CandidateDecision, ...]]
FilterKey = tuple[str, str, str, RequestContext]  # model, tenant, action, context
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(Generic[K, V]):
    """Values computed once per key for the life of one routing table. Bounded: keys may carry
    free text (a request's purpose), so when full it forgets everything and starts again."""

    __slots__ = ("_items", "_limit")

    def __init__(self, limit: int = CACHE_MAX) -> None:
        self._items: dict[K, V] = {}
        self._limit = limit

    def get(self, key: K, compute: Callable[[], V]) -> V:
        value = self._items.get(key)
        if value is None:
            if len(self._items) >= self._limit:
                self._items.clear()
            value = self._items[key] = compute()
        return value


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
    # Per (tenant, context): the model objects of GET /v1/models (router.openai.models).
    listings: Memo[tuple[str, RequestContext], list[VisibleModel]] = field(
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
        headers={d.id: provenance_headers(snapshot, d) for d in deployments},
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


def provenance_headers(snapshot: RegistrySnapshot, deployment: DeploymentSnap) -> Headers:
    """The ``x-provenance-*`` headers for responses served by ``deployment``."""
    model = snapshot.models.get(deployment.model_id)
    developer = snapshot.orgs.get(model.developer_id or "") if model else None
    provenance = effective_provenance(
        snapshot.models, snapshot.orgs, snapshot.licenses, deployment.model_id
    )
    location = "/".join(x for x in (deployment.location_country, deployment.location_region) if x)
    hardware = "/".join(x for x in (deployment.hardware_vendor, deployment.accelerator) if x)
    values = {
        b"x-provenance-model": deployment.model_id,
        b"x-provenance-deployment": deployment.id,
        b"x-provenance-developer-country": (developer.hq_country if developer else None),
        b"x-provenance-license": ",".join(sorted(provenance.licenses)),
        b"x-provenance-location": location,
        b"x-provenance-hardware": hardware,
    }
    return tuple((name, _header_value(value)) for name, value in values.items())


def _header_value(value: str | None) -> bytes:
    return (value or "unknown").encode("latin-1", "replace")
