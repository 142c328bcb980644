"""GitOps for the registry: ``apply`` a registry file, ``export`` the registry as one.

    text --parse_document--> RegistryDocument --plan--> changes --execute--> one write transaction

What ``apply`` guarantees (the file format is ``docs/registry-format.md``):

- **Only what the file says.** An entry compares and writes only the fields it lists, with
  normalised values (order of set-like lists, ``DE`` vs ``de``, ``60`` vs ``60.0``), so applying
  the same file, or an export, twice changes nothing and creates no registry version.
- **All or nothing.** Every change runs in one ``write_transaction``: any failure (a validation
  error, a dangling reference, a lineage cycle, a concurrent edit) rolls everything back.
  ``dry_run`` executes the same changes and then rolls them back, so it reports exactly the
  errors a real apply would, and changes nothing.
- **Dependency order.** Creates and updates run organizations (parents first), licenses,
  models (lineage parents first), deployments, routes, tenants, API keys; deletes run after
  them in reverse (children first). API-key deletes run first, so a renamed key may keep its
  secret.
- **Prune** (``prune=True``) deletes the entities of every section *present* in the file that
  the file does not list; sections the file leaves out are not touched (an empty list,
  ``tenants: []``, prunes every tenant). Policies are not part of the file and are never pruned.
- **Secrets.** An API key is created from the raw key held in the env var its ``secret_ref``
  names; the raw key goes only to the service, which stores its hash. Existing keys are never
  re-keyed by apply. Export writes no hash and no key.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from registry.db import session_scope
from registry.gitops_schema import (
    API_VERSION,
    KEY_SECRET_REF,
    SECTION_OF,
    SECTIONS,
    Entry,
    RegistryDocument,
    RegistryFileError,
    file_path,
    normalise,
    parse_document,
    to_file_entry,
)
from registry.lineage import find_cycle
from registry.models import SPECS
from registry.service import (
    RegistryError,
    ValidationFailed,
    Writer,
    read_all,
    registry_version,
    write_transaction,
)

__all__ = [
    "ApplyResult",
    "Change",
    "FieldChange",
    "RegistryFileError",
    "apply",
    "describe_error",
    "export",
    "plan",
]

Op = Literal["create", "update", "delete"]
KIND_ORDER: tuple[str, ...] = tuple(SECTIONS.values())
EXPORT_ATTEMPTS = 5
Current = Mapping[str, Mapping[str, Mapping[str, Any]]]  # kind -> key -> public dict


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field of a change, spelled as in the file (``location.country``), values normalised."""

    field: str
    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class Change:
    """One entity to create, update or delete."""

    op: Op
    kind: str
    id: str
    fields: tuple[FieldChange, ...] = ()
    payload: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    expected_version: int | None = field(default=None, compare=False, repr=False)
    entry: Entry | None = field(default=None, compare=False, repr=False)

    @property
    def section(self) -> str:
        return SECTION_OF[self.kind]

    def where(self) -> str:
        """Where the change comes from, for messages."""
        if self.entry is not None:
            return self.entry.where()
        return f"{self.section}[{self.id}] (not listed in the file: --prune deletes it)"


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What an apply did (or, for a dry run, would do) and the registry version it made."""

    creates: tuple[Change, ...]
    updates: tuple[Change, ...]
    deletes: tuple[Change, ...]
    version: int | None  # the new registry version; None when nothing changed or a dry run
    dry_run: bool = False

    @classmethod
    def of(cls, changes: tuple[Change, ...], *, version: int | None, dry_run: bool) -> ApplyResult:
        def only(op: Op) -> tuple[Change, ...]:
            return tuple(c for c in changes if c.op == op)

        return cls(only("create"), only("update"), only("delete"), version, dry_run)

    @property
    def changes(self) -> tuple[Change, ...]:
        return (*self.creates, *self.updates, *self.deletes)


# --------------------------------------------------------------------------- apply


def apply(
    engine: Engine,
    source: str | Path,
    *,
    dry_run: bool = False,
    prune: bool = False,
    actor: str = "gitops",
    env: Mapping[str, str] | None = None,
    bootstrap: str | None = None,
) -> ApplyResult:
    """Make the registry match a registry file (``source``: YAML text, or a ``Path`` to read).

    ``env`` holds the env vars API keys' ``secret_ref`` name (default: ``os.environ``).
    ``bootstrap`` is registry text merged *under* the file when the registry has no
    organizations yet (the built-in catalog: the file may then refer to and amend its entries).
    Raises ``RegistryFileError`` for a bad file, or the service's ``RegistryError`` (with a note
    naming the entry) when a change is refused; either way nothing was written."""
    document = parse_document(
        source.read_text(encoding="utf-8") if isinstance(source, Path) else source
    )
    with session_scope(engine) as session:
        if bootstrap is not None and not read_all(session=session, kind="organization"):
            base = parse_document(bootstrap, origin="catalog")
            document = merge_under(base, document, prune=prune)
        changes = plan(session=session, document=document, prune=prune)
    secrets = os.environ if env is None else env
    _check_new_keys(changes, secrets)
    version = _run(engine, changes, actor=actor, env=secrets, dry_run=dry_run) if changes else None
    return ApplyResult.of(changes, version=version, dry_run=dry_run)


def merge_under(base: RegistryDocument, top: RegistryDocument, *, prune: bool) -> RegistryDocument:
    """``top`` applied over ``base`` as one document: same-id entries merge field by field
    (``top`` wins). With ``prune``, base entries of sections ``top`` prunes are dropped, exactly
    as if ``base`` had been applied first and ``top`` pruned it."""
    entries: dict[str, tuple[Entry, ...]] = {}
    for kind in KIND_ORDER:
        tops = {e.id: e for e in top.of(kind)}
        keep_base = not (prune and kind in top.sections)
        merged: list[Entry] = []
        for entry in base.of(kind):
            if entry.id in tops:
                merged.append(_overlay(entry, tops.pop(entry.id)))
            elif keep_base:
                merged.append(entry)
        entries[kind] = (*merged, *tops.values())
    return RegistryDocument(entries=entries, sections=top.sections)


def _overlay(base: Entry, top: Entry) -> Entry:
    return Entry(
        kind=top.kind,
        id=top.id,
        values={**base.values, **top.values},
        line=top.line,
        lines=top.lines,
        secret_ref=top.secret_ref or base.secret_ref,
        origin=top.origin,
    )


# --------------------------------------------------------------------------- plan


def plan(*, session: Session, document: RegistryDocument, prune: bool) -> tuple[Change, ...]:
    """The changes that make the registry match ``document``, in execution order."""
    current: Current = {
        kind: {row[SPECS[kind].key]: row for row in read_all(session=session, kind=kind)}
        for kind in KIND_ORDER
    }
    doomed = _doomed(document, current) if prune else {}
    key_deletes = _deletes("api_key", doomed.get("api_key", ()), current)
    writes = [c for kind in KIND_ORDER for c in _writes(kind, document, current, doomed)]
    deletes = [
        c
        for kind in reversed(KIND_ORDER[:-1])
        for c in _deletes(kind, doomed.get(kind, ()), current)
    ]
    return (*key_deletes, *writes, *deletes)


def _doomed(document: RegistryDocument, current: Current) -> dict[str, tuple[str, ...]]:
    """Per pruned kind, the registry entities the file does not list."""
    doomed: dict[str, tuple[str, ...]] = {}
    for kind in document.sections:
        listed = {e.id for e in document.of(kind)}
        doomed[kind] = tuple(key for key in current[kind] if key not in listed)
    return doomed


def _writes(
    kind: str, document: RegistryDocument, current: Current, doomed: Mapping[str, tuple[str, ...]]
) -> Iterator[Change]:
    entries = document.of(kind)
    if SPECS[kind].acyclic is not None:
        graph = _target_graph(kind, entries, current, set(doomed.get(kind, ())))
        entries = _parents_first(entries, graph)
    for entry in entries:
        change = _diff(entry, current[kind].get(entry.id))
        if change is not None:
            yield change


def _diff(entry: Entry, stored: Mapping[str, Any] | None) -> Change | None:
    """Create, update (only the differing fields) or nothing."""
    if stored is None:
        shown = [FieldChange(file_path(c), None, normalise(c, v)) for c, v in entry.values.items()]
        if entry.secret_ref is not None:
            shown.append(FieldChange(KEY_SECRET_REF, None, entry.secret_ref))
        return Change("create", entry.kind, entry.id, tuple(shown), entry.values, entry=entry)
    differing = {
        column: value
        for column, value in entry.values.items()
        if normalise(column, value) != normalise(column, stored.get(column))
    }
    if not differing:
        return None
    shown = [
        FieldChange(file_path(c), normalise(c, stored.get(c)), normalise(c, v))
        for c, v in differing.items()
    ]
    version = stored.get("version")
    return Change("update", entry.kind, entry.id, tuple(shown), differing, version, entry)


def _deletes(kind: str, keys: tuple[str, ...], current: Current) -> list[Change]:
    """Deletes of ``keys``, children before their parents."""
    if SPECS[kind].acyclic is not None:
        graph = {key: _parent_ids(kind, row) for key, row in current[kind].items()}
        keys = tuple(reversed(_topological(keys, graph)))
    return [
        Change("delete", kind, key, expected_version=current[kind][key].get("version"))
        for key in keys
    ]


def _parent_ids(kind: str, values: Mapping[str, Any]) -> tuple[str, ...]:
    """The ids the self-reference of ``kind`` names (an org's parent, a model's lineage)."""
    spec = SPECS[kind]
    ref = next(r for r in spec.references if r.field == spec.acyclic)
    value = values.get(ref.field)
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(item[ref.item_key] if ref.item_key else item for item in value)


def _target_graph(
    kind: str, entries: tuple[Entry, ...], current: Current, doomed: set[str]
) -> dict[str, tuple[str, ...]]:
    """Child -> parents once the file is applied; a cycle in it is a file error."""
    field_name = SPECS[kind].acyclic
    graph = {key: _parent_ids(kind, row) for key, row in current[kind].items() if key not in doomed}
    for entry in entries:
        if field_name in entry.values or entry.id not in graph:
            graph[entry.id] = _parent_ids(kind, entry.values)
    cycle = find_cycle(graph)
    if cycle:
        in_file = {e.id: e for e in entries}
        entry = next((in_file[node] for node in cycle if node in in_file), entries[0])
        raise RegistryFileError(
            [f"{entry.where(field_name)}: would form a cycle {' -> '.join(cycle)}"]
        )
    return graph


def _parents_first(
    entries: tuple[Entry, ...], graph: Mapping[str, tuple[str, ...]]
) -> tuple[Entry, ...]:
    by_id = {e.id: e for e in entries}
    return tuple(by_id[key] for key in _topological(tuple(by_id), graph))


def _topological(keys: tuple[str, ...], graph: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """``keys`` with every key after its ancestors (the graph must be acyclic); stable."""
    wanted, seen, ordered = set(keys), set[str](), list[str]()
    stack: list[tuple[str, bool]] = [(key, False) for key in reversed(keys)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            if node in wanted:
                ordered.append(node)
            continue
        if node in seen:
            continue
        seen.add(node)
        stack.append((node, True))
        stack.extend((parent, False) for parent in reversed(graph.get(node, ())))
    return tuple(ordered)


def _check_new_keys(changes: tuple[Change, ...], env: Mapping[str, str]) -> None:
    """A new API key needs a tenant, scopes and a secret_ref naming a set env var."""
    problems: list[str] = []
    for change in changes:
        if change.kind != "api_key" or change.op != "create" or change.entry is None:
            continue
        entry = change.entry
        missing = [f for f in ("tenant", "scopes") if not entry.values.get(f)]
        if missing:
            problems.append(f"{entry.where()}: a new key needs {' and '.join(missing)}")
        if entry.secret_ref is None:
            problems.append(
                f"{entry.where()}: a new key needs secret_ref, the env var holding its raw key"
                " (keys are never in a file or an export)"
            )
        elif not env.get(entry.secret_ref):
            problems.append(
                f"{entry.where(KEY_SECRET_REF)}: environment variable {entry.secret_ref} is not set"
            )
    if problems:
        raise RegistryFileError(problems)


# --------------------------------------------------------------------------- execute


class _RollBack(Exception):
    """Raised inside the write transaction to undo a dry run."""


def _run(
    engine: Engine,
    changes: tuple[Change, ...],
    *,
    actor: str,
    env: Mapping[str, str],
    dry_run: bool,
) -> int | None:
    """Execute ``changes`` in one write transaction; a dry run rolls them back."""
    try:
        with write_transaction(engine=engine, actor=actor) as writer:
            for change in changes:
                _execute(writer, change, env)
            if dry_run:
                raise _RollBack
    except _RollBack:
        return None
    return writer.version


def _execute(writer: Writer, change: Change, env: Mapping[str, str]) -> None:
    try:
        if change.op == "delete":
            writer.delete(change.kind, change.id, expected_version=change.expected_version)
        elif change.op == "update":
            writer.update(
                change.kind, change.id, change.payload, expected_version=change.expected_version
            )
        elif change.kind == "api_key":
            _create_key(writer, change, env)
        else:
            writer.create(change.kind, {SPECS[change.kind].key: change.id, **change.payload})
    except RegistryError as exc:
        exc.add_note(_failed_at(change, exc))
        raise


def _create_key(writer: Writer, change: Change, env: Mapping[str, str]) -> None:
    """The raw key goes from the env var to the service (which stores its hash), nowhere else."""
    assert change.entry is not None and change.entry.secret_ref is not None
    payload = dict(change.payload)
    tenant, scopes = payload.pop("tenant"), payload.pop("scopes")
    raw_key = env[change.entry.secret_ref]
    writer.create_api_key(id=change.id, tenant=tenant, scopes=list(scopes), raw_key=raw_key)
    if payload:  # e.g. ``enabled: false``
        writer.update("api_key", change.id, payload, expected_version=None)


def _failed_at(change: Change, exc: RegistryError) -> str:
    """``line N: section[id]: update refused``, N being the line of the field at fault."""
    if change.entry is None:
        return f"{change.where()}: {change.op} refused"
    column = exc.field.split(".")[0] if isinstance(exc, ValidationFailed) and exc.field else None
    return f"{change.entry.where(column, name_field=False)}: {change.op} refused"


def describe_error(exc: RegistryError) -> str:
    """An error as one message: where (from the notes ``apply`` adds) and what."""
    notes = getattr(exc, "__notes__", [])
    return ": ".join([*notes, exc.message]) if notes else exc.message


# --------------------------------------------------------------------------- export


def export(engine: Engine) -> str:
    """The whole registry as a registry file: deterministic, no secrets, no bookkeeping.

    Every section is written (empty ones as ``[]``), so ``apply --prune`` of an export makes a
    registry equal to the exported one (API keys excepted: their raw keys are never exported)."""
    for _ in range(EXPORT_ATTEMPTS):
        with session_scope(engine) as session:
            before = registry_version(session=session)
            document = _export_document(session)
            if registry_version(session=session) == before:
                break
    return dump_yaml(document)


def _export_document(session: Session) -> dict[str, Any]:
    document: dict[str, Any] = {"apiVersion": API_VERSION}
    for section, kind in SECTIONS.items():
        rows = sorted(read_all(session=session, kind=kind), key=lambda r: str(r[SPECS[kind].key]))
        document[section] = [_flow_leaves(to_file_entry(kind, row)) for row in rows]
    return document


class _Flow(dict[str, Any]):
    """A mapping written on one line (claims, lineage edges)."""


class _FlowList(list[Any]):
    """A list of scalars written on one line."""


def _flow_leaves(entry: Mapping[str, Any]) -> dict[str, Any]:
    """Mark the small leaves of an entry to be written in flow style."""
    marked: dict[str, Any] = {}
    for name, value in entry.items():
        if name == "claim":
            marked[name] = _Flow(value)
        elif name == "claims":
            marked[name] = {fact: _Flow(claim) for fact, claim in value.items()}
        elif name == "lineage":
            marked[name] = [_Flow(edge) for edge in value]
        elif isinstance(value, list) and all(not isinstance(v, dict | list) for v in value):
            marked[name] = _FlowList(value)
        elif isinstance(value, dict) and name != "attributes":
            marked[name] = _Flow(value)
        else:
            marked[name] = value
    return marked


class _Dumper(yaml.SafeDumper):
    """Block style with indented sequences; ``_Flow``/``_FlowList`` on one line."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


_Dumper.add_representer(
    _Flow, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v.items(), flow_style=True)
)
_Dumper.add_representer(
    _FlowList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)


def dump_yaml(document: Mapping[str, Any]) -> str:
    """A registry document as YAML, key order kept."""
    text: str = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)
    return text
