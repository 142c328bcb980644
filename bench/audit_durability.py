"""What ``audit_durability=strict`` costs (issue 15): the gateway in each mode, same machine,
same mock backend, same seeded registry, alternated, on SQLite and PostgreSQL.

    .venv/bin/python -m bench.audit_durability [--duration 5] [--reps 2] [--out DIR]

Non-stream chat at c = 1 and c = 16 (the scenarios of docs/benchmarks.md), the gateway pinned
to CPU 0 and the load generator and mock to CPU 1 when the machine allows it. Prints a
Markdown table and writes ``audit-durability.json`` to the output directory
(default ``bench/results/<date>/``). PostgreSQL: ``BENCH_POSTGRES_URL`` (default the test
server, ``postgresql+psycopg://postgres@127.0.0.1:5432/test``), in a schema of its own that
is dropped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.harness.config import CLIENT_CPU, PY, ROOT, SERVER_CPU, log
from bench.harness.load import Load
from bench.harness.procs import Runner, cpu_s, free_port, wait_ready
from bench.harness.targets import gateway_argv

SCENARIOS = (("chat", 1), ("chat", 16))
MODES = ("default", "strict")
POSTGRES_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def seed(database_url: str, mock_url: str, key: str, admin_key: str) -> None:
    command = [
        PY,
        "-m",
        "bench.seed_registry",
        "--database-url",
        database_url,
        "--chat-url",
        mock_url,
        "--slow-url",
        mock_url,
        "--api-key",
        key,
        "--admin-key",
        admin_key,
    ]
    env = {**os.environ, **gateway_env(database_url, admin_key, "default", "/tmp")}
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT, env=env, timeout=300)


def gateway_env(database_url: str, admin_key: str, mode: str, out: str) -> dict[str, str]:
    return {
        "PROVENANCE_ROUTER_DATABASE_URL": database_url,
        "PROVENANCE_ROUTER_LOCAL_MODEL": "false",
        "PROVENANCE_ROUTER_ADMIN_KEY": admin_key,
        "PROVENANCE_ROUTER_LOG_LEVEL": "warning",
        "PROVENANCE_ROUTER_AUDIT_DURABILITY": mode,
        "PROVENANCE_ROUTER_AUDIT_JOURNAL_DIR": os.path.join(out, "journal"),
        "PROVENANCE_ROUTER_SIGNING_KEY_DIR": os.path.join(out, "signing"),
        "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }


def measure_mode(
    runner: Runner,
    load: Load,
    args: argparse.Namespace,
    database: str,
    url: str,
    mode: str,
    rep: int,
) -> list[dict[str, Any]]:
    port = free_port()
    env = gateway_env(url, args.admin_key, mode, args.out)
    proc = runner.start(f"gateway-{database}-{mode}", gateway_argv(port), SERVER_CPU, env=env)
    results = []
    try:
        wait_ready(runner, proc, f"http://127.0.0.1:{port}/health")
        target = f"http://127.0.0.1:{port}/v1/chat/completions"
        for kind, conc in SCENARIOS:
            load.run(target, conc, 1.0, kind, args.key)  # warm-up
            cpu0, t0 = cpu_s(proc.pid), time.perf_counter()
            result = load.run(target, conc, args.duration, kind, args.key)
            wall = time.perf_counter() - t0
            result.update(
                database=database,
                mode=mode,
                conc=conc,
                rep=rep,
                server_cpu_pct=round(100 * (cpu_s(proc.pid) - cpu0) / wall, 1),
            )
            log(
                f"{database:10s} {mode:7s} c={conc:<3d} rps={result['rps']:.0f}"
                f" p50={result['p50_us'] / 1000:.2f}ms p99={result['p99_us'] / 1000:.2f}ms"
                f" errs={result['errors']}"
            )
            results.append(result)
    finally:
        runner.stop(proc)
    return results


def postgres_schema() -> tuple[str, Any]:
    from sqlalchemy import create_engine

    schema = f"bench_audit_{secrets.token_hex(6)}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}", (admin, schema)


def drop_schema(handle: Any) -> None:
    admin, schema = handle
    with admin.begin() as connection:
        connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    admin.dispose()


def cpu_us(result: dict[str, Any]) -> float:
    """Gateway CPU per request (µs): steadier than req/s on a machine shared with others."""
    return float(result["server_cpu_pct"]) / 100 * 1e6 / max(1.0, float(result["rps"]))


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| database | c | req/s default / strict | gateway CPU µs per request default / strict"
        " (strict +) | p50 ms default / strict | p99 ms default / strict |",
        "|---|---|---|---|---|---|",
    ]
    for database in ("sqlite", "postgresql"):
        for _, conc in SCENARIOS:
            cell = {
                mode: [r for r in results if (r["database"], r["conc"], r["mode"]) == key]
                for mode in MODES
                for key in [(database, conc, mode)]
            }
            if not all(cell.values()):
                continue
            rps = {m: statistics.median(r["rps"] for r in cell[m]) for m in MODES}
            cpu = {m: statistics.median(cpu_us(r) for r in cell[m]) for m in MODES}
            p50 = {m: statistics.median(r["p50_us"] for r in cell[m]) / 1000 for m in MODES}
            p99 = {m: statistics.median(r["p99_us"] for r in cell[m]) / 1000 for m in MODES}
            lines.append(
                f"| {database} | {conc} | {rps['default']:.0f} / {rps['strict']:.0f} |"
                f" {cpu['default']:.0f} / {cpu['strict']:.0f}"
                f" ({cpu['strict'] - cpu['default']:+.0f}) |"
                f" {p50['default']:.2f} / {p50['strict']:.2f} |"
                f" {p99['default']:.2f} / {p99['strict']:.2f} |"
            )
    return "\n".join(lines)


def micro(database_urls: dict[str, str], out: str) -> dict[str, float]:
    """Per record, in this process: strict mode's journal append (encode + one write(2))
    against the alternative design, a synchronous one-row database commit per request."""
    import uuid

    from registry.audit_record import AuditRecord, ChainHead, Evaluation
    from registry.audit_store import store_records
    from registry.db import make_engine, migrate
    from registry.models import utcnow
    from router.audit_journal import Journal

    verdict = [
        {"deployment": f"d{i}", "allowed": i % 2 == 0, "rule_ids": ["r"], "reasons": ["why"]}
        for i in range(10)
    ]
    record = AuditRecord(
        request_id="req_0123456789abcdef000000000001",
        created_at=utcnow(),
        status="ok",
        tenant_id="bench",
        key_id="bench-key",
        requested_model="chat",
        route="chat",
        action="infer",
        context={"classification": "internal", "purpose": None, "caller_region": None},
        evaluation=Evaluation.of(verdict),
        chosen_deployment="d0",
        attempts=(("d0", "ok", 1.234),),
        policy_version=1,
        registry_version=7,
        http_status=200,
        latency_ms=2.5,
        prompt_tokens=5,
        completion_tokens=3,
        total_tokens=8,
    )
    figures: dict[str, float] = {}
    journal = Journal(Path(out) / "micro-journal", uuid.uuid4().hex)
    n = 20_000
    t0 = time.perf_counter()
    for _ in range(n):
        journal.finished(record)
    figures["journal_append_us"] = round((time.perf_counter() - t0) / n * 1e6, 2)
    journal.close(clean=True)
    for name, url in database_urls.items():
        engine = make_engine(url)
        migrate(engine)
        head, m = ChainHead(uuid.uuid4().hex), 300
        t0 = time.perf_counter()
        for _ in range(m):
            head = store_records(engine=engine, head=head, records=[record]).head
        figures[f"{name}_commit_per_record_ms"] = round((time.perf_counter() - t0) / m * 1e3, 3)
        engine.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument(
        "--out", default=os.path.join(ROOT, "bench", "results", str(dt.date.today()))
    )
    parser.add_argument("--generator", default="auto", choices=("auto", "wrk", "loadgen"))
    args = parser.parse_args()
    args.key, args.admin_key = (
        f"pr-bench-{secrets.token_hex(16)}",
        f"pr-admin-{secrets.token_hex(16)}",
    )
    os.makedirs(args.out, exist_ok=True)
    runner = Runner(args.out, "audit")
    load = Load(args.out, args.generator)
    mock_port = free_port()
    mock = runner.start(
        "mock",
        [PY, os.path.join(ROOT, "bench", "mock_backend.py"), "--port", str(mock_port)],
        CLIENT_CPU,
    )
    results: list[dict[str, Any]] = []
    figures: dict[str, float] = {}
    handle = None
    try:
        wait_ready(runner, mock, f"http://127.0.0.1:{mock_port}/health")
        mock_url = f"http://127.0.0.1:{mock_port}/v1"
        sqlite_path = os.path.join(args.out, "audit-bench.db")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(sqlite_path + suffix):
                os.remove(sqlite_path + suffix)
        postgres_url, handle = postgres_schema()
        databases = {"sqlite": f"sqlite:///{sqlite_path}", "postgresql": postgres_url}
        figures = micro(databases, args.out)
        log("per record:", json.dumps(figures))
        for database, url in databases.items():
            seed(url, mock_url, args.key, args.admin_key)
            for rep in range(args.reps):
                for mode in MODES if rep % 2 == 0 else reversed(MODES):
                    results += measure_mode(runner, load, args, database, url, mode, rep)
    finally:
        runner.stop_all()
        if handle is not None:
            drop_schema(handle)
    summary = table(results)
    with open(os.path.join(args.out, "audit-durability.json"), "w") as f:
        json.dump(
            {
                "generator": load.name,
                "duration_s": args.duration,
                "per_record": figures,
                "results": results,
            },
            f,
            indent=1,
        )
    print(f"\nload generator: {load.name}, {args.duration:g} s per cell, {args.reps} reps\n")
    print(summary)
    print(f"\nper record: {json.dumps(figures)}")


if __name__ == "__main__":
    main()
