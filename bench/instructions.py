"""CPU instructions per request of the gateway's own work, counted by valgrind (callgrind):
a figure no other load on the machine disturbs, to compare commits and attribute the cost.

What runs is the real app (``router.asgi.create_app``, lifespan, registry seeded as the
benchmark seeds it, API-key auth, the 14-rule policy, receipts, the audit writer storing every
row in SQLite) driven in-process, with the backend replaced by an adapter that answers at once
(no sockets: what uvicorn and the HTTP client cost is in ``bench/run.py``'s figures, not here).
Each figure is the difference between two runs of different length, divided by the extra
requests, so start-up and import costs cancel out.

    request_cN   one /v1/chat/completions with N requests in flight (receipts batch across
                 the requests whose responses start in one event-loop turn), audit row included
    audit_row    storing one audit record (registry.audit_store.store_records, 500 a batch)
    receipt_bN   one receipt in a batch of N (router.receipts.sign_batch)

    .venv/bin/python bench/instructions.py [--json]      # needs valgrind (apt install valgrind)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEY = "sk-bench-instructions-0123456789abcdef"
ADMIN_KEY = "sk-admin-instructions-0123456789abcdef"
CHAT = b'{"model":"mock","messages":[{"role":"user","content":"Say something short."}]}'
ANSWER = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"' + b"hello " * 20 + b'"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":12,"completion_tokens":20,"total_tokens":32}}'
)
VALGRIND = ("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null")
RUNS = {"request_c1": (1, 300, 900), "request_c16": (16, 320, 960), "request_c64": (64, 320, 960)}


# --- what runs under valgrind -------------------------------------------------------------------


async def drive_requests(database: Path, count: int, concurrency: int) -> None:
    from adapters.base import UpstreamResponse
    from router.asgi import create_app

    class AnswerAtOnce:
        async def send(self, *_: Any) -> UpstreamResponse:
            await asyncio.sleep(0)  # a turn of the loop, as a network answer takes
            return UpstreamResponse(200, "application/json", body=ANSWER)

        async def close(self) -> None:
            return None

    app = create_app()
    startup: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    await startup.put({"type": "lifespan.startup"})
    started = asyncio.Event()

    async def lifespan_send(message: Any) -> None:
        started.set()

    lifespan = asyncio.create_task(app({"type": "lifespan"}, startup.get, lifespan_send))
    await started.wait()
    app.gateway._adapters = dict.fromkeys(app.gateway._adapters, AnswerAtOnce())  # type: ignore[assignment]
    scope = {
        "type": "http",
        "path": "/v1/chat/completions",
        "method": "POST",
        "headers": [
            (b"authorization", f"Bearer {KEY}".encode()),
            (b"content-type", b"application/json"),
        ],
    }
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": CHAT, "more_body": False}

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def client(n: int) -> None:
        for _ in range(n):
            await app(dict(scope), receive, send)

    await client(200)  # warm: caches, the first audit flush
    await asyncio.gather(*(client(count // concurrency) for _ in range(concurrency)))
    await app.gateway.audit.flush()
    assert set(statuses) == {200}, sorted(set(statuses))
    await startup.put({"type": "lifespan.shutdown"})
    await lifespan


def store_audit_rows(database: Path, count: int) -> None:
    import uuid

    from registry.audit_record import AuditRecord, ChainHead, Evaluation
    from registry.audit_store import store_records
    from registry.db import make_engine

    evaluation = Evaluation.of([{"deployment": f"d{i}", "allowed": i > 2} for i in range(5)])
    records = [
        AuditRecord(
            request_id=f"req_0123456789abcdef{i:012x}",
            created_at=datetime.now(UTC),
            status="ok",
            tenant_id="bench",
            key_id="key_bench",
            requested_model="mock",
            route="mock",
            action="infer",
            context={"classification": "internal", "purpose": None, "caller_region": "eu"},
            evaluation=evaluation,
            chosen_deployment="mock-svea-7b-onprem-de",
            attempts=(("mock-svea-7b-onprem-de", "ok", 1.5),),
            policy_version=2,
            registry_version=3,
            http_status=200,
            latency_ms=2.5,
            prompt_tokens=12,
            completion_tokens=20,
            total_tokens=32,
        )
        for i in range(count)
    ]
    engine = make_engine(f"sqlite:///{database}")
    head = ChainHead(uuid.uuid4().hex)
    for start in range(0, count, 500):
        head = store_records(engine=engine, head=head, records=records[start : start + 500]).head


def sign_receipts(count: int, batch: int) -> None:
    from router.receipts import payload, sign_batch
    from router.signing import load_or_create_signer

    signer = load_or_create_signer(Path(tempfile.mkdtemp()))
    data = payload(
        signer,
        rid="req_0123456789abcdef000000000001",
        tenant="bench",
        model="mock",
        deployment="mock-svea-7b-onprem-de",
        policy_version=2,
        registry_version=3,
        decision="ab" * 16,
        status=200,
    )
    for _ in range(count // batch):
        sign_batch(signer, [data] * batch)


def child(what: str, database: Path, count: int) -> None:
    if what.startswith("request_c"):
        import uvloop

        uvloop.run(drive_requests(database, count, int(what.removeprefix("request_c"))))
    elif what == "audit_row":
        store_audit_rows(database, count)
    else:
        sign_receipts(count, int(what.removeprefix("receipt_b")))


# --- the driver ---------------------------------------------------------------------------------


def seed(directory: Path) -> Path:
    """A registry as the benchmark seeds it (bench/seed_registry.py)."""
    database = directory / "registry.db"
    url = f"sqlite:///{database}"
    dead = "http://127.0.0.1:9/v1"  # never called: the adapter answers
    urls = ["--database-url", url, "--chat-url", dead, "--slow-url", dead]
    keys = ["--api-key", KEY, "--admin-key", ADMIN_KEY]
    subprocess.run(
        [sys.executable, "-m", "bench.seed_registry", *urls, *keys],
        check=True,
        cwd=ROOT,
        env=environment(directory),
        stdout=subprocess.DEVNULL,
    )
    return database


def environment(directory: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PROVENANCE_ROUTER_DATABASE_URL": f"sqlite:///{directory / 'registry.db'}",
        "PROVENANCE_ROUTER_LOCAL_MODEL": "false",
        "PROVENANCE_ROUTER_LOG_LEVEL": "warning",
        "PROVENANCE_ROUTER_SIGNING_KEY_DIR": str(directory / "signing"),
        "PROVENANCE_ROUTER_AUDIT_JOURNAL_DIR": str(directory / "journal"),
        # periodic work counts by the (valgrind-slowed) clock, not by request: kept out
        "PROVENANCE_ROUTER_SNAPSHOT_POLL_S": "3600",
        "PROVENANCE_ROUTER_CHANGE_CHECK_S": "3600",
        "PROVENANCE_ROUTER_METRICS_REFRESH_S": "3600",
        "PYTHONPATH": str(ROOT),
    }


def instructions(what: str, database: Path, count: int) -> int:
    """Instructions callgrind counts for one child run (on a fresh copy of the registry)."""
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "registry.db"
        shutil.copy(database, copy)
        run = [sys.executable, __file__, "--child", what, str(copy), str(count)]
        result = subprocess.run(
            [*VALGRIND, *run],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=environment(Path(scratch)),
            check=False,
        )
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise RuntimeError(f"{what} failed under valgrind:\n{result.stderr[-3000:]}")
    return int(found.group(1))


def per_unit(what: str, database: Path, short: int, long: int) -> int:
    return round(
        (instructions(what, database, long) - instructions(what, database, short)) / (long - short)
    )


def measure(only: set[str] | None = None) -> dict[str, int]:
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    plan = {name: (short, long) for name, (_, short, long) in RUNS.items()}
    plan |= {"audit_row": (500, 1500), "receipt_b1": (200, 600), "receipt_b16": (320, 960)}
    with tempfile.TemporaryDirectory() as directory:
        database = seed(Path(directory))
        return {
            name: per_unit(name, database, *counts)
            for name, counts in plan.items()
            if only is None or name in only
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--only", help="comma-separated names (default: all)")
    parser.add_argument(
        "--child", nargs=3, metavar=("WHAT", "DATABASE", "COUNT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        what, database, count = args.child
        child(what, Path(database), int(count))
        return
    result = measure(set(args.only.split(",")) if args.only else None)
    if args.json:
        print(json.dumps(result))
        return
    for name, value in result.items():
        print(f"{name:>12}  {value:>9,} instructions")


if __name__ == "__main__":
    main()
