"""Registry reads: public dicts, the change log, the routing decision log, the snapshot.

Import these through :mod:`registry.service` (the one public API of the registry); they live
here to keep the write path readable. Functions take a SQLAlchemy ``Session`` and talk to its
``Connection`` with Core statements, which behaves the same whether the caller holds a plain
SQLAlchemy or a SQLModel session.

Public dicts use the flat field names of ``docs/registry-format.md``; JSON columns come back as
lists/maps, dates and timestamps as ISO strings. They never carry a secret (no key hash).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any, cast

from pydantic_core import to_jsonable_python
from sqlalchemy import Connection, RowMapping, Table, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement, and_, or_

from registry.limits import limits_snap
from registry.models import (
    SPECS,
    DecisionEvaluation,
    KindSpec,
    ModelRelation,
    Policy,
    RegistryChange,
    RegistryState,
    RoutingDecision,
)
from registry.snapshot import (
    Claim,
    DeploymentSnap,
    KeySnap,
    LicenseSnap,
    Lineage,
    ListingSnap,
    ModelSnap,
    OrgSnap,
    PolicySnap,
    RegistrySnapshot,
    RestrictionSnap,
    RouteSnap,
    TenantSnap,
    TrainingHardwareSnap,
)
from registry.validation import MODEL_ID_RE, SLUG_RE, check_purpose, check_region
from registry.vocabulary import (
    normalise_accelerator,
    normalise_country,
    normalise_hardware_vendor,
    normalise_named_list,
    normalise_topic,
)

log = logging.getLogger("provenance_router.registry")
TRACKED = ("version", "created_at", "updated_at")
OPTIMISTIC_SNAPSHOT_ATTEMPTS = 3


def table(model: Any) -> Table:
    """The Core table of a SQLModel table class."""
    return cast(Table, model.__table__)


def jsonable(value: Any) -> Any:
    return to_jsonable_python(value)


def fetch_row(db: Connection, spec: KindSpec, key: str) -> RowMapping | None:
    t = table(spec.table)
    return db.execute(select(t).where(t.c[spec.key] == key)).mappings().first()


def lineage_of(db: Connection, child: str | None = None) -> dict[str, list[dict[str, str]]]:
    """Lineage edges as ``{child: [{relation, model}, ...]}`` in the order the model lists them;
    all children, or only ``child``."""
    t = table(ModelRelation)
    query = select(t).order_by(t.c.child, t.c.position)
    if child is not None:
        query = query.where(t.c.child == child)
    edges: dict[str, list[dict[str, str]]] = {}
    for row in db.execute(query).mappings():
        edges.setdefault(row["child"], []).append(
            {"relation": row["relation"], "model": row["parent"]}
        )
    return edges


def public_of(
    spec: KindSpec, row: RowMapping, lineage: Mapping[str, list[dict[str, str]]]
) -> dict[str, Any]:
    """The public shape of one stored entity: key first, bookkeeping last, no secrets."""
    fields = [f for f in spec.public.model_fields if f not in (spec.key, *TRACKED)]
    public = {spec.key: row[spec.key]}
    for name in fields:
        public[name] = lineage.get(row[spec.key], []) if name == "lineage" else _public(row[name])
    for name in TRACKED:
        public[name] = _public(row[name])
    return public


def _public(value: Any) -> Any:
    """A stored value as JSON; a time in UTC, with its zone (SQLite stores times without)."""
    if isinstance(value, datetime):
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return jsonable(value)


def read_public(db: Connection, spec: KindSpec, key: str) -> dict[str, Any] | None:
    row = fetch_row(db, spec, key)
    if row is None:
        return None
    lineage = lineage_of(db, key) if spec.kind == "model" else {}
    return public_of(spec, row, lineage)


def read_all(*, session: Session, kind: str) -> list[dict[str, Any]]:
    """Every entity of ``kind`` in key order."""
    spec = SPECS[kind]
    db = session.connection()
    t = table(spec.table)
    lineage = lineage_of(db) if kind == "model" else {}
    rows = db.execute(select(t).order_by(t.c[spec.key])).mappings()
    return [public_of(spec, row, lineage) for row in rows]


def registry_version(*, session: Session) -> int:
    return _version(session.connection())


def _version(db: Connection, *, share_lock: bool = False) -> int:
    t = table(RegistryState)
    query = select(t.c.version).where(t.c.id == 1)
    if share_lock:
        query = query.with_for_update(read=True)  # FOR SHARE: writers lock this row to write
    return int(db.execute(query).scalar_one())


def find_key(*, session: Session, key_hash: str) -> dict[str, Any] | None:
    """The API key with this hash (public shape), or None. For low-traffic callers (admin API);
    the gateway's hot path uses the snapshot's ``keys_by_hash``."""
    t = table(SPECS["api_key"].table)
    row = session.connection().execute(select(t).where(t.c.key_hash == key_hash)).mappings().first()
    return None if row is None else public_of(SPECS["api_key"], row, {})


def find_key_snap(*, session: Session, key_hash: str) -> KeySnap | None:
    """The key with this current or replaced (rotated) hash, as the snapshot would hold it:
    what the admin API checks per request, straight from the database."""
    t = table(SPECS["api_key"].table)
    query = select(t).where(or_(t.c.key_hash == key_hash, t.c.previous_key_hash == key_hash))
    row = session.connection().execute(query).mappings().first()
    return None if row is None else _keys_by_hash([row]).get(key_hash)


def key_snap_by_id(*, session: Session, key_id: str) -> KeySnap | None:
    """Key ``key_id`` under its current hash, as the snapshot would hold it (for callers that
    keep a key's id, not the raw key: the console's sessions)."""
    t = table(SPECS["api_key"].table)
    row = session.connection().execute(select(t).where(t.c.id == key_id)).mappings().first()
    return None if row is None else _key(row)


def list_changes(
    *,
    session: Session,
    kind: str | None = None,
    entity_id: str | None = None,
    actor: str | None = None,
    since_version: int | None = None,
    visible_to_tenant: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Registry changes, newest first; ``since_version`` keeps those with a greater version.

    ``visible_to_tenant`` keeps what one tenant's compliance officer may see: every change to
    an organisation-wide fact (organizations, licenses, models, relations, deployments, routes,
    policies: they decide where every tenant's requests go), and of the tenant-owned kinds only
    that tenant itself and its own API keys (a key's tenant is read from its before/after)."""
    t = table(RegistryChange)
    query = select(t).order_by(t.c.id.desc()).limit(limit)
    filters = {t.c.kind: kind, t.c.entity_id: entity_id, t.c.actor: actor}
    for column, value in filters.items():
        if value is not None:
            query = query.where(column == value)
    if since_version is not None:
        query = query.where(t.c.version > since_version)
    if visible_to_tenant is not None:
        query = query.where(_visible_to(t, visible_to_tenant))
    return [_plain(row) for row in session.connection().execute(query).mappings()]


TENANT_OWNED_KINDS = ("tenant", "api_key")


def _visible_to(t: Table, tenant: str) -> ColumnElement[bool]:
    return or_(
        t.c.kind.not_in(TENANT_OWNED_KINDS),
        and_(t.c.kind == "tenant", t.c.entity_id == tenant),
        and_(
            t.c.kind == "api_key",
            or_(
                t.c.after["tenant"].as_string() == tenant,
                t.c.before["tenant"].as_string() == tenant,
            ),
        ),
    )


def list_decisions(
    *,
    session: Session,
    tenant_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Routing decisions, newest first; ``since`` inclusive, ``until`` exclusive. Each carries
    its ``candidates`` whether stored inline (before migration 0002) or as a shared evaluation."""
    t, e = table(RoutingDecision), table(DecisionEvaluation)
    query = (
        select(t, e.c.candidates.label("evaluation_candidates"))
        .select_from(t.outerjoin(e, t.c.evaluation_id == e.c.id))
        .order_by(t.c.id.desc())
        .limit(limit)
    )
    if tenant_id is not None:
        query = query.where(t.c.tenant_id == tenant_id)
    if status is not None:
        query = query.where(t.c.status == status)
    if since is not None:
        query = query.where(t.c.created_at >= _utc(since))
    if until is not None:
        query = query.where(t.c.created_at < _utc(until))
    return [_decision_out(row) for row in session.connection().execute(query).mappings()]


def _decision_out(row: RowMapping) -> dict[str, Any]:
    decision = dict(row)
    shared = decision.pop("evaluation_candidates")
    if decision["evaluation_id"] is not None:
        decision["candidates"] = shared
    return {name: jsonable(value) for name, value in decision.items()}


def _utc(moment: datetime) -> datetime:
    """Timestamps are stored in UTC; a time without a zone is taken to be UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def read_policy(db: Connection, version: int) -> dict[str, Any] | None:
    t = table(Policy)
    row = db.execute(select(t).where(t.c.version == version)).mappings().first()
    return None if row is None else _plain(row)


def list_policies(*, session: Session) -> list[dict[str, Any]]:
    """Every saved policy version, newest first, with its source."""
    t = table(Policy)
    rows = session.connection().execute(select(t).order_by(t.c.version.desc())).mappings()
    return [_plain(row) for row in rows]


def next_policy_version(db: Connection) -> int:
    t = table(Policy)
    return int(db.execute(select(func.coalesce(func.max(t.c.version), 0))).scalar_one()) + 1


def _plain(row: RowMapping) -> dict[str, Any]:
    return {name: jsonable(value) for name, value in row.items()}


# --- snapshot --------------------------------------------------------------------------------


def keys_folded_as(db: Connection, spec: KindSpec, key: str) -> list[str]:
    """Other keys of ``spec``'s kind that equal ``key`` ignoring case."""
    t = table(spec.table)
    column = t.c[spec.key]
    query = select(column).where(func.lower(column) == key.lower(), column != key)
    return [str(found) for found in db.execute(query).scalars()]


def load_snapshot(*, session: Session) -> RegistrySnapshot:
    """Everything the router needs, at one registry version.

    Every registry write bumps the version in the same transaction as its data, so a load
    whose version reads the same before and after saw one consistent state, even under
    PostgreSQL's READ COMMITTED (where each statement sees the latest commit). Should writers
    keep committing meanwhile, the last attempt holds the registry lock in share mode, which
    waits for the writer in flight and keeps the next one out until the caller's transaction
    ends. (A SQLite transaction reads one snapshot throughout: its first attempt always holds.)
    """
    db = session.connection()
    for _ in range(OPTIMISTIC_SNAPSHOT_ATTEMPTS):
        before = _version(db)
        snapshot = _build_snapshot(db, before)
        if _version(db) == before:
            return snapshot
    return _build_snapshot(db, _version(db, share_lock=True))


def _build_snapshot(db: Connection, version: int) -> RegistrySnapshot:
    rows = {kind: _all_rows(db, spec) for kind, spec in SPECS.items()}
    lineage = lineage_of(db)
    return RegistrySnapshot(
        version=version,
        orgs={r["id"]: _org(r) for r in rows["organization"]},
        licenses={r["id"]: _license(r) for r in rows["license"]},
        models={r["id"]: _model(r, lineage.get(r["id"], [])) for r in rows["model"]},
        deployments={r["id"]: _deployment(r) for r in rows["deployment"]},
        routes={r["name"]: _route(r) for r in rows["route"]},
        tenants={r["id"]: _tenant(r) for r in rows["tenant"]},
        keys_by_hash=_keys_by_hash(rows["api_key"]),
        policy=_active_policy(db),
    )


def _all_rows(db: Connection, spec: KindSpec) -> list[RowMapping]:
    t = table(spec.table)
    return list(db.execute(select(t).order_by(t.c[spec.key])).mappings())


def _claim(data: Mapping[str, Any] | None) -> Claim:
    data = data or {}
    return Claim(
        source=data.get("source"),
        retrieved_at=_day(data.get("retrieved_at")),
        confidence=data.get("confidence", "unknown"),
    )


def _claimed(row: RowMapping) -> dict[str, Any]:
    claims = row["claims"] or {}
    return {"claim": _claim(row["claim"]), "claims": {k: _claim(v) for k, v in claims.items()}}


def _canonical(row: RowMapping, name: str, normalise: Callable[[str], str]) -> Any:
    """A stored fact in its canonical spelling. One that no longer maps (written before the
    vocabulary, or by hand in SQL) is reported and read as unknown: it fails closed, and is never
    kept as text that no rule matches."""
    return _mapped(row[name], normalise, f"{name} of {_row_id(row)}")


def _mapped(value: str | None, normalise: Callable[[str], str], what: str) -> str | None:
    if value is None:
        return None
    try:
        return normalise(value)
    except ValueError as error:
        log.warning("registry: %s is read as unknown: %s", what, error)
        return None


def _row_id(row: RowMapping) -> str:
    return str(row["id"] if "id" in row else row["name"])


def _org(row: RowMapping) -> OrgSnap:
    return OrgSnap(
        id=row["id"],
        name=row["name"],
        hq_country=_canonical(row, "hq_country", normalise_country),
        incorporation_country=_canonical(row, "incorporation_country", normalise_country),
        parent_id=row["parent"],
        jurisdiction_tags=frozenset(row["jurisdiction_tags"]),
        state_affiliated=row["state_affiliated"],
        listings=tuple(_listings(row)),
        **_claimed(row),
    )


def _day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def _as_date(value: date | str | None) -> date | None:
    """A DATE column: a date (PostgreSQL, SQLite through SQLAlchemy) or its ISO text."""
    return _day(value) if isinstance(value, str) else value


def _listings(row: RowMapping) -> Iterable[ListingSnap]:
    """Listings in canonical spelling; one naming no known list is reported and left out (the
    field's claim then still says the listings were looked at: keep the data clean on write)."""
    for item in row["listings"] or ():
        name = _mapped(item.get("list"), normalise_named_list, f"a listing of {row['id']}")
        if name is not None:
            yield ListingSnap(name, _day(item.get("since")), item.get("source"))


def _training_hardware(row: RowMapping) -> tuple[TrainingHardwareSnap, ...] | None:
    """The stated training hardware; None when nothing is stated. A part whose vendor no
    longer maps makes the whole fact unknown (fail closed), never a partial list."""
    parts = []
    for item in row["training_hardware"] or ():
        what = f"training hardware of {row['id']}"
        vendor = _mapped(item.get("vendor"), normalise_hardware_vendor, what)
        if vendor is None:
            return None
        accelerator = _mapped(item.get("accelerator"), normalise_accelerator, what)
        parts.append(TrainingHardwareSnap(vendor, accelerator, item.get("share")))
    return tuple(parts) or None


def _training_data_countries(row: RowMapping) -> frozenset[str] | None:
    what = f"a training data country of {row['id']}"
    countries = [_mapped(c, normalise_country, what) for c in row["training_data_countries"] or ()]
    if None in countries:
        return None
    return frozenset(c for c in countries if c is not None) or None


def _restrictions(row: RowMapping) -> Iterable[RestrictionSnap]:
    for item in row["behavioral_restrictions"] or ():
        topic = _mapped(item.get("topic"), normalise_topic, f"a restriction of {row['id']}")
        if topic is not None:
            yield RestrictionSnap(
                topic,
                item.get("evidence_url"),
                _day(item.get("observed_at")),
                item.get("observed_on"),
            )


def _license(row: RowMapping) -> LicenseSnap:
    return LicenseSnap(
        id=row["id"],
        name=row["name"],
        url=row["url"],
        osi_approved=row["osi_approved"],
        open_weights=row["open_weights"],
        commercial_use=row["commercial_use"],
        user_threshold=row["user_threshold"],
        use_restrictions=frozenset(row["use_restrictions"]),
        geographic_restrictions=frozenset(row["geographic_restrictions"]),
        attribution_required=row["attribution_required"],
        derivatives_inherit=row["derivatives_inherit"],
        **_claimed(row),
    )


def _model(row: RowMapping, edges: Iterable[Mapping[str, str]]) -> ModelSnap:
    return ModelSnap(
        id=row["id"],
        name=row["name"],
        developer_id=row["developer"],
        publisher_id=row["publisher"],
        family=row["family"],
        license_id=row["license"],
        review_status=row["review_status"],
        training_hardware=_training_hardware(row),
        training_data_countries=_training_data_countries(row),
        training_data_origin=row["training_data_origin"],
        training_flops=(row["training_compute"] or {}).get("flops"),
        training_gpu_hours=(row["training_compute"] or {}).get("gpu_hours"),
        behavioral_restrictions=tuple(_restrictions(row)),
        parents=tuple(Lineage(e["relation"], e["model"]) for e in edges),  # type: ignore[arg-type]
        weights_digest=row["weights_digest"],
        revision=row["revision"],
        parameters_total=row["parameters_total"],
        parameters_active=row["parameters_active"],
        context_length=row["context_length"],
        modalities=tuple(row["modalities"] or ()),
        release_date=_as_date(row["release_date"]),
        **_claimed(row),
    )


_DEPLOYMENT_COPIED = (
    "id",
    "adapter",
    "endpoint_url",
    "upstream_model",
    "secret_ref",
    "hosting",
    "location_eea",
    "accelerator_count",
    "retention_days",
    "zero_data_retention",
    "trains_on_inputs",
    "priority",
    "weight",
    "timeout_s",
    "enabled",
    "review_status",
    "input_cost_per_mtok_usd",
    "output_cost_per_mtok_usd",
)


_DEPLOYMENT_CANONICAL: Mapping[str, Callable[[str], str]] = {
    "location_country": normalise_country,
    "location_region": check_region,
    "hardware_vendor": normalise_hardware_vendor,
    "accelerator": normalise_accelerator,
}


_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")


def _deployment(row: RowMapping) -> DeploymentSnap:
    copied = {name: row[name] for name in _DEPLOYMENT_COPIED}
    canonical = {
        name: _canonical(row, name, check) for name, check in _DEPLOYMENT_CANONICAL.items()
    }
    texts = [row[name] for name in _DEPLOYMENT_CANONICAL if row[name] is not None]
    if not (
        SLUG_RE.fullmatch(row["id"])
        and MODEL_ID_RE.fullmatch(row["model"])
        and all(_PRINTABLE_ASCII.fullmatch(t) for t in texts)
    ):
        # Ids and these facts reach response headers: text no write could have stored (a line
        # break put there with SQL) takes the deployment out of service, so it is never called.
        log.error("registry: deployment %r holds text no write accepts: disabled", row["id"])
        copied["enabled"] = False
    return DeploymentSnap(
        model_id=row["model"], operator_id=row["operator"], **copied, **canonical, **_claimed(row)
    )


def _route(row: RowMapping) -> RouteSnap:
    return RouteSnap(
        name=row["name"], strategy=row["strategy"], candidates=tuple(row["candidates"])
    )


def _tenant(row: RowMapping) -> TenantSnap:
    return TenantSnap(
        id=row["id"],
        name=row["name"],
        region=_canonical(row, "region", check_region),
        default_classification=row["default_classification"],
        attributes=dict(row["attributes"]),
        purposes=frozenset(
            purpose
            for value in row["purposes"] or ()
            if (purpose := _mapped(value, check_purpose, f"a purpose of tenant {row['id']}"))
        ),
        limits=limits_snap(row["limits"]),
    )


def _key(row: RowMapping, *, previous: bool = False) -> KeySnap:
    """The snapshot of a key's current hash, or of the hash a rotation replaced."""
    ends = [row["expires_at"], row["previous_valid_until"] if previous else None]
    times = [_timestamp(moment) for moment in ends if moment is not None]
    routes, models = row["allowed_routes"], row["allowed_models"]
    return KeySnap(
        id=row["id"],
        tenant_id=row["tenant"],
        scopes=frozenset(row["scopes"]),
        enabled=row["enabled"],
        valid_until=min(times) if times else None,
        rotated=previous,
        allowed_routes=None if routes is None else frozenset(routes),
        allowed_models=None if models is None else frozenset(models),
        limits=limits_snap(row["limits"]),
    )


def _keys_by_hash(rows: Iterable[RowMapping]) -> dict[str, KeySnap]:
    """Every key under its current hash and, after a rotation, under the replaced one."""
    keys: dict[str, KeySnap] = {}
    for row in rows:
        keys[row["key_hash"]] = _key(row)
        if row["previous_key_hash"] is not None and row["previous_valid_until"] is not None:
            keys[row["previous_key_hash"]] = _key(row, previous=True)
    return keys


def _timestamp(moment: datetime) -> float:
    """A stored time as a UNIX time; a time without a zone is UTC (SQLite stores none)."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _active_policy(db: Connection) -> PolicySnap | None:
    t = table(Policy)
    row = db.execute(select(t).where(t.c.active.is_(True))).mappings().first()
    if row is None:
        return None
    return PolicySnap(
        version=row["version"], name=row["name"], format=row["format"], source=row["source"]
    )
