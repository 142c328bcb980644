"""The registry's service API: validated, atomic, versioned, audited writes, plus reads.

Used by the admin API and by ``provenance-router apply``; knows nothing about HTTP.

    RegistryError              .message (the tree is in ``registry.errors``)
    ├── ValidationFailed       bad input (.field names it, or None); nothing changed
    ├── NotFoundError          no entity with that id
    ├── ConflictError          stale expected version, duplicate id, concurrent write
    └── BusyError              no connection or no write lock in time; nothing changed

How a write is kept safe:

- ``write_transaction`` is one database transaction. It first takes the registry write lock
  (``SELECT ... FOR UPDATE`` on the ``registry_state`` row on PostgreSQL; ``BEGIN IMMEDIATE``
  on SQLite), so writers queue instead of interleaving, and every check below sees the state
  the write will land on.
- Each operation validates completely (field checks, references, lineage cycles) *before* it
  touches a row, so a rejected operation leaves the transaction as it was.
- At the first real change the registry version is bumped once (``UPDATE registry_state SET
  version = version + 1``); every row written carries that version and every change writes a
  ``RegistryChange`` row (before/after in public shape: no secrets). Nothing changed: no bump.
- Updates and deletes are compare-and-set (``... WHERE id = :id AND version = :expected``):
  a stale version is a ``ConflictError`` (HTTP 409), never a lost update.
- Policy saves and activations bump the registry version too: replicas reload their snapshot
  (which holds the active policy) when that version moves.
- The bump also signals the change (``registry.changes``: on PostgreSQL a ``NOTIFY`` in the
  same transaction, delivered at commit, never for a write that rolled back), so replicas
  reload at once instead of at their next version poll.
- Every wait is bounded: for a pooled connection by the engine's pool timeout, for the write
  lock by its lock timeout (``registry.db.make_engine``). Either ends in ``BusyError`` with
  nothing changed, never in a driver error.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import JSON, Connection, Engine, RowMapping, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from registry import reads
from registry.audit_record import Evaluation
from registry.audit_store import insert_decisions
from registry.changes import notify_change
from registry.db import write_connection
from registry.errors import (
    BusyError,
    ConflictError,
    NotFoundError,
    RegistryError,
    ValidationFailed,
)
from registry.keys import generate_key, hash_key, key_prefix
from registry.lineage import find_cycle
from registry.models import (
    SPECS,
    KindSpec,
    ModelRelation,
    Policy,
    Reference,
    RegistryChange,
    RegistryState,
    utcnow,
)
from registry.reads import (
    find_key,
    find_key_snap,
    key_snap_by_id,
    list_changes,
    list_decisions,
    list_policies,
    load_snapshot,
    read_all,
    registry_version,
)

__all__ = [
    "KINDS",
    "BusyError",
    "ConflictError",
    "Evaluation",
    "NotFoundError",
    "RegistryError",
    "ValidationFailed",
    "Writer",
    "check_version",
    "find_key",
    "find_key_snap",
    "get_policy",
    "insert_decisions",
    "key_snap_by_id",
    "list_changes",
    "list_decisions",
    "list_policies",
    "load_snapshot",
    "read_all",
    "read_one",
    "registry_version",
    "write_transaction",
]

KINDS: tuple[str, ...] = tuple(SPECS)
POLICY_FORMATS = ("yaml", "cedar")
ROTATION_COLUMNS = ("previous_key_hash", "previous_prefix", "previous_valid_until")
MAX_GRACE_S = 30 * 86_400.0  # a rotation's grace period: at most 30 days ...
DEFAULT_GRACE_S = 86_400.0  # ... and unless the caller says otherwise, 24 hours


# --- reads -----------------------------------------------------------------------------------


def read_one(*, session: Session, kind: str, id: str) -> dict[str, Any]:
    """One entity in public shape; ``NotFoundError`` when absent."""
    spec = _spec(kind)
    found = reads.read_public(session.connection(), spec, id)
    if found is None:
        raise NotFoundError(f"{kind} {id!r} not found")
    return found


def check_version(*, session: Session, kind: str, id: str, expected_version: int | None) -> None:
    """``ConflictError`` when ``id`` is stored at another version than ``expected_version``.

    A read, without the write lock: versions only grow, so a version that is stale now is stale
    under the lock too, and a caller can refuse the write without queueing behind the writers
    ahead. Whatever this lets through (absent, or matching) the write transaction decides."""
    spec = _spec(kind)
    row = reads.fetch_row(session.connection(), spec, id)
    if row is not None and expected_version is not None and row["version"] != expected_version:
        raise _stale(spec, id, row["version"], expected_version)


def get_policy(*, session: Session, version: int) -> dict[str, Any]:
    """One saved policy version with its source; ``NotFoundError`` when absent."""
    found = reads.read_policy(session.connection(), version)
    if found is None:
        raise NotFoundError(f"policy version {version} not found")
    return found


# --- the write transaction -------------------------------------------------------------------


@contextmanager
def write_transaction(*, engine: Engine, actor: str) -> Iterator[Writer]:
    """One atomic, serialized registry write; see the module docstring."""
    if not actor:
        raise ValidationFailed("actor: must name who writes", field="actor")
    try:
        with write_connection(engine) as connection:
            _lock_registry(connection)
            yield Writer(connection=connection, actor=actor)
    except IntegrityError as exc:  # a backstop: the checks above should have caught it
        # The driver's text may quote stored values (a key hash): keep it out of the message.
        raise ConflictError("the write conflicts with stored data (a constraint failed)") from exc


def _lock_registry(db: Connection) -> None:
    state = reads.table(RegistryState)
    db.execute(select(state.c.version).where(state.c.id == 1).with_for_update()).scalar_one()


class Writer:
    """The operations of one write transaction. Every method is all-or-nothing."""

    def __init__(self, *, connection: Connection, actor: str) -> None:
        self._db = connection
        self._actor = actor
        self._version: int | None = None

    @property
    def version(self) -> int | None:
        """The registry version this transaction writes, or None while nothing changed."""
        return self._version

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session on this transaction's own connection, for the read functions: it sees
        what this transaction wrote so far, and a writer that reads never waits for a second
        pooled connection while it holds one (the write lock with it)."""
        with Session(bind=self._db) as session:
            yield session

    def create(self, kind: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """Create one entity; returns its public dict (with its ``version``)."""
        spec = _spec(kind)
        entity = _validate(spec.create, _prepare(spec, data))
        key = getattr(entity, spec.key)
        if reads.fetch_row(self._db, spec, key) is not None:
            raise ConflictError(f"{kind} {key!r} already exists")
        same = reads.keys_folded_as(self._db, spec, key)
        if same:  # rules match ids ignoring case: two ids that differ only in case are one name
            raise ConflictError(f"{kind} {key!r} differs only in case from {same[0]!r}")
        if kind == "api_key" and entity.raw_key is None:
            raise ValidationFailed("raw_key: required (use create_api_key)", field="raw_key")
        state = _state(spec, entity)
        self._check_links(spec, key, state, changed=set(state))
        version = self._bump()
        now = utcnow()
        columns = _columns(spec, state)
        self._db.execute(
            insert(reads.table(spec.table)).values(
                {spec.key: key, **columns, "version": version, "created_at": now, "updated_at": now}
            )
        )
        self._write_lineage(spec, key, state)
        return self._record(spec, key, "create", before=None)

    def update(
        self,
        kind: str,
        id: str,
        changes: Mapping[str, Any],
        *,
        expected_version: int | None,
        derived: Mapping[str, Any] | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Change some fields; compare-and-set on ``expected_version`` (None: no check).
        ``derived``: stored columns no input may set, written with the change (a key's
        rotation state). ``note`` (a reviewer's reason, say) is recorded with the change row.

        An update that changes no value is a no-op: no version bump, no change row."""
        spec = _spec(kind)
        patch_input = _prepare(spec, changes)
        if patch_input.pop(spec.key, id) != id:
            raise ValidationFailed(f"{spec.key}: cannot be changed", field=spec.key)
        patch = _validate(spec.update, patch_input).model_dump(exclude_unset=True)
        row = self._current(spec, id, expected_version)
        current = _stored_state(self._db, spec, row)
        merged = {spec.key: id, **_as_input(spec, current), **patch}
        _rederive(spec, merged, patch)
        state = _state(spec, _validate(spec.create, merged))
        changed = {name for name, value in state.items() if not _same(value, current.get(name))}
        if not changed:
            return reads.public_of(spec, row, {id: current.get("lineage", [])})
        self._check_links(spec, id, state, changed=changed)
        before = reads.read_public(self._db, spec, id)
        columns = {**_columns(spec, state, only=changed), **(derived or {})}
        self._compare_and_set(spec, id, expected_version, columns)
        if "lineage" in changed:
            self._write_lineage(spec, id, state)
        return self._record(spec, id, "update", before=before, note=note)

    def delete(self, kind: str, id: str, *, expected_version: int | None) -> None:
        """Delete one entity; refused (ValidationFailed) while anything references it."""
        spec = _spec(kind)
        self._current(spec, id, expected_version)
        referrers = self._referrers(spec.kind, id)
        if referrers:
            raise ValidationFailed(f"{kind} {id!r} is still referenced by {', '.join(referrers)}")
        before = reads.read_public(self._db, spec, id)
        self._bump()
        if kind == "model":
            relations = reads.table(ModelRelation)
            self._db.execute(delete(relations).where(relations.c.child == id))
        t = reads.table(spec.table)
        query = delete(t).where(t.c[spec.key] == id)
        if expected_version is not None:
            query = query.where(t.c.version == expected_version)
        if self._db.execute(query).rowcount != 1:
            raise ConflictError(f"{kind} {id!r} changed concurrently")
        self._log(kind, id, "delete", before=before, after=None)

    def create_api_key(
        self,
        *,
        id: str,
        tenant: str,
        scopes: list[str],
        raw_key: str | None = None,
        **fields: Any,
    ) -> tuple[dict[str, Any], str]:
        """Create a key (``fields``: owner, expires_at, allowed_routes, ...); returns (public
        dict, raw key). The raw key is shown only here."""
        raw = raw_key if raw_key is not None else generate_key()
        data = {**fields, "id": id, "tenant": tenant, "scopes": scopes, "raw_key": raw}
        return self.create("api_key", data), raw

    def rotate_api_key(
        self, *, id: str, grace_s: float, expected_version: int | None = None
    ) -> tuple[dict[str, Any], str]:
        """Give key ``id`` a new raw key, returned here once. The key keeps its id (and with it
        its tenant, scopes, allow-lists, limits and audit trail); the replaced raw key stays
        valid ``grace_s`` seconds more (0: it stops at once). Rotating again within a grace
        period ends the earlier one: only the latest replaced key is kept."""
        if not 0 <= grace_s <= MAX_GRACE_S:
            raise ValidationFailed(f"grace_s: must be 0 to {MAX_GRACE_S:g}", field="grace_s")
        row = self._current(_spec("api_key"), id, expected_version)
        previous: dict[str, Any] = dict.fromkeys(ROTATION_COLUMNS)
        if grace_s > 0:
            until = utcnow() + timedelta(seconds=grace_s)
            values = (row["key_hash"], row["prefix"], until)
            previous.update(zip(ROTATION_COLUMNS, values, strict=True))
        raw = generate_key()
        changes = {"raw_key": raw}
        public = self.update("api_key", id, changes, expected_version=None, derived=previous)
        return public, raw

    def save_policy(self, *, name: str, format: str, source: str, activate: bool) -> dict[str, Any]:
        """Store a new, immutable policy version (the caller has validated ``source``)."""
        _check_policy_input(name=name, format=format, source=source)
        self._bump()
        version = reads.next_policy_version(self._db)
        row = {"version": version, "name": name, "format": format, "source": source}
        self._db.execute(
            insert(reads.table(Policy)).values(
                **row, created_at=utcnow(), created_by=self._actor, active=False
            )
        )
        self._log("policy", str(version), "create", before=None, after=_policy_summary(row))
        if activate:
            self.activate_policy(version=version)
        return _found(reads.read_policy(self._db, version))

    def activate_policy(self, *, version: int) -> dict[str, Any]:
        """Make ``version`` the one active policy (a no-op when it already is)."""
        target = reads.read_policy(self._db, version)
        if target is None:
            raise NotFoundError(f"policy version {version} not found")
        if target["active"]:
            return target
        self._bump()
        policies = reads.table(Policy)
        self._db.execute(update(policies).where(policies.c.active.is_(True)).values(active=False))
        self._db.execute(update(policies).where(policies.c.version == version).values(active=True))
        before = _policy_summary(target)
        self._log("policy", str(version), "update", before=before, after={**before, "active": True})
        return _found(reads.read_policy(self._db, version))

    # --- steps -------------------------------------------------------------------------------

    def _bump(self) -> int:
        """The version of this transaction; bumps the global version at the first change."""
        if self._version is None:
            state = reads.table(RegistryState)
            query = (
                update(state)
                .where(state.c.id == 1)
                .values(version=state.c.version + 1)
                .returning(state.c.version)
            )
            self._version = int(self._db.execute(query).scalar_one())
            notify_change(self._db)  # replicas hear of it at commit (registry.changes)
        return self._version

    def _current(self, spec: KindSpec, id: str, expected_version: int | None) -> RowMapping:
        row = reads.fetch_row(self._db, spec, id)
        if row is None:
            raise NotFoundError(f"{spec.kind} {id!r} not found")
        if expected_version is not None and row["version"] != expected_version:
            raise _stale(spec, id, row["version"], expected_version)
        return row

    def _compare_and_set(
        self, spec: KindSpec, id: str, expected: int | None, columns: Mapping[str, Any]
    ) -> None:
        version = self._bump()
        t = reads.table(spec.table)
        query = update(t).where(t.c[spec.key] == id)
        if expected is not None:
            query = query.where(t.c.version == expected)
        values = {**columns, "version": version, "updated_at": utcnow()}
        if self._db.execute(query.values(values)).rowcount != 1:
            raise ConflictError(f"{spec.kind} {id!r} changed concurrently; reload and retry")

    def _write_lineage(self, spec: KindSpec, id: str, state: Mapping[str, Any]) -> None:
        if spec.kind != "model":
            return
        relations = reads.table(ModelRelation)
        self._db.execute(delete(relations).where(relations.c.child == id))
        edges = [
            {"child": id, "position": i, "parent": e["model"], "relation": e["relation"]}
            for i, e in enumerate(state["lineage"])
        ]
        if edges:
            self._db.execute(insert(relations), edges)

    def _record(
        self,
        spec: KindSpec,
        id: str,
        op: str,
        *,
        before: dict[str, Any] | None,
        note: str | None = None,
    ) -> dict[str, Any]:
        after = _found(reads.read_public(self._db, spec, id))
        self._log(spec.kind, id, op, before=before, after=after, note=note)
        return after

    def _log(
        self,
        kind: str,
        id: str,
        op: str,
        *,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        note: str | None = None,
    ) -> None:
        change = {
            "version": self._bump(),
            "at": utcnow(),
            "actor": self._actor,
            "kind": kind,
            "entity_id": id,
            "op": op,
            "before": reads.jsonable(before),
            "after": reads.jsonable(after),
            "note": note,
        }
        self._db.execute(insert(reads.table(RegistryChange)).values(change))

    # --- references and lineage --------------------------------------------------------------

    def _check_links(
        self, spec: KindSpec, id: str, state: Mapping[str, Any], *, changed: set[str]
    ) -> None:
        """Reject cycles, references to entities that do not exist, and reused API keys."""
        if "key_hash" in changed:
            self._check_new_key(state["key_hash"])
        if spec.acyclic in changed and state.get(spec.acyclic):
            self._check_acyclic(spec, id, state)
        for ref in spec.references:
            if ref.field not in changed:
                continue
            for target in _ids(state.get(ref.field), ref):
                if not any(reads.fetch_row(self._db, SPECS[k], target) for k in ref.targets):
                    names = " or ".join(ref.targets)
                    close = [
                        i
                        for k in ref.targets
                        for i in reads.keys_folded_as(self._db, SPECS[k], target)
                    ]
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise ValidationFailed(
                        f"{ref.field}: no {names} {target!r}{hint}", field=ref.field
                    )

    def _check_new_key(self, key_hash: str) -> None:
        keys = reads.table(SPECS["api_key"].table)
        taken = or_(keys.c.key_hash == key_hash, keys.c.previous_key_hash == key_hash)
        if self._db.execute(select(keys.c.id).where(taken)).first():
            raise ValidationFailed("raw_key: this key is already registered", field="raw_key")

    def _check_acyclic(self, spec: KindSpec, id: str, state: Mapping[str, Any]) -> None:
        field = spec.acyclic
        assert field is not None
        ref = next(r for r in spec.references if r.field == field)
        graph = {
            key: tuple(_ids(value, ref)) for key, value in self._field_values(spec, field).items()
        }
        graph[id] = tuple(_ids(state.get(field), ref))
        cycle = find_cycle(graph)
        if cycle:
            path = " -> ".join(_starting_at(cycle, id))
            raise ValidationFailed(f"{field}: would form a cycle {path}", field=field)

    def _field_values(self, spec: KindSpec, field: str) -> dict[str, Any]:
        """``{key: value of field}`` for every entity of ``spec``'s kind."""
        if field == "lineage":
            return dict(reads.lineage_of(self._db))
        t = reads.table(spec.table)
        rows = self._db.execute(select(t.c[spec.key], t.c[field]))
        return {key: value for key, value in rows}

    def _referrers(self, kind: str, id: str) -> list[str]:
        """Which entities name ``kind`` ``id`` (as ``"model 'a/b' (developer)"``)."""
        return [
            f"{spec.kind} {key!r} ({ref.field})"
            for spec, ref in _references_to(kind)
            for key, value in self._field_values(spec, ref.field).items()
            if id in _ids(value, ref) and (spec.kind, key) != (kind, id)
        ]


# --- helpers ---------------------------------------------------------------------------------


def _references_to(kind: str) -> Iterator[tuple[KindSpec, Reference]]:
    for spec in SPECS.values():
        for ref in spec.references:
            if kind in ref.targets:
                yield spec, ref


def _stale(spec: KindSpec, id: str, stored: int, expected: int) -> ConflictError:
    return ConflictError(
        f"{spec.kind} {id!r} is at version {stored}, not {expected}:"
        " it was changed since you read it; reload and retry"
    )


def _spec(kind: str) -> KindSpec:
    spec = SPECS.get(kind)
    if spec is None:
        raise ValidationFailed(f"kind: {kind!r} is not one of {', '.join(SPECS)}", field="kind")
    return spec


def _prepare(spec: KindSpec, data: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ValidationFailed(f"{spec.kind}: expected a mapping of fields")
    if spec.prepare is None:
        return dict(data)
    try:
        return spec.prepare(data)
    except ValueError as exc:
        raise ValidationFailed(str(exc)) from exc


def _validate(model: type[BaseModel], data: Mapping[str, Any]) -> Any:
    """``model`` validated from ``data``; the first error becomes ``ValidationFailed``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in error["loc"]) or None
        message = error["msg"].removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ValidationFailed(f"{field or 'input'}: {message}{more}", field=field) from exc


def _state(spec: KindSpec, entity: BaseModel) -> dict[str, Any]:
    """What a validated entity stores: column values (and lineage), JSON columns JSON-ready.

    An API key's raw key becomes its hash and display prefix here and goes no further."""
    dumped = entity.model_dump(exclude={spec.key})
    raw = dumped.pop("raw_key", None)
    plain = _plain_columns(spec)
    state = {
        name: value if name in plain else reads.jsonable(value) for name, value in dumped.items()
    }
    if raw is not None:
        secret = raw.get_secret_value()
        state.update(key_hash=hash_key(secret), prefix=key_prefix(secret))
    return state


def _plain_columns(spec: KindSpec) -> set[str]:
    """Columns that take Python values as they are (dates stay dates); JSON ones need JSON."""
    columns = reads.table(spec.table).columns
    return {c.key for c in columns if not isinstance(c.type, JSON)}


def _stored_state(db: Connection, spec: KindSpec, row: RowMapping) -> dict[str, Any]:
    columns = reads.table(spec.table).columns.keys()
    skip = {spec.key, *reads.TRACKED}
    state = {name: row[name] for name in columns if name not in skip}
    if spec.kind == "model":
        state["lineage"] = reads.lineage_of(db, row[spec.key]).get(row[spec.key], [])
    return state


def _as_input(spec: KindSpec, state: Mapping[str, Any]) -> dict[str, Any]:
    """A stored state as XCreate input (derived secret columns left out)."""
    accepted = spec.create.model_fields
    return {name: value for name, value in state.items() if name in accepted}


def _rederive(spec: KindSpec, merged: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """Moving a deployment to another country re-derives its EEA flag unless the patch sets it."""
    if spec.kind == "deployment" and "location_country" in patch and "location_eea" not in patch:
        merged["location_eea"] = None


def _columns(
    spec: KindSpec, state: Mapping[str, Any], *, only: set[str] | None = None
) -> dict[str, Any]:
    columns = set(reads.table(spec.table).columns.keys())
    return {k: v for k, v in state.items() if k in columns and (only is None or k in only)}


def _same(new: Any, old: Any) -> bool:
    return bool(reads.jsonable(new) == reads.jsonable(old))


def _ids(value: Any, ref: Reference) -> list[str]:
    """The entity ids a reference field's value names."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if ref.item_key is not None:
        return [item[ref.item_key] for item in value]
    return list(value)


def _starting_at(cycle: tuple[str, ...], start: str) -> tuple[str, ...]:
    """The cycle ``b -> a -> c -> b`` told from the entity being written: ``a -> c -> b -> a``."""
    nodes = cycle[:-1]
    if start not in nodes:
        return cycle
    at = nodes.index(start)
    turned = nodes[at:] + nodes[:at]
    return (*turned, start)


def _found(value: dict[str, Any] | None) -> dict[str, Any]:
    assert value is not None, "a row written in this transaction must be readable"
    return value


def _check_policy_input(*, name: str, format: str, source: str) -> None:
    if not name.strip():
        raise ValidationFailed("name: must not be empty", field="name")
    if format not in POLICY_FORMATS:
        raise ValidationFailed(f"format: {format!r} is not one of yaml, cedar", field="format")
    if not source.strip():
        raise ValidationFailed("source: must not be empty", field="source")


def _policy_summary(row: Mapping[str, Any]) -> dict[str, Any]:
    """A policy in the change log: which version, name and format (the text stays in its row)."""
    return {k: row[k] for k in ("version", "name", "format") if k in row} | {
        "active": bool(row.get("active", False))
    }
