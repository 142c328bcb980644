"""Persistence of the exposure report: the facts recorded per registry version, and the
audit log aggregated by what the report groups by. No HTTP, no policy: ``router.exposure``
computes the facts and builds the report.

The report never joins audit rows to today's registry (a fact edited later would rewrite past
traffic). Each gateway records, when it loads a registry version, the facts of every
deployment at that version (:func:`record_facts`, idempotent across replicas); the report reads
the audit log once, aggregated by (day, tenant, route, registry version, deployment) — a few
hundred groups for a million rows — and attributes each group through :func:`recorded_facts`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, cast

from sqlalchemy import Engine, Table, and_, func, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import ColumnElement

from registry.models import ExposureFact, RoutingDecision

FactsByDimension = Mapping[str, tuple[str, ...]]  # dimension -> values (sorted)
VersionFacts = Mapping[str, FactsByDimension]  # deployment id -> its facts


def _table(model: Any) -> Table:
    return cast(Table, model.__table__)


@dataclass(frozen=True, slots=True)
class TrafficGroup:
    """Audit rows that reached ``deployment`` on one day, for one tenant and route, routed on
    one registry version: how many, and their tokens (rows without a count add 0)."""

    day: date
    tenant_id: str | None
    route: str | None
    registry_version: int | None
    deployment: str
    requests: int
    tokens: int


def has_facts(*, engine: Engine, registry_version: int) -> bool:
    t = _table(ExposureFact)
    query = select(t.c.registry_version).where(t.c.registry_version == registry_version)
    with engine.connect() as connection:
        return connection.execute(query.limit(1)).first() is not None


def record_facts(*, engine: Engine, registry_version: int, facts: VersionFacts) -> None:
    """Store the facts of every deployment at ``registry_version``, once: a version already
    recorded (by this or another gateway) is left as it is."""
    rows = [
        {
            "registry_version": registry_version,
            "deployment_id": deployment,
            "dimension": dimension,
            "value": value,
        }
        for deployment, dimensions in facts.items()
        for dimension, values in dimensions.items()
        for value in values
    ]
    if not rows or has_facts(engine=engine, registry_version=registry_version):
        return
    with engine.begin() as connection:
        connection.execute(_facts_insert(engine.dialect.name), rows)


def _facts_insert(dialect: str) -> Any:
    """INSERT that skips rows another gateway stored meanwhile (both dialects spell it alike)."""
    t = _table(ExposureFact)
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(t).on_conflict_do_nothing()


def recorded_facts(*, engine: Engine, versions: Iterable[int]) -> dict[int, VersionFacts]:
    """The facts recorded for each of ``versions`` (a version never recorded is absent)."""
    t = _table(ExposureFact)
    wanted = sorted(set(versions))
    found: dict[int, dict[str, dict[str, list[str]]]] = {}
    with engine.connect() as connection:
        for start in range(0, len(wanted), 500):
            query = select(t).where(t.c.registry_version.in_(wanted[start : start + 500]))
            for row in connection.execute(query.order_by(t.c.value)):
                by_deployment = found.setdefault(row.registry_version, {})
                dimensions = by_deployment.setdefault(row.deployment_id, {})
                dimensions.setdefault(row.dimension, []).append(row.value)
    return {
        version: {
            deployment: {dimension: tuple(values) for dimension, values in dimensions.items()}
            for deployment, dimensions in by_deployment.items()
        }
        for version, by_deployment in found.items()
    }


def traffic(
    *,
    engine: Engine,
    since: datetime,
    until: datetime,
    tenant_id: str | None = None,
    route: str | None = None,
) -> list[TrafficGroup]:
    """The audit rows in ``[since, until)`` that reached a deployment (a denied request has no
    chosen deployment: it depends on nothing), aggregated for the report."""
    query = traffic_query(engine.dialect.name, since, until, tenant_id, route)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    days: dict[date | str, date] = {}  # SQLite returns each day as text, many times over
    return [
        TrafficGroup(
            day=days.get(day) or days.setdefault(day, _as_date(day)),
            tenant_id=tenant,
            route=route_name,
            registry_version=version,
            deployment=deployment,
            requests=int(requests),
            tokens=int(tokens or 0),
        )
        for day, version, deployment, tenant, route_name, requests, tokens in rows
    ]


def traffic_query(
    dialect: str, since: datetime, until: datetime, tenant_id: str | None, route: str | None
) -> Any:
    """The report's one scan of the audit log (public for ``bench/``, which EXPLAINs it)."""
    t = _table(RoutingDecision)
    day = _day(dialect, t)
    conditions: list[ColumnElement[bool]] = [
        t.c.created_at >= since,
        t.c.created_at < until,
        t.c.chosen_deployment.is_not(None),
    ]
    if dialect == "sqlite":  # the day range lets SQLite use its day index (migration 0006)
        conditions += [day >= _sqlite_day(since), day <= _sqlite_day(until)]
    if tenant_id is not None:
        conditions.append(t.c.tenant_id == tenant_id)
    if route is not None:
        conditions.append(t.c.route == route)
    keys = (day, t.c.registry_version, t.c.chosen_deployment, t.c.tenant_id, t.c.route)
    return (
        select(*keys, func.count(), func.sum(t.c.total_tokens))
        .where(and_(*conditions))
        .group_by(*keys)
    )


def _day(dialect: str, t: Table) -> ColumnElement[Any]:
    """The UTC day of ``created_at``: SQLite stores naive UTC text (its first ten characters
    are the day, the expression of its day index), PostgreSQL a ``timestamptz`` (converted to
    UTC, whatever the session's zone)."""
    if dialect == "postgresql":
        return func.date(func.timezone("UTC", t.c.created_at))
    # literal positions: a bound ``?`` would not match the index's expression
    return func.substr(t.c.created_at, literal_column("1"), literal_column("10"))


def _sqlite_day(moment: datetime) -> str:
    return moment.astimezone(UTC).date().isoformat()


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def versions_of(groups: Sequence[TrafficGroup]) -> set[int]:
    return {g.registry_version for g in groups if g.registry_version is not None}
