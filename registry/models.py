"""Registry tables (SQLModel) and, per entity, the family that reads and writes them.

    XBase    shared fields with their checks (``registry.validation`` types)
    ├── X          the table: + primary key, ``version``, ``created_at``, ``updated_at``
    ├── XCreate    a full, validated entity as written by the admin API or ``apply``
    ├── XUpdate    every writable field optional (generated from XCreate: one list of fields)
    └── XPublic    what reads return; never a secret (API keys show only their prefix)

Field names are those of ``docs/registry-format.md``; nested ``location``/``hardware``/
``data_handling`` of a deployment are flat columns (``registry.validation.flatten_deployment``
accepts both shapes).
Each entity's ``version`` is the registry version of its last write; the service uses it for
compare-and-set. ``SPECS`` describes every kind once so the service and the admin API handle all
of them with one generic mechanism.

Cross-field rules that need the whole entity (EEA flag vs country, claims keys, lineage
duplicates) live on XCreate; the service validates an update by merging it into the stored
entity and validating the result as an XCreate, so both paths enforce the same rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    SecretStr,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from sqlalchemy import JSON, BigInteger, DateTime, Index, Integer, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from registry.keys import MIN_KEY_LENGTH
from registry.limits import Limits
from registry.snapshot import (
    WEIGHTS,
    AdapterKind,
    Confidence,
    Hosting,
    Relation,
    ReviewStatus,
    Scope,
    Strategy,
)
from registry.validation import (
    MODEL_ID_RE,
    SLUG_RE,
    Accelerator,
    Amount,
    Count32,
    Count64,
    Country,
    Day,
    Documented,
    EnvVarName,
    Flag,
    Fraction,
    HardwareVendor,
    Int32,
    LicenseId,
    ModelId,
    NamedList,
    Number,
    Positive32,
    Purpose,
    Region,
    RouteName,
    Slug,
    Topic,
    UniqueItems,
    Url,
    eea_countries,
    flatten_deployment,
)
from registry.vocabulary import accelerator_vendor, named_lists

# Named constraints, so later migrations (batch mode on SQLite) can drop and alter them.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")
# Integer primary keys that autoincrement on both: SQLite only does so for INTEGER PRIMARY KEY.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")

CommercialUse = Literal["yes", "no", "conditional"]
# Writes also take true/false for yes/no (``LicenseCreate._yaml_booleans``): the schema says so.
YamlCommercialUse = Annotated[
    CommercialUse,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "enum": ["yes", "no", "conditional"]},
                {"type": "boolean", "description": "true/false: yes/no (YAML 1.1 booleans)"},
            ]
        }
    ),
]
ChangeOp = Literal["create", "update", "delete"]
PolicyFormat = Literal["yaml", "cedar"]
# Data classifications, least to most strict (the policy core ranks them in the same order).
Classification = Literal["public", "internal", "confidential", "restricted"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _unique(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise ValueError("contains duplicates")
    return values


def _candidate(value: str) -> str:
    if not (SLUG_RE.fullmatch(value) or MODEL_ID_RE.fullmatch(value)):
        raise ValueError(f"{value!r} is neither a deployment id nor a model id")
    return value


CANDIDATE_RE = re.compile(rf"{SLUG_RE.pattern}|{MODEL_ID_RE.pattern}")
UniqueScopes = Annotated[list[Scope], AfterValidator(_unique), UniqueItems()]
UniqueCountries = Annotated[list[Country], AfterValidator(_unique), UniqueItems()]


def _not_a_list_name(tag: str) -> str:
    """A tag naming a sanctions list would be a second spelling of a listing: refused."""
    if named_lists().lookup(tag) is not None:
        raise ValueError(
            f"{tag!r} names a sanctions or export list: write it under listings "
            f"({{list: {named_lists().lookup(tag)}, since: YYYY-MM-DD, source: URL}})"
        )
    return tag


JurisdictionTag = Annotated[str, AfterValidator(_not_a_list_name)]
Candidate = Annotated[
    str,
    AfterValidator(_candidate),
    Documented(
        lambda: {
            "pattern": f"^(?:{CANDIDATE_RE.pattern})$",
            "description": "A deployment id or a model id",
        }
    ),
]
Candidates = Annotated[list[Candidate], AfterValidator(_unique), UniqueItems()]


class ClaimData(BaseModel):
    """Where a fact comes from and how sure we are of it (stored as JSON)."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = None
    retrieved_at: Day | None = None
    confidence: Confidence = "unknown"


def vendor_of_accelerator(vendor: str | None, accelerator: str | None) -> str | None:
    """The vendor, derived from the accelerator when absent: every accelerator has one vendor,
    and naming another is an error, not a guess."""
    if accelerator is None:
        return vendor
    maker = accelerator_vendor(accelerator)
    if vendor is not None and vendor != maker:
        raise ValueError(f"{accelerator} is made by {maker}, not by vendor {vendor}")
    return maker


class TrainingHardware(BaseModel):
    """One part of the hardware a model was trained on: ``{vendor: huawei, share: 0.3}``."""

    model_config = ConfigDict(extra="forbid")

    vendor: HardwareVendor | None = None
    accelerator: Accelerator | None = None
    share: Fraction | None = None  # of the training compute, where the source states it

    @model_validator(mode="after")
    def _vendor(self) -> TrainingHardware:
        self.vendor = vendor_of_accelerator(self.vendor, self.accelerator)
        if self.vendor is None:
            raise ValueError("names neither a vendor nor an accelerator")
        return self


class TrainingCompute(BaseModel):
    """Training compute, where the source states it (either or both)."""

    model_config = ConfigDict(extra="forbid")

    flops: Amount | None = None
    gpu_hours: Amount | None = None


def _observed_on(value: str) -> str:
    if value != WEIGHTS and not SLUG_RE.fullmatch(value):
        raise ValueError(f"{value!r} is neither {WEIGHTS!r} nor a deployment id")
    return value


ObservedOn = Annotated[
    str,
    AfterValidator(_observed_on),
    Documented(
        lambda: {
            "pattern": f"^(?:{WEIGHTS}|{SLUG_RE.pattern})$",
            "description": f"{WEIGHTS!r} or the id of the deployment observed",
        }
    ),
]


class BehavioralRestriction(BaseModel):
    """A topic the model was observed to decline or distort, with the evidence. Where it was
    observed matters: a first-party API may filter at application level what the open weights
    answer, so ``observed_on`` is ``weights`` or the deployment id (unset: not stated)."""

    model_config = ConfigDict(extra="forbid")

    topic: Topic
    evidence_url: Url | None = None
    observed_at: Day | None = None
    observed_on: ObservedOn | None = None


class Listing(BaseModel):
    """An organization's listing on a named sanctions or export list."""

    model_config = ConfigDict(extra="forbid")

    list: NamedList
    since: Day | None = None
    source: str | None = None


class LineageEdge(BaseModel):
    """One parent of a model: ``{relation: distilled_from, model: meta-llama/Llama-3.1-8B}``."""

    model_config = ConfigDict(extra="forbid")

    relation: Relation
    model: ModelId


class Tracked(SQLModel):
    """Bookkeeping every entity row carries."""

    version: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ClaimedBase(SQLModel):
    """Entities that carry provenance facts: a default claim plus per-field overrides."""

    claim: ClaimData = Field(default_factory=ClaimData, sa_type=JSONType)
    claims: dict[str, ClaimData] = Field(default_factory=dict, sa_type=JSONType)


class Strict(SQLModel):
    """Input models: unknown fields are errors (a typo must not be silently dropped)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)  # type: ignore[assignment]


class ClaimsMatchFields(Strict):
    """``claims`` may only override fields the entity has."""

    @field_validator("claims", check_fields=False)
    @classmethod
    def _claims_name_fields(cls, claims: dict[str, ClaimData]) -> dict[str, ClaimData]:
        unknown = sorted(set(claims) - set(cls.model_fields))
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: not a field of this entity")
        return claims


# --- organizations ---------------------------------------------------------------------------


class OrganizationBase(ClaimedBase):
    name: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list, sa_type=JSONType)
    hq_country: Country | None = None
    incorporation_country: Country | None = None
    parent: Slug | None = Field(default=None, foreign_key="organizations.id", index=True)
    jurisdiction_tags: list[JurisdictionTag] = Field(default_factory=list, sa_type=JSONType)
    state_affiliated: Flag | None = None
    listings: list[Listing] = Field(default_factory=list, sa_type=JSONType)


class Organization(OrganizationBase, Tracked, table=True):
    __tablename__ = "organizations"

    id: str = Field(primary_key=True)


class OrganizationCreate(OrganizationBase, ClaimsMatchFields):
    id: Slug

    @field_validator("listings")
    @classmethod
    def _one_listing_per_list(cls, listings: list[Listing]) -> list[Listing]:
        if len({listing.list for listing in listings}) != len(listings):
            raise ValueError("names the same list twice")
        return listings


class OrganizationPublic(OrganizationBase, Tracked):
    id: str


# --- licenses --------------------------------------------------------------------------------


class LicenseBase(ClaimedBase):
    name: str = Field(min_length=1)
    url: Url | None = None
    osi_approved: Flag | None = None
    open_weights: Flag | None = None
    commercial_use: YamlCommercialUse | None = Field(default=None, sa_type=String)
    user_threshold: Count64 | None = Field(default=None, sa_type=BigInteger)
    use_restrictions: list[str] = Field(default_factory=list, sa_type=JSONType)
    geographic_restrictions: list[str] = Field(default_factory=list, sa_type=JSONType)
    attribution_required: Flag | None = None
    derivatives_inherit: Flag = False


class License(LicenseBase, Tracked, table=True):
    __tablename__ = "licenses"

    id: str = Field(primary_key=True)


class LicenseCreate(LicenseBase, ClaimsMatchFields):
    id: LicenseId

    @field_validator("commercial_use", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: object) -> object:
        """YAML 1.1 reads a bare ``yes``/``no`` as a boolean; map it back to the enum."""
        if isinstance(value, bool):
            return "yes" if value else "no"
        return value


class LicensePublic(LicenseBase, Tracked):
    id: str


# --- models ----------------------------------------------------------------------------------


class ModelBase(ClaimedBase):
    name: str = ""
    revision: str | None = None
    developer: Slug | None = Field(default=None, foreign_key="organizations.id", index=True)
    publisher: Slug | None = Field(default=None, foreign_key="organizations.id", index=True)
    family: str | None = None
    parameters_total: Count64 | None = Field(default=None, sa_type=BigInteger)
    parameters_active: Count64 | None = Field(default=None, sa_type=BigInteger)
    context_length: Positive32 | None = None
    modalities: list[str] = Field(default_factory=lambda: ["text"], sa_type=JSONType)
    release_date: Day | None = None
    license: LicenseId | None = Field(default=None, foreign_key="licenses.id", index=True)
    weights_digest: str | None = None
    review_status: ReviewStatus = Field(default="under_review", sa_type=String)
    training_hardware: list[TrainingHardware] = Field(default_factory=list, sa_type=JSONType)
    training_data_countries: UniqueCountries = Field(default_factory=list, sa_type=JSONType)
    training_data_origin: str | None = None  # a note for readers; policies use the countries
    training_compute: TrainingCompute | None = Field(default=None, sa_type=JSONType)
    behavioral_restrictions: list[BehavioralRestriction] = Field(
        default_factory=list, sa_type=JSONType
    )


class Model(ModelBase, Tracked, table=True):
    __tablename__ = "models"

    id: str = Field(primary_key=True)


class ModelCreate(ModelBase, ClaimsMatchFields):
    id: ModelId
    lineage: list[LineageEdge] = []

    @field_validator("training_hardware")
    @classmethod
    def _shares_add_up(cls, parts: list[TrainingHardware]) -> list[TrainingHardware]:
        if sum(part.share or 0 for part in parts) > 1 + 1e-9:
            raise ValueError("shares add up to more than 1")
        return parts

    @field_validator("lineage")
    @classmethod
    def _no_duplicate_edges(cls, edges: list[LineageEdge]) -> list[LineageEdge]:
        if len({(e.relation, e.model) for e in edges}) != len(edges):
            raise ValueError("lists the same parent relation twice")
        return edges


class ModelPublic(ModelBase, Tracked):
    id: str
    lineage: list[LineageEdge] = []


class ModelRelation(SQLModel, table=True):
    """A lineage edge, child -> parent; ``position`` keeps the order the model lists them."""

    __tablename__ = "model_relations"

    child: str = Field(foreign_key="models.id", primary_key=True, ondelete="CASCADE")
    position: int = Field(primary_key=True)
    parent: str = Field(foreign_key="models.id", index=True)
    relation: Relation = Field(sa_type=String)


# --- deployments -----------------------------------------------------------------------------


class DeploymentBase(ClaimedBase):
    model: ModelId = Field(foreign_key="models.id", index=True)
    adapter: AdapterKind = Field(default="openai", sa_type=String)
    endpoint_url: Url | None = None
    upstream_model: str | None = None
    secret_ref: EnvVarName | None = None  # NAME of the env var holding the key, never the key
    operator: Slug | None = Field(default=None, foreign_key="organizations.id", index=True)
    hosting: Hosting | None = Field(default=None, sa_type=String)
    location_country: Country | None = None
    location_region: Region | None = None
    location_eea: Flag | None = None
    hardware_vendor: HardwareVendor | None = None
    accelerator: Accelerator | None = None
    accelerator_count: Count32 | None = None
    retention_days: Count32 | None = None
    zero_data_retention: Flag | None = None
    trains_on_inputs: Flag | None = None
    priority: Int32 = 100  # lower is tried first
    weight: Count32 = 1
    timeout_s: Number = Field(default=60.0, gt=0)
    enabled: Flag = True
    review_status: ReviewStatus = Field(default="approved", sa_type=String)
    # Prices in US dollars per million tokens, for cost budgets (docs/keys.md, "Budgets").
    input_cost_per_mtok_usd: Amount | None = None
    output_cost_per_mtok_usd: Amount | None = None


class Deployment(DeploymentBase, Tracked, table=True):
    __tablename__ = "deployments"

    id: str = Field(primary_key=True)


class DeploymentCreate(DeploymentBase, ClaimsMatchFields):
    id: Slug

    @field_validator("location_eea")
    @classmethod
    def _eea_follows_country(cls, eea: bool | None, info: ValidationInfo) -> bool | None:
        """Derived from the country when absent; a contradiction is an error, not a guess."""
        country = info.data.get("location_country")
        if country is None:
            return eea
        in_eea = country in eea_countries()
        if eea is not None and eea != in_eea:
            raise ValueError(f"{eea} contradicts location_country {country} (EEA: {in_eea})")
        return in_eea

    @field_validator("accelerator")
    @classmethod
    def _vendor_follows_accelerator(
        cls, accelerator: str | None, info: ValidationInfo
    ) -> str | None:
        """Every accelerator has one vendor; naming another is an error, not a guess."""
        vendor_of_accelerator(info.data.get("hardware_vendor"), accelerator)
        return accelerator

    @model_validator(mode="after")
    def _vendor_of_accelerator(self) -> DeploymentCreate:
        """The vendor is derived from the accelerator when absent."""
        self.hardware_vendor = vendor_of_accelerator(self.hardware_vendor, self.accelerator)
        return self


class DeploymentPublic(DeploymentBase, Tracked):
    id: str


# --- routes ----------------------------------------------------------------------------------


class RouteBase(SQLModel):
    strategy: Strategy = Field(default="priority", sa_type=String)
    candidates: Candidates = Field(default_factory=list, sa_type=JSONType)


class Route(RouteBase, Tracked, table=True):
    __tablename__ = "routes"

    name: str = Field(primary_key=True)


class RouteCreate(RouteBase, Strict):
    name: RouteName


class RoutePublic(RouteBase, Tracked):
    name: str


# --- tenants and API keys --------------------------------------------------------------------


class TenantBase(SQLModel):
    name: str = ""
    region: Region | None = None
    default_classification: Classification = Field(default="internal", sa_type=String)
    attributes: dict[str, str] = Field(default_factory=dict, sa_type=JSONType)
    # The purposes this tenant's requests may declare (``X-Purpose``); any other is refused.
    purposes: list[Purpose] = Field(default_factory=list, sa_type=JSONType)
    # Rate limits and a budget for all of the tenant's keys together (docs/keys.md).
    limits: Limits | None = Field(default=None, sa_type=JSONType)


class Tenant(TenantBase, Tracked, table=True):
    __tablename__ = "tenants"

    id: str = Field(primary_key=True)


class TenantCreate(TenantBase, Strict):
    id: Slug


class TenantPublic(TenantBase, Tracked):
    id: str


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a time without a zone is UTC (SQLite stores timestamps without)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


UtcTime = Annotated[datetime, AfterValidator(as_utc)]
KeyNote = Annotated[str, StringConstraints(min_length=1, max_length=500)]
UniqueRouteNames = Annotated[list[RouteName], AfterValidator(_unique), UniqueItems()]
UniqueModelIds = Annotated[list[ModelId], AfterValidator(_unique), UniqueItems()]


class ApiKeyBase(SQLModel):
    tenant: Slug = Field(foreign_key="tenants.id", index=True)
    scopes: UniqueScopes = Field(min_length=1, sa_type=JSONType)
    enabled: Flag = True
    owner: KeyNote | None = None
    description: KeyNote | None = None
    # None: never expires. Checked against the clock at each request (docs/keys.md).
    expires_at: UtcTime | None = Field(default=None, sa_type=DateTime(timezone=True))
    # Allow-lists: None = no restriction beyond the tenant's policy (they only ever narrow it).
    allowed_routes: UniqueRouteNames | None = Field(default=None, sa_type=JSONType)
    allowed_models: UniqueModelIds | None = Field(default=None, sa_type=JSONType)
    # Rate limits and a budget of this key, on top of its tenant's (docs/keys.md).
    limits: Limits | None = Field(default=None, sa_type=JSONType)


class ApiKey(ApiKeyBase, Tracked, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True)
    prefix: str
    key_hash: str = Field(unique=True)  # sha256 hex of the raw key; never leaves the registry
    # Written in batches by the gateway, never on the request path (coarse: docs/keys.md).
    last_used_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    # Rotation: the replaced key's hash stays valid until ``previous_valid_until``.
    previous_key_hash: str | None = Field(default=None, unique=True)
    previous_prefix: str | None = None
    previous_valid_until: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class ApiKeyCreate(ApiKeyBase, Strict):
    id: Slug
    # The raw key exists only on its way in: hashed by the service, never stored or echoed.
    raw_key: SecretStr | None = None

    @field_validator("raw_key")
    @classmethod
    def _long_enough(cls, raw_key: SecretStr | None) -> SecretStr | None:
        """Keys are stored with a fast hash (see ``registry.keys``): short keys are guessable."""
        if raw_key is not None and len(raw_key.get_secret_value()) < MIN_KEY_LENGTH:
            raise ValueError(f"must be at least {MIN_KEY_LENGTH} characters")
        return raw_key


class ApiKeyPublic(ApiKeyBase, Tracked):
    id: str
    prefix: str
    last_used_at: datetime | None = None
    previous_prefix: str | None = None
    previous_valid_until: datetime | None = None


# --- policies, audit, state ------------------------------------------------------------------


class Policy(SQLModel, table=True):
    """One saved policy text. Rows are immutable; only ``active`` moves (one row at a time)."""

    __tablename__ = "policies"
    # At most one active row, enforced by the database itself (a partial unique index).
    __table_args__ = (
        Index(
            "ix_policies_one_active",
            "active",
            unique=True,
            sqlite_where=text("active"),
            postgresql_where=text("active"),
        ),
    )

    version: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    name: str
    format: PolicyFormat = Field(sa_type=String)
    source: str = Field(sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow)
    created_by: str
    active: bool = False


class RegistryChange(SQLModel, table=True):
    """Audit of one registry write: who, what, before/after (public shapes: no secrets)."""

    __tablename__ = "registry_changes"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntId)
    version: int = Field(index=True)
    at: datetime = Field(default_factory=utcnow)
    actor: str = Field(index=True)
    kind: str = Field(index=True)
    entity_id: str = Field(index=True)
    op: ChangeOp = Field(sa_type=String)
    before: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    after: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    note: str | None = Field(default=None, sa_type=Text)  # why, in the writer's words (0007)


class RoutingDecision(SQLModel, table=True):
    """Audit of one routed request: never prompt or completion content.

    The policy's verdict on the candidates is stored once per distinct verdict in
    ``DecisionEvaluation`` and referred to by ``evaluation_id``; ``candidates`` holds it inline
    only for rows written before migration 0002 (it is ``[]`` on newer rows)."""

    __tablename__ = "routing_decisions"
    # The exposure report's scan: time window first, then everything it groups and sums, so
    # both databases answer from the index alone (migration 0006). Any other time-window query
    # uses it too: created_at has no index of its own (dropped in 0007).
    __table_args__ = (
        Index(
            "ix_routing_decisions_exposure",
            "created_at",
            "registry_version",
            "chosen_deployment",
            "tenant_id",
            "route",
            "total_tokens",
        ),
        # A key's spend over a budget period (registry.spend; migration 0008).
        Index("ix_routing_decisions_key_spend", "key_id", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntId)
    request_id: str = Field(index=True)
    created_at: datetime = Field(default_factory=utcnow)
    tenant_id: str | None = Field(default=None, index=True)
    key_id: str | None = None
    requested_model: str | None = None
    route: str | None = None
    action: str = "infer"
    context: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    candidates: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONType)
    evaluation_id: str | None = None
    chosen_deployment: str | None = None
    attempts: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONType)
    policy_version: int | None = None
    registry_version: int | None = None
    status: str = Field(index=True)
    http_status: int | None = None
    error_code: str | None = None
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    # Set when a text had to be escaped or cut to be storable (NUL, invalid UTF-8, too long).
    sanitized: bool = Field(default=False, sa_column_kwargs={"server_default": text("false")})
    # The hash chain (registry.audit_record); NULL on rows written before migration 0003.
    chain_id: str | None = Field(default=None, index=True)
    seq: int | None = Field(default=None, sa_type=BigInteger)
    prev_hash: str | None = None
    row_hash: str | None = None


class AuditCheckpoint(SQLModel, table=True):
    """A signed chain head: the Ed25519 signature (hex) of ``registry.audit_record.
    checkpoint_message`` over (chain, seq, head hash, time, kind). ``kind``: ``open`` (seq 0,
    a chain's start), ``periodic``, ``close`` (graceful stop), ``replay`` (a restart stored
    what a dead process had journaled), ``pruned`` (rows up to ``seq`` were deleted; the chain
    resumes after ``head_hash``)."""

    __tablename__ = "audit_checkpoints"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntId)
    chain_id: str = Field(index=True)
    seq: int = Field(sa_type=BigInteger)
    head_hash: str
    created_at: datetime
    kind: str
    key_id: str | None = None
    signature: str | None = None


class DecisionEvaluation(SQLModel, table=True):
    """One verdict of the policy on a request's candidates (each deployment, allowed or not,
    the deciding rules and reasons), stored once and shared by every routing decision that got
    the same verdict: requests with the same route, tenant, context, policy and registry
    version get the same list, which would otherwise be most of each audit row (~2.8 KB on a
    10-candidate route). ``id`` is the hex BLAKE2b-128 digest of the encoded list."""

    __tablename__ = "decision_evaluations"

    id: str = Field(primary_key=True)
    candidates: list[dict[str, Any]] = Field(sa_type=JSONType)
    created_at: datetime = Field(default_factory=utcnow)


class ExposureFact(SQLModel, table=True):
    """One fact the exposure report groups by, as it stood at one registry version, for one
    deployment (``dimension`` e.g. ``developer_country``, ``value`` canonical or ``unknown``).

    Written once per registry version when a gateway loads it (never on the request path), so
    the report attributes each audit row to the facts it was routed on: a fact edited later
    does not rewrite past traffic. A set fact (countries along the lineage, effective licenses,
    training hardware vendors) has one row per member."""

    __tablename__ = "exposure_facts"

    registry_version: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    deployment_id: str = Field(primary_key=True)
    dimension: str = Field(primary_key=True)
    value: str = Field(primary_key=True)


class WeightsCheck(SQLModel, table=True):
    """A remembered result of an expensive check of a weights file (``registry.weights``): its
    SHA-256, or the identity that signed it. Valid while the file keeps its ``size`` and
    ``mtime_ns``; ``subject`` names the check and what it depended on (the path, and for a
    signature the digests of the bundle and the key)."""

    __tablename__ = "weights_checks"

    subject: str = Field(primary_key=True)
    size: int = Field(sa_type=BigInteger)
    mtime_ns: int = Field(sa_type=BigInteger)
    result: str = Field(sa_type=Text)
    checked_at: datetime = Field(default_factory=utcnow)


class RegistryState(SQLModel, table=True):
    """The single row holding the global registry version; writers lock it to serialize."""

    __tablename__ = "registry_state"

    id: int = Field(default=1, primary_key=True, sa_column_kwargs={"autoincrement": False})
    version: int = 0


# --- the generic description of every kind ---------------------------------------------------


def partial_model(model: type[BaseModel], *, name: str, exclude: set[str]) -> type[BaseModel]:
    """``model`` with every field optional and no cross-field validators: a PATCH body.

    Generated so the list of fields and their per-field checks exist once (on XCreate); the
    cross-field rules run when the service validates the merged entity as an XCreate. A field
    may be left out; it may be ``null`` only where the entity allows null (its schema says
    so), and unknown fields are refused (``additionalProperties: false``)."""
    fields: dict[str, Any] = {}
    for field_name, info in model.model_fields.items():
        if field_name in exclude:
            continue
        annotation: Any = info.annotation
        checks = [m for m in info.metadata if not type(m).__module__.startswith("sqlmodel")]
        if checks:
            annotation = Annotated[(annotation, *checks)]
        fields[field_name] = (annotation, FieldInfo(default=None))
    config = ConfigDict(extra="forbid")
    return create_model(name, __config__=config, __module__=__name__, **fields)


OrganizationUpdate = partial_model(OrganizationCreate, name="OrganizationUpdate", exclude={"id"})
LicenseUpdate = partial_model(LicenseCreate, name="LicenseUpdate", exclude={"id"})
ModelUpdate = partial_model(ModelCreate, name="ModelUpdate", exclude={"id"})
DeploymentUpdate = partial_model(DeploymentCreate, name="DeploymentUpdate", exclude={"id"})
RouteUpdate = partial_model(RouteCreate, name="RouteUpdate", exclude={"name"})
TenantUpdate = partial_model(TenantCreate, name="TenantUpdate", exclude={"id"})
ApiKeyUpdate = partial_model(ApiKeyCreate, name="ApiKeyUpdate", exclude={"id"})


@dataclass(frozen=True, slots=True)
class Reference:
    """A field naming other entities; writes naming a missing one are rejected, and an entity
    still named by one cannot be deleted."""

    field: str
    targets: tuple[str, ...]  # kinds whose ids the field may name
    item_key: str | None = None  # the field is a list of mappings: the id is under this key


@dataclass(frozen=True, slots=True)
class KindSpec:
    kind: str
    table: type[SQLModel]
    create: type[SQLModel]
    update: type[BaseModel]
    public: type[SQLModel]
    key: str = "id"
    references: tuple[Reference, ...] = ()
    acyclic: str | None = None  # a reference field whose graph must stay free of cycles
    prepare: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None  # input reshaping


_ORG = ("organization",)
SPECS: Mapping[str, KindSpec] = {
    spec.kind: spec
    for spec in (
        KindSpec(
            kind="organization",
            table=Organization,
            create=OrganizationCreate,
            update=OrganizationUpdate,
            public=OrganizationPublic,
            references=(Reference("parent", _ORG),),
            acyclic="parent",
        ),
        KindSpec(
            kind="license",
            table=License,
            create=LicenseCreate,
            update=LicenseUpdate,
            public=LicensePublic,
        ),
        KindSpec(
            kind="model",
            table=Model,
            create=ModelCreate,
            update=ModelUpdate,
            public=ModelPublic,
            references=(
                Reference("developer", _ORG),
                Reference("publisher", _ORG),
                Reference("license", ("license",)),
                Reference("lineage", ("model",), item_key="model"),
            ),
            acyclic="lineage",
        ),
        KindSpec(
            kind="deployment",
            table=Deployment,
            create=DeploymentCreate,
            update=DeploymentUpdate,
            public=DeploymentPublic,
            references=(Reference("model", ("model",)), Reference("operator", _ORG)),
            prepare=flatten_deployment,
        ),
        KindSpec(
            kind="route",
            table=Route,
            create=RouteCreate,
            update=RouteUpdate,
            public=RoutePublic,
            key="name",
            references=(Reference("candidates", ("deployment", "model")),),
        ),
        KindSpec(
            kind="tenant",
            table=Tenant,
            create=TenantCreate,
            update=TenantUpdate,
            public=TenantPublic,
        ),
        KindSpec(
            kind="api_key",
            table=ApiKey,
            create=ApiKeyCreate,
            update=ApiKeyUpdate,
            public=ApiKeyPublic,
            references=(
                Reference("tenant", ("tenant",)),
                Reference("allowed_routes", ("route",)),
                Reference("allowed_models", ("model",)),
            ),
        ),
    )
}
