"""The import service function: plan a discovery against the registry, and apply it.

A dry run reads the registry and returns the plan. An apply plans *inside* one write
transaction (so the diff it applies is the one the registry holds under the write lock) and
creates every ``create`` entry there: any refusal (a value the registry rejects, a concurrent
write) rolls all of it back, so an import is applied whole or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from registry.db import session_scope
from registry.errors import RegistryError
from registry.importers.errors import ImportFailed
from registry.importers.found import Discovery
from registry.importers.plan import Entry, ImportPlan, Registry, plan
from registry.reads import read_all
from registry.service import Writer, write_transaction

KIND_ORDER = ("model", "deployment", "route")


@dataclass(frozen=True, slots=True)
class ImportResult:
    plan: ImportPlan
    applied: bool
    version: int | None  # the registry version the apply wrote; None: dry run or no change

    def to_dict(self) -> dict[str, Any]:
        return {**self.plan.to_dict(), "applied": self.applied, "registry_version": self.version}


def run_import(
    engine: Engine, discovery: Discovery, *, apply: bool, actor: str, today: date
) -> ImportResult:
    """The diff of ``discovery`` (``apply=False``), or the diff applied in one transaction."""
    if not apply:
        return preview(engine, discovery, today=today)
    with write_transaction(engine=engine, actor=actor) as writer:
        result = apply_discovery(writer, discovery, today=today)
    return ImportResult(result.plan, True, writer.version)


def preview(engine: Engine, discovery: Discovery, *, today: date) -> ImportResult:
    """The diff, read from the registry; nothing is written."""
    with session_scope(engine) as session:
        return ImportResult(plan(discovery, registry_of(session), today=today), False, None)


def apply_discovery(writer: Writer, discovery: Discovery, *, today: date) -> ImportResult:
    """Plan under the write lock (the registry as the write will find it) and create the new
    entries; the caller's transaction commits them all or none. ``version`` is the one the
    transaction writes (known at commit)."""
    with writer.reading() as session:
        planned = plan(discovery, registry_of(session), today=today)
        apply_plan(writer, planned)
    return ImportResult(planned, True, writer.version)


def registry_of(session: Session) -> Registry:
    def by_key(kind: str, key: str = "id") -> dict[str, dict[str, object]]:
        return {str(row[key]): row for row in read_all(session=session, kind=kind)}

    return Registry(
        models=by_key("model"),
        deployments=by_key("deployment"),
        routes=by_key("route", "name"),
        organizations=tuple(read_all(session=session, kind="organization")),
        licenses=tuple(str(row["id"]) for row in read_all(session=session, kind="license")),
    )


def apply_plan(writer: Writer, planned: ImportPlan) -> None:
    """Create the plan's new entries: models parents first, then deployments, then routes.
    A plan with values the registry would refuse is refused whole, before any write."""
    if planned.errors:
        more = f" (and {len(planned.errors) - 1} more)" if len(planned.errors) > 1 else ""
        raise ImportFailed(planned.location, f"the registry refuses {planned.errors[0]}{more}")
    for entry in _in_order(planned.creates):
        try:
            writer.create(entry.kind, entry.values)
        except RegistryError as exc:  # the caller's transaction rolls everything back
            exc.message = f"{entry.kind} {entry.id!r} from {planned.location}: {exc.message}"
            exc.args = (exc.message,)
            raise


def _in_order(creates: list[Entry]) -> list[Entry]:
    models = [e for e in creates if e.kind == "model"]
    ordered: list[Entry] = []
    done: set[str] = set()
    new = {e.id for e in models}
    while models:
        ready = [
            e
            for e in models
            if all(edge["model"] in done or edge["model"] not in new for edge in _edges(e))
        ] or models[:1]  # a cycle: let the service refuse it with its own message
        ordered.extend(ready)
        done.update(e.id for e in ready)
        models = [e for e in models if e.id not in done]
    rest = [e for kind in KIND_ORDER[1:] for e in creates if e.kind == kind]
    return [*ordered, *rest]


def _edges(entry: Entry) -> list[dict[str, str]]:
    lineage = entry.values.get("lineage", [])
    return list(lineage) if isinstance(lineage, list) else []
