"""Memory under large request bodies (issue 16): 8 concurrent 30 MiB chat requests, each
answered 413 by the backend, five rounds; the gateway's RSS idle before, at its peak, and idle
after (after one more small request and a pause for the allocator to settle).

    .venv/bin/python bench/large_bodies.py [--rounds 5] [--concurrency 8] [--mib 30]

The gateway runs in a child process (real uvicorn + uvloop, as ``serve`` runs it, with the
server limits from Settings), seeded like the router tests; the backend is a raw asyncio server
in this process that reads each body whole, then answers 413 with an OpenAI error body.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
ANSWER = b'{"error": {"message": "too large", "type": "invalid_request_error", "code": null}}'


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(key)


class Backend:
    """Reads the request (head + Content-Length body), answers 413, keeps the connection."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while length:
                    length -= len(await reader.read(min(length, 1 << 20)))
                writer.write(
                    b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def serve_gateway(backend_url: str, database: str) -> None:
    """The child: a seeded gateway; prints its URL and key, then serves until killed."""
    sys.path.insert(0, str(ROOT))
    from router.asgi import create_app
    from router.server import tune_allocator
    from router.settings import Settings
    from tests.router.conftest import RunningGateway, deployment, seed
    from tests.servers import serve_app

    admin = f"pr-bench-admin-{uuid.uuid4().hex}"
    settings = Settings(
        database_url=f"sqlite:///{database}",
        admin_key=admin,
        local_model=False,
        load_catalog=False,
        max_request_body_bytes=64 * 1024 * 1024,
    )
    if os.environ.get("BENCH_TUNE_ALLOCATOR", "1") == "1":  # as `serve` does
        tune_allocator(settings)
    app = create_app(settings)
    with serve_app(app, lifespan="on", settings=settings) as url:
        gw = RunningGateway(app=app, url=url, admin_key=admin)
        seed(gw)
        with gw.write() as w:
            w.create("deployment", deployment("big-bodies", backend_url, timeout_s=60.0))
            w.create("route", {"name": "big", "candidates": ["big-bodies"]})
        print(json.dumps({"url": url, "key": gw.keys["apps"]}), flush=True)
        threading.Event().wait()


async def one_round(url: str, key: str, body: bytes, concurrency: int) -> list[int]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, timeout=120.0) as client:
        responses = await asyncio.gather(
            *(
                client.post("/v1/chat/completions", content=body, headers=headers)
                for _ in range(concurrency)
            )
        )
    return [r.status_code for r in responses]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--mib", type=int, default=30)
    parser.add_argument("--serve", nargs=2, metavar=("BACKEND_URL", "DATABASE"))
    args = parser.parse_args()
    if args.serve:
        serve_gateway(*args.serve)
        return
    backend = Backend()
    content = "x" * (args.mib * 1024 * 1024)
    body = json.dumps({"model": "big", "messages": [{"role": "user", "content": content}]})
    with tempfile.TemporaryDirectory() as tmp:
        child = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                f"http://127.0.0.1:{backend.port}/v1",
                f"{tmp}/registry.db",
            ],
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            assert child.stdout is not None
            info = json.loads(child.stdout.readline())
            report = measure(child.pid, info, body.encode(), args)
        finally:
            child.kill()
            child.wait()
    print(json.dumps(report))


def measure(pid: int, info: dict[str, str], body: bytes, args: argparse.Namespace) -> Any:
    idle_before = rss_mb(pid)
    statuses: list[int] = []
    after_rounds = []
    for _ in range(args.rounds):
        statuses += asyncio.run(one_round(info["url"], info["key"], body, args.concurrency))
        after_rounds.append(round(rss_mb(pid), 1))
    time.sleep(2.0)  # idle: what the process keeps
    return {
        "body_mib": args.mib,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "statuses": sorted(set(statuses)),
        "rss_idle_before_mb": round(idle_before, 1),
        "rss_after_each_round_mb": after_rounds,
        "rss_peak_mb": round(rss_mb(pid, "VmHWM"), 1),
        "rss_idle_after_mb": round(rss_mb(pid), 1),
    }


if __name__ == "__main__":
    main()
