"""The provenance exposure report: how much traffic depends on which jurisdiction, developer,
license, hosting, operator, serving location and hardware supply chain, and how a route could
switch away from each dependency (docs/exposure.md).

Attribution. Each audit row is attributed to the facts its deployment had at the registry
version the request was routed on (``registry.exposure_store``), recorded by the gateway when it
loads a version (:func:`record_version_facts`), not to today's registry. Facts are those the
policy saw (``router.policy.facts``): a fact without a value or with an ``unknown`` claim is
``unknown``, and so is every fact of a row whose version was never recorded (rows older than
the report). Nothing is dropped.

Shares. A request counts once in each value of a dimension its deployment has. Single-valued
dimensions (developer country, developer, hosting, operator country, serving location, serving
hardware vendor) therefore sum to 100 %. Set dimensions (developer countries along the lineage,
effective licenses, training hardware vendors along the lineage) read "traffic that depends on
X anywhere", and may sum to more than 100 % when a lineage spans several values.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from registry import exposure_store
from registry.exposure_store import FactsByDimension, TrafficGroup, VersionFacts
from registry.lineage import ancestors
from registry.snapshot import RegistrySnapshot
from router.policy import DeploymentFacts, PolicyEngine, RequestContext, explain
from router.policy.facts import known

UNKNOWN = "unknown"
# Each dimension: (name, title). Order is the report's.
DIMENSIONS: tuple[tuple[str, str], ...] = (
    ("developer_country", "Developer country (own)"),
    ("lineage_developer_country", "Developer country along lineage"),
    ("developer", "Developer organization"),
    ("effective_license", "Effective license"),
    ("hosting", "Hosting type"),
    ("operator_country", "Operator country"),
    ("serving_location", "Serving location"),
    ("serving_hardware_vendor", "Serving hardware vendor"),
    ("training_hardware_vendor", "Training hardware vendor along lineage"),
)
DIMENSION_NAMES = tuple(name for name, _ in DIMENSIONS)
SET_DIMENSIONS = frozenset(
    {"lineage_developer_country", "effective_license", "training_hardware_vendor"}
)


# --- facts per deployment --------------------------------------------------------------------


def training_hardware_vendors(snapshot: RegistrySnapshot, model_id: str) -> tuple[str, ...]:
    """The vendors of the hardware ``model_id`` and every ancestor were trained on, ``unknown``
    for each member whose training hardware is not known (the registry's own union,
    ``RegistrySnapshot.training_hardware_vendors``, leaves such members out)."""
    vendors: set[str] = set()
    for member in (model_id, *ancestors(snapshot.models, model_id)):
        model = snapshot.models.get(member)
        stated = model is not None and known(model, "training_hardware")
        vendors.update((model.training_hardware_vendors if stated and model else None) or {UNKNOWN})
    return tuple(sorted(vendors))


def deployment_exposure(snapshot: RegistrySnapshot, facts: DeploymentFacts) -> FactsByDimension:
    """What the report groups ``facts``' deployment by: every dimension has at least one value."""
    attrs = facts.attrs
    lineage = facts.lineage
    effective = attrs.get("effective_licenses", ())
    licenses = set(effective) if isinstance(effective, tuple) else set()
    if not licenses or any(m.license_id not in snapshot.licenses for m in lineage):
        licenses.add(UNKNOWN)  # an unknown member of the lineage may pass its terms on
    model_id = str(attrs["model"])
    values: dict[str, Iterable[Any]] = {
        "developer_country": [attrs.get("developer_country")],
        "lineage_developer_country": [m.country for m in lineage],
        "developer": [attrs.get("developer")],
        "effective_license": licenses,
        "hosting": [attrs.get("hosting")],
        "operator_country": [attrs.get("operator_country")],
        "serving_location": [attrs.get("location_country")],
        "serving_hardware_vendor": [attrs.get("hardware_vendor")],
        "training_hardware_vendor": training_hardware_vendors(snapshot, model_id),
    }
    return {name: tuple(sorted({str(v or UNKNOWN) for v in vs})) for name, vs in values.items()}


def version_exposure(snapshot: RegistrySnapshot, engine: PolicyEngine) -> VersionFacts:
    """The facts of every deployment of the snapshot ``engine`` was built from."""
    return {
        deployment_id: deployment_exposure(snapshot, facts)
        for deployment_id, facts in engine.entities.deployments.items()
    }


def record_version_facts(db: Engine, snapshot: RegistrySnapshot, engine: PolicyEngine) -> None:
    """Record this registry version's facts unless some gateway already did (when a gateway
    loads a version, and before a report reads the current one)."""
    if not exposure_store.has_facts(engine=db, registry_version=snapshot.version):
        exposure_store.record_facts(
            engine=db,
            registry_version=snapshot.version,
            facts=version_exposure(snapshot, engine),
        )


# --- the report ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Share:
    value: str
    requests: int
    tokens: int
    request_share: float  # percent of the window's requests
    token_share: float  # percent of the window's tokens


@dataclass(frozen=True, slots=True)
class DayCount:
    day: str
    value: str
    requests: int
    tokens: int


@dataclass(frozen=True, slots=True)
class Alternative:
    deployment: str
    model: str
    lineage_developer_country: tuple[str, ...]
    serving_hardware_vendor: tuple[str, ...]
    training_hardware_vendor: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RouteReadiness:
    """What a route depends on today (its candidates the policy allows for its tenants) and
    the deployments the policy allows for every one of those tenants that avoid it."""

    route: str
    tenants: tuple[str, ...]
    current: tuple[Alternative, ...]
    other_jurisdiction: tuple[Alternative, ...]
    other_hardware: tuple[Alternative, ...]


@dataclass(frozen=True, slots=True)
class ExposureReport:
    since: str
    until: str
    tenant: str | None
    route: str | None
    registry_version: int
    requests: int
    tokens: int
    dimensions: Mapping[str, tuple[Share, ...]]
    daily: tuple[DayCount, ...]  # value "all": the window's total per day
    trends: Mapping[str, tuple[DayCount, ...]]
    switching: tuple[RouteReadiness, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["set_dimensions"] = sorted(SET_DIMENSIONS)
        data["titles"] = dict(DIMENSIONS)
        return data


def window(
    since: datetime | None, until: datetime | None, *, default_days: int = 7
) -> tuple[datetime, datetime]:
    """``[since, until)`` in UTC: until defaults to now, since to ``default_days`` before.
    A window that ends before it starts holds no traffic (no error: each bound is valid)."""
    end = _utc(until) if until else datetime.now(UTC)
    start = _utc(since) if since else end - timedelta(days=default_days)
    return start, end


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def build_report(
    db: Engine,
    snapshot: RegistrySnapshot,
    engine: PolicyEngine,
    *,
    since: datetime,
    until: datetime,
    tenant: str | None = None,
    route: str | None = None,
) -> ExposureReport:
    """The exposure report for ``[since, until)`` (UTC), optionally one tenant's or route's;
    switching readiness is read against ``snapshot`` and ``engine`` (the live registry)."""
    record_version_facts(db, snapshot, engine)
    groups = exposure_store.traffic(
        engine=db, since=since, until=until, tenant_id=tenant, route=route
    )
    recorded = exposure_store.recorded_facts(engine=db, versions=exposure_store.versions_of(groups))
    switching = switching_readiness(snapshot, engine, groups)
    attributed = [(g, facts_of(recorded, g)) for g in _merged(groups)]
    requests = sum(g.requests for g, _ in attributed)
    tokens = sum(g.tokens for g, _ in attributed)
    counts = {name: _count(attributed, name) for name in DIMENSION_NAMES}
    return ExposureReport(
        since=since.isoformat(),
        until=until.isoformat(),
        tenant=tenant,
        route=route,
        registry_version=snapshot.version,
        requests=requests,
        tokens=tokens,
        dimensions={
            name: _shares(_totals(counts[name]), requests, tokens) for name in DIMENSION_NAMES
        },
        daily=_days(_count(attributed, None)),
        trends={name: _days(counts[name]) for name in DIMENSION_NAMES},
        switching=switching,
    )


def _merged(groups: Sequence[TrafficGroup]) -> list[TrafficGroup]:
    """The groups summed over tenant and route: all the shares need, and far fewer to
    attribute than the database returns for many tenants and routes."""
    sums: dict[tuple[date, int | None, str], list[int]] = defaultdict(lambda: [0, 0])
    for g in groups:
        total = sums[(g.day, g.registry_version, g.deployment)]
        total[0] += g.requests
        total[1] += g.tokens
    return [
        TrafficGroup(day, None, None, version, deployment, requests, tokens)
        for (day, version, deployment), (requests, tokens) in sums.items()
    ]


def facts_of(recorded: Mapping[int, VersionFacts], group: TrafficGroup) -> FactsByDimension:
    """The recorded facts of a group's deployment at its version; empty when not recorded."""
    version = recorded.get(group.registry_version) if group.registry_version is not None else None
    return (version or {}).get(group.deployment, {})


Counts = dict[tuple[date, str], list[int]]  # (day, value) -> [requests, tokens]
ALL = ("all",)


def _count(
    attributed: Sequence[tuple[TrafficGroup, FactsByDimension]], dimension: str | None
) -> Counts:
    """Requests and tokens per (day, value of ``dimension``); a group without a recorded fact
    counts as ``unknown``; ``dimension`` None: per day only (value ``all``)."""
    counts: Counts = defaultdict(lambda: [0, 0])
    for group, facts in attributed:
        values = (facts.get(dimension) or (UNKNOWN,)) if dimension else ALL
        for value in values:
            total = counts[(group.day, value)]
            total[0] += group.requests
            total[1] += group.tokens
    return counts


def _totals(counts: Counts) -> dict[str, list[int]]:
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (_, value), (requests, tokens) in counts.items():
        totals[value][0] += requests
        totals[value][1] += tokens
    return totals


def _shares(totals: Mapping[str, list[int]], requests: int, tokens: int) -> tuple[Share, ...]:
    """Largest first; ``unknown`` like any other value."""
    ordered = sorted(totals.items(), key=lambda item: (-item[1][0], -item[1][1], item[0]))
    return tuple(
        Share(value, r, t, _percent(r, requests), _percent(t, tokens)) for value, (r, t) in ordered
    )


def _percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0


def _days(counts: Counts) -> tuple[DayCount, ...]:
    return tuple(
        DayCount(day.isoformat(), value, r, t) for (day, value), (r, t) in sorted(counts.items())
    )


# --- switching readiness ---------------------------------------------------------------------


def switching_readiness(
    snapshot: RegistrySnapshot, engine: PolicyEngine, groups: Sequence[TrafficGroup]
) -> tuple[RouteReadiness, ...]:
    """For each route with traffic in the window that still exists: what it depends on and
    which deployments the policy allows for all its tenants with a different developer
    jurisdiction or a different hardware supply chain. Allowed means decided by the live
    policy over the one candidate resolver (``router.policy.explain``), as live traffic is."""
    tenants_of: dict[str, set[str]] = defaultdict(set)
    for group in groups:
        route, tenant = group.route, group.tenant_id
        if route in snapshot.routes and tenant in snapshot.tenants:
            tenants_of[str(route)].add(str(tenant))
    allowed = _Allowed(snapshot, engine)
    return tuple(
        _readiness(snapshot, engine, allowed, route, sorted(tenants))
        for route, tenants in sorted(tenants_of.items())
    )


class _Allowed:
    """Per tenant, the deployments the policy allows when the tenant asks for any model (each
    model's candidates from the one resolver, decided by the live engine), computed once."""

    def __init__(self, snapshot: RegistrySnapshot, engine: PolicyEngine) -> None:
        self._snapshot, self._engine = snapshot, engine
        self._by_tenant: dict[str, dict[str, None]] = {}

    def requesting(self, tenant: str, name: str) -> list[str]:
        """The deployments allowed for ``tenant`` asking for route or model ``name``."""
        region = self._snapshot.tenants[tenant].region
        result = explain(
            self._engine,
            self._snapshot,
            tenant_id=tenant,
            model_or_route=name,
            action="infer",
            context=RequestContext(classification="public", caller_region=region),
        )
        return list(result.allowed_deployments)

    def anywhere(self, tenant: str) -> dict[str, None]:
        if tenant not in self._by_tenant:
            found: dict[str, None] = {}
            for model_id in sorted(self._snapshot.models):
                found.update(dict.fromkeys(self.requesting(tenant, model_id)))
            self._by_tenant[tenant] = found
        return self._by_tenant[tenant]


def _readiness(
    snapshot: RegistrySnapshot,
    engine: PolicyEngine,
    allowed: _Allowed,
    route: str,
    tenants: list[str],
) -> RouteReadiness:
    current_ids = {d for t in tenants for d in allowed.requesting(t, route)}
    candidates = [
        d for d in allowed.anywhere(tenants[0]) if all(d in allowed.anywhere(t) for t in tenants)
    ]
    facts = {d: _alternative(snapshot, engine, d) for d in {*current_ids, *candidates}}
    current = tuple(facts[d] for d in sorted(current_ids))
    others = [facts[d] for d in candidates if d not in current_ids]
    countries = _union(a.lineage_developer_country for a in current)
    hardware = _union((*a.serving_hardware_vendor, *a.training_hardware_vendor) for a in current)
    return RouteReadiness(
        route=route,
        tenants=tuple(tenants),
        current=current,
        other_jurisdiction=tuple(
            a for a in others if _avoids(a.lineage_developer_country, countries)
        ),
        other_hardware=tuple(
            a
            for a in others
            if _avoids((*a.serving_hardware_vendor, *a.training_hardware_vendor), hardware)
        ),
    )


def _alternative(snapshot: RegistrySnapshot, engine: PolicyEngine, deployment: str) -> Alternative:
    facts = deployment_exposure(snapshot, engine.entities.deployments[deployment])
    return Alternative(
        deployment=deployment,
        model=snapshot.deployments[deployment].model_id,
        lineage_developer_country=facts["lineage_developer_country"],
        serving_hardware_vendor=facts["serving_hardware_vendor"],
        training_hardware_vendor=facts["training_hardware_vendor"],
    )


def _union(sets: Iterable[Iterable[str]]) -> frozenset[str]:
    return frozenset(value for values in sets for value in values)


def _avoids(values: Iterable[str], dependency: frozenset[str]) -> bool:
    """True when every value is known and none is one the route depends on: an unknown fact
    never counts as different (fail closed)."""
    seen = set(values)
    return bool(seen) and UNKNOWN not in seen and seen.isdisjoint(dependency)


# --- CSV -------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "section",
    "dimension",
    "day",
    "value",
    "requests",
    "request_share",
    "tokens",
    "token_share",
)


def csv_rows(report: ExposureReport) -> list[tuple[Any, ...]]:
    """One flat table: the shares (section ``share``, no day) then the daily counts (section
    ``daily``; dimension ``all`` is the window's total per day)."""
    rows: list[tuple[Any, ...]] = []
    for name in DIMENSION_NAMES:
        rows += [
            ("share", name, "", s.value, s.requests, s.request_share, s.tokens, s.token_share)
            for s in report.dimensions[name]
        ]
    for name, days in (("all", report.daily), *report.trends.items()):
        rows += [("daily", name, d.day, d.value, d.requests, "", d.tokens, "") for d in days]
    return rows


def render_csv(report: ExposureReport) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(csv_rows(report))
    return out.getvalue()
