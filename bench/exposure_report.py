"""How long the exposure report takes on a large audit log (issue 19: under 2 s on 1 M rows).

Seeds the benchmark registry (``bench.seed_registry``: 60+ deployments over US, SE, DE, CN, RU,
CA, JP and unknown developers), records its exposure facts, bulk-inserts N synthetic routing
decisions spread over 30 days, 4 tenants, the registry's routes (each served by its
candidates, mostly the first) and 3 registry versions (SQLite: one ``executemany``;
PostgreSQL: ``COPY``), runs ``ANALYZE`` (PostgreSQL:
``VACUUM ANALYZE``, which autovacuum does on a live database: it makes index-only scans
possible), then times the whole report (``router.exposure.build_report``: the aggregated scan,
the recorded facts, shares, daily trends and switching readiness) for the 30-day window and for
one tenant over 7 days, and prints the query plan of the scan.

The rows are NOT chain-valid (no hash chain, no evaluations): the report reads neither, and
writing them through the audit writer would take far longer than the thing measured.

    .venv/bin/python bench/exposure_report.py \
        --database-url sqlite:////tmp/exposure.db --rows 1000000
    .venv/bin/python bench/exposure_report.py \
        --database-url postgresql://postgres@127.0.0.1:5432/test --rows 1000000

A PostgreSQL run works in a schema of its own (dropped at the end); a SQLite file is created
anew (an existing file is refused; ``--existing`` times the report again on a filled one).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine  # noqa: E402

from registry import exposure_store  # noqa: E402
from registry.db import make_engine, session_scope  # noqa: E402
from registry.service import load_snapshot  # noqa: E402
from registry.snapshot import RegistrySnapshot  # noqa: E402
from router.exposure import build_report, record_version_facts  # noqa: E402
from router.policy import PolicyEngine  # noqa: E402

TENANTS = ("bench", "apps", "research", "support")
DAYS = 30
COLUMNS = (
    "request_id",
    "created_at",
    "tenant_id",
    "route",
    "requested_model",
    "action",
    "context",
    "candidates",
    "attempts",
    "chosen_deployment",
    "registry_version",
    "policy_version",
    "status",
    "http_status",
    "total_tokens",
    "sanitized",
)
REPEATS = 3


def seed(url: str) -> tuple[Engine, RegistrySnapshot, PolicyEngine]:
    from bench.seed_registry import seed as seed_registry

    args = argparse.Namespace(
        database_url=url,
        chat_url="http://127.0.0.1:9/v1",
        slow_url="http://127.0.0.1:9/v1",
        api_key=f"pr-bench-{uuid.uuid4().hex}",
        admin_key=f"pr-bench-admin-{uuid.uuid4().hex}",
    )
    seed_registry(args)
    engine = make_engine(url)
    with session_scope(engine) as session:
        snapshot = load_snapshot(session=session)
    policy = PolicyEngine.build(snapshot, snapshot.policy)
    record_version_facts(engine, snapshot, policy)
    return engine, snapshot, policy


def synthetic_rows(
    snapshot: RegistrySnapshot, count: int, now: datetime
) -> Iterator[tuple[Any, ...]]:
    """Rows spread over the last 30 days; half of them on two older registry versions
    whose facts were never recorded (they count as unknown, as rows from before 0005 do)."""
    rng = random.Random(19)
    routes = sorted(snapshot.routes)
    versions = (snapshot.version, snapshot.version, snapshot.version - 1, snapshot.version - 2)
    for n in range(count):
        moment = now - timedelta(seconds=rng.randrange(DAYS * 86400))
        route = rng.choice(routes)
        deployments = served_by(snapshot, route)
        yield (
            f"req_bench_{n:09d}",
            moment,
            rng.choice(TENANTS),
            route,
            route,
            "infer",
            "{}",
            "[]",
            "[]",
            deployments[min(int(rng.expovariate(1.0)), len(deployments) - 1)],
            rng.choice(versions),
            1,
            "ok",
            200,
            rng.randrange(20, 4000),
            False,
        )


def served_by(snapshot: RegistrySnapshot, route: str) -> list[str]:
    """A route's deployments in fallback order (model candidates stand for their
    deployments): a request is served by one of them, mostly the first, as in real traffic."""
    found = []
    for name in snapshot.routes[route].candidates:
        if name in snapshot.deployments:
            found.append(name)
        else:
            found += sorted(d.id for d in snapshot.deployments_of(name))
    return found or sorted(snapshot.deployments)


def bulk_insert(engine: Engine, rows: Iterator[tuple[Any, ...]]) -> None:
    columns = ", ".join(COLUMNS)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "postgresql":
            with cursor.copy(f"COPY routing_decisions ({columns}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" for _ in COLUMNS)
            sql = f"INSERT INTO routing_decisions ({columns}) VALUES ({marks})"
            cursor.executemany(sql, (_sqlite_row(row) for row in rows))
        raw.commit()
    finally:
        raw.close()


def _sqlite_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """As SQLAlchemy stores a naive-UTC DateTime in SQLite: ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    moment: datetime = row[1]
    return (row[0], moment.strftime("%Y-%m-%d %H:%M:%S.%f"), *row[2:])


def analyze(engine: Engine) -> None:
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "VACUUM ANALYZE routing_decisions"
            )
        else:
            connection.exec_driver_sql("ANALYZE")
            connection.commit()


def query_plan(engine: Engine, since: datetime, until: datetime, tenant: str | None) -> list[str]:
    query = exposure_store.traffic_query(engine.dialect.name, since, until, tenant, None)
    compiled = query.compile(dialect=engine.dialect)
    if engine.dialect.name == "postgresql":
        prefix, params = "EXPLAIN (ANALYZE, BUFFERS) ", dict(compiled.params)
    else:
        prefix = "EXPLAIN QUERY PLAN "
        params = tuple(_sqlite_value(compiled.params[n]) for n in compiled.positiontup or ())
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(prefix + str(compiled), params).all()
    return [str(row[-1]) for row in rows]


def _sqlite_value(value: Any) -> Any:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(value, datetime) else value


def timed(
    engine: Engine,
    snapshot: RegistrySnapshot,
    policy: PolicyEngine,
    since: datetime,
    until: datetime,
    tenant: str | None,
) -> dict[str, Any]:
    times, requests = [], 0
    for _ in range(REPEATS):
        start = time.perf_counter()
        report = build_report(engine, snapshot, policy, since=since, until=until, tenant=tenant)
        times.append(time.perf_counter() - start)
        requests = report.requests
    return {
        "tenant": tenant,
        "since": since.isoformat(),
        "requests": requests,
        "seconds_median": round(statistics.median(times), 3),
        "seconds_first": round(times[0], 3),
        "plan": query_plan(engine, since, until, tenant),
    }


def schema_url(url: str) -> tuple[str, str | None]:
    """PostgreSQL: a URL whose tables live in a fresh schema (and that schema's name)."""
    if not url.startswith("postgresql"):
        path = Path(url.removeprefix("sqlite:///"))
        if path.exists():
            raise SystemExit(f"{path} exists: give a new SQLite file")
        return url, None
    schema = f"bench_exposure_{uuid.uuid4().hex[:8]}"
    with make_engine(url).begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}", schema


def drop_schema(url: str, schema: str) -> None:
    with make_engine(url).begin() as connection:
        connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


def run(url: str, rows: int) -> dict[str, Any]:
    engine, snapshot, policy = seed(url)
    now = datetime.now(UTC)
    start = time.perf_counter()
    bulk_insert(engine, synthetic_rows(snapshot, rows, now))
    inserted_s = time.perf_counter() - start
    return measure(engine, snapshot, policy, now, rows, inserted_s)


def measure_existing(url: str) -> dict[str, Any]:
    """Time the report again on a SQLite file an earlier run filled (its rows end at the
    newest one stored)."""
    engine = make_engine(url)
    with session_scope(engine) as session:
        snapshot = load_snapshot(session=session)
    policy = PolicyEngine.build(snapshot, snapshot.policy)
    with engine.connect() as connection:
        count, newest = connection.exec_driver_sql(
            "SELECT count(*), max(created_at) FROM routing_decisions"
        ).one()
    now = datetime.fromisoformat(newest).replace(tzinfo=UTC)
    return measure(engine, snapshot, policy, now, int(count), None)


def measure(
    engine: Engine,
    snapshot: RegistrySnapshot,
    policy: PolicyEngine,
    now: datetime,
    rows: int,
    inserted_s: float | None,
) -> dict[str, Any]:
    analyze(engine)
    until = now + timedelta(seconds=1)
    return {
        "database": engine.dialect.name,
        "rows": rows,
        "insert_seconds": None if inserted_s is None else round(inserted_s, 1),
        "deployments": len(snapshot.deployments),
        "routes": len(snapshot.routes),
        "reports": [
            timed(engine, snapshot, policy, now - timedelta(days=DAYS), until, None),
            timed(engine, snapshot, policy, now - timedelta(days=7), until, "bench"),
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--existing", action="store_true", help="SQLite: time again on a file a run filled"
    )
    args = parser.parse_args()
    if args.existing:
        print(json.dumps(measure_existing(args.database_url), indent=1))
        return
    url, schema = schema_url(args.database_url)
    try:
        result = run(url, args.rows)
    finally:
        if schema is not None:
            drop_schema(args.database_url, schema)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
