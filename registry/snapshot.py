"""Immutable, in-memory view of the registry at one version.

The router and the policy core read only this: never a database session per request. A snapshot
is built by ``registry.service.load_snapshot`` and replaced whole when the registry version moves.

Every provenance fact may carry a claim; ``confidence(field)`` gives the confidence of one fact.
A fact whose value is ``None`` is ``unknown`` whatever its claim says (fail closed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

Confidence = Literal["verified", "reported", "unknown"]
ReviewStatus = Literal["approved", "under_review", "blocked"]
Hosting = Literal["on_prem", "private_cloud", "cloud_tenant", "third_party_api"]
AdapterKind = Literal["openai", "litellm", "local"]
Strategy = Literal["priority", "weighted", "least-latency"]
Scope = Literal["inference", "admin", "compliance", "compliance_org"]
Relation = Literal[
    "finetune_of",
    "adapter_of",
    "merge_of",
    "quantized_from",
    "distilled_from",
    "continued_pretrain_of",
]

WEIGHTS = "weights"  # ``observed_on`` of evidence gathered on the open weights themselves

CONFIDENCE_ORDER: Mapping[str, int] = {"unknown": 0, "reported": 1, "verified": 2}


@dataclass(frozen=True, slots=True)
class Claim:
    """Where a fact comes from and how sure we are of it."""

    source: str | None = None
    retrieved_at: date | None = None
    confidence: Confidence = "unknown"


# The registry field each snapshot attribute is read from, where the two names differ. Per-field
# claims are written, validated (``ClaimsMatchFields``) and stored under registry field names
# (``claims: {developer: ...}``), while the snapshot names a reference by what it holds
# (``developer_id``); ``Claimed.confidence`` takes either and looks the claim up by field.
FIELD_OF_ATTRIBUTE: Mapping[str, str] = {
    "developer_id": "developer",
    "publisher_id": "publisher",
    "license_id": "license",
    "parent_id": "parent",
    "model_id": "model",
    "operator_id": "operator",
    "training_flops": "training_compute",
    "training_gpu_hours": "training_compute",
    "parents": "lineage",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Claimed:
    """Mixin data: a default claim for the entity plus per-field overrides (keyed by registry
    field name)."""

    claim: Claim = Claim()
    claims: Mapping[str, Claim] = field(default_factory=dict)

    def claim_of(self, fact: str) -> Claim:
        """The claim behind one fact (a snapshot attribute or a registry field name): the
        per-field override if there is one, else the entity's claim."""
        return self.claims.get(FIELD_OF_ATTRIBUTE.get(fact, fact), self.claim)

    def confidence(self, fact: str) -> Confidence:
        """Confidence of one fact (a snapshot attribute); ``unknown`` when it has no value."""
        if getattr(self, fact, None) is None:
            return "unknown"
        return self.claim_of(fact).confidence


@dataclass(frozen=True, slots=True)
class ListingSnap:
    """A listing on a named sanctions or export list (``registry/data/listings.yaml``)."""

    list: str
    since: date | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class TrainingHardwareSnap:
    vendor: str
    accelerator: str | None = None
    share: float | None = None


@dataclass(frozen=True, slots=True)
class RestrictionSnap:
    """A behavioural restriction: ``observed_on`` is ``weights``, a deployment id, or None."""

    topic: str
    evidence_url: str | None = None
    observed_at: date | None = None
    observed_on: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OrgSnap(Claimed):
    id: str
    name: str
    hq_country: str | None = None
    incorporation_country: str | None = None
    parent_id: str | None = None
    jurisdiction_tags: frozenset[str] = frozenset()
    state_affiliated: bool | None = None
    listings: tuple[ListingSnap, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class LicenseSnap(Claimed):
    id: str  # SPDX id or LicenseRef-*
    name: str
    url: str | None = None
    osi_approved: bool | None = None
    open_weights: bool | None = None
    commercial_use: Literal["yes", "no", "conditional"] | None = None
    user_threshold: int | None = None
    use_restrictions: frozenset[str] = frozenset()
    geographic_restrictions: frozenset[str] = frozenset()
    attribution_required: bool | None = None
    derivatives_inherit: bool = False


@dataclass(frozen=True, slots=True)
class Lineage:
    relation: Relation
    parent_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSnap(Claimed):
    id: str  # org/name
    name: str = ""
    developer_id: str | None = None
    publisher_id: str | None = None
    family: str | None = None
    license_id: str | None = None
    review_status: ReviewStatus = "under_review"
    training_hardware: tuple[TrainingHardwareSnap, ...] | None = None  # None: not stated
    training_data_countries: frozenset[str] | None = None  # None: not stated
    training_data_origin: str | None = None
    training_flops: float | None = None
    training_gpu_hours: float | None = None
    behavioral_restrictions: tuple[RestrictionSnap, ...] = ()
    parents: tuple[Lineage, ...] = ()
    # Descriptive facts no rule tests (exports, weights verification):
    weights_digest: str | None = None  # ``sha256:<hex>`` as published
    revision: str | None = None
    parameters_total: int | None = None
    parameters_active: int | None = None
    context_length: int | None = None
    modalities: tuple[str, ...] = ()
    release_date: date | None = None

    @property
    def training_hardware_vendors(self) -> frozenset[str]:
        """The vendors of the model's own training hardware (empty when not stated)."""
        return frozenset(part.vendor for part in self.training_hardware or ())


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentSnap(Claimed):
    id: str
    model_id: str
    adapter: AdapterKind = "openai"
    endpoint_url: str | None = None
    upstream_model: str | None = None
    secret_ref: str | None = None  # env var name holding the key; never the key itself
    operator_id: str | None = None
    hosting: Hosting | None = None
    location_country: str | None = None
    location_region: str | None = None
    location_eea: bool | None = None
    hardware_vendor: str | None = None
    accelerator: str | None = None
    accelerator_count: int | None = None
    retention_days: int | None = None
    zero_data_retention: bool | None = None
    trains_on_inputs: bool | None = None
    priority: int = 100
    weight: int = 1
    timeout_s: float = 60.0
    enabled: bool = True
    review_status: ReviewStatus = "approved"
    input_cost_per_mtok_usd: float | None = None  # price per million prompt tokens
    output_cost_per_mtok_usd: float | None = None  # price per million completion tokens


@dataclass(frozen=True, slots=True)
class RouteSnap:
    name: str
    strategy: Strategy = "priority"
    candidates: tuple[str, ...] = ()  # model ids or deployment ids, in fallback order


@dataclass(frozen=True, slots=True)
class BudgetSnap:
    """Spend allowed per calendar period (UTC); None: no threshold of that kind."""

    period: Literal["day", "month"] = "month"
    soft_tokens: int | None = None
    hard_tokens: int | None = None
    soft_cost_usd: float | None = None
    hard_cost_usd: float | None = None


@dataclass(frozen=True, slots=True)
class LimitsSnap:
    """A tenant's or a key's limits (``registry.limits``); None: no limit of that kind."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    budget: BudgetSnap | None = None


@dataclass(frozen=True, slots=True)
class TenantSnap:
    id: str
    name: str = ""
    region: str | None = None
    default_classification: str = "internal"
    attributes: Mapping[str, str] = field(default_factory=dict)
    purposes: frozenset[str] = frozenset()  # what X-Purpose may declare; empty: nothing
    limits: LimitsSnap | None = None


@dataclass(frozen=True, slots=True)
class KeySnap:
    """One hash of an API key. A rotated key has two: its current one and, during the grace
    period, the replaced one (``rotated``), both with the key's id, tenant and allow-lists."""

    id: str
    tenant_id: str
    scopes: frozenset[Scope]
    enabled: bool = True
    # The end of this hash's validity as a UNIX time, None for never: the key's expiry or, for
    # a replaced hash, the end of its grace period, whichever comes first. The request path
    # compares it with the clock at each request: no snapshot reload happens at that moment.
    valid_until: float | None = None
    rotated: bool = False  # the replaced hash of a rotation, valid during its grace period
    # What the key may name as ``model`` (None: no restriction beyond the tenant's policy).
    allowed_routes: frozenset[str] | None = None
    allowed_models: frozenset[str] | None = None
    limits: LimitsSnap | None = None  # rate limits and a budget (docs/keys.md)

    @property
    def restricted(self) -> bool:
        return self.allowed_routes is not None or self.allowed_models is not None


@dataclass(frozen=True, slots=True)
class PolicySnap:
    version: int
    name: str
    format: Literal["yaml", "cedar"]
    source: str


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    version: int
    orgs: Mapping[str, OrgSnap]
    licenses: Mapping[str, LicenseSnap]
    models: Mapping[str, ModelSnap]
    deployments: Mapping[str, DeploymentSnap]
    routes: Mapping[str, RouteSnap]
    tenants: Mapping[str, TenantSnap]
    keys_by_hash: Mapping[str, KeySnap]
    policy: PolicySnap | None = None

    def deployments_of(self, model_id: str) -> tuple[DeploymentSnap, ...]:
        return tuple(d for d in self.deployments.values() if d.model_id == model_id)

    def control_chain(self, org_id: str | None) -> tuple[str, ...]:
        """``org_id`` and the organizations that control it, parent by parent up to the root.

        Writes refuse a cycle of parents; should one be in the data anyway, the chain stops
        before repeating itself. A parent missing from the registry ends the chain."""
        chain: list[str] = []
        while org_id is not None and org_id in self.orgs and org_id not in chain:
            chain.append(org_id)
            org_id = self.orgs[org_id].parent_id
        return tuple(chain)

    def same_group(self, org_a: str | None, org_b: str | None) -> bool | None:
        """Whether two organizations share a control chain (one controls the other, or a common
        parent controls both); None when either is not in the registry."""
        chain_a, chain_b = self.control_chain(org_a), self.control_chain(org_b)
        if not chain_a or not chain_b:
            return None
        return bool(set(chain_a) & set(chain_b))
