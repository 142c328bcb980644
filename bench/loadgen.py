"""A small closed-loop HTTP/1.1 load generator in pure Python (asyncio + httptools).

The fallback when ``wrk`` is not installed (CI, a clean machine): ``--smoke`` and the tests use
it, so nothing has to be installed by hand. It is slower than wrk (one Python core tops out
around 10-20k req/s), so full runs use wrk and say which generator produced each cell.

    python bench/loadgen.py --url http://127.0.0.1:8000/v1/chat/completions \
        --conc 16 --duration 5 --body-file body.json --auth sk-...

Prints one line ``RESULT {json}`` with the same keys as ``post.lua`` (wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.parse

import httptools


class Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.done: asyncio.Future[int] | None = None
        self.nbytes = 0
        self.keep_alive = True
        self.lost = False

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("connection lost"))

    def data_received(self, data: bytes) -> None:
        self.nbytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            if self.done is not None and not self.done.done():
                self.done.set_exception(error)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        if self.done is not None and not self.done.done():
            self.done.set_result(self.parser.get_status_code())

    def request(self, data: bytes) -> asyncio.Future[int]:
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(data)  # type: ignore[union-attr]
        return self.done


async def run(
    url: str,
    conc: int,
    duration: float,
    body: bytes,
    auth: str,
    timeout: float,
    headers: list[str] | None = None,
) -> dict:
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path or "/"
    extra = "".join(f"{h}\r\n" for h in headers or [])
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {auth}\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    total_bytes = 0
    statuses: dict[int, int] = {}
    start = time.perf_counter()
    deadline = start + duration

    async def worker() -> None:
        nonlocal total_bytes
        conn: Conn | None = None
        while time.perf_counter() < deadline:
            if conn is None or conn.lost or not conn.keep_alive:
                if conn is not None and conn.transport is not None:
                    total_bytes += conn.nbytes
                    conn.transport.close()
                try:
                    _, conn = await loop.create_connection(Conn, host, port)
                except OSError:
                    errors["connect"] += 1
                    conn = None
                    await asyncio.sleep(0.01)
                    continue
            t0 = time.perf_counter()
            try:
                status = await asyncio.wait_for(conn.request(request), timeout)
            except TimeoutError:
                errors["timeout"] += 1
                conn.lost = True
                continue
            except (ConnectionError, httptools.HttpParserError):
                errors["read"] += 1
                conn.lost = True
                continue
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
            if status > 399:
                errors["status"] += 1
        if conn is not None and conn.transport is not None:
            total_bytes += conn.nbytes
            conn.transport.close()

    await asyncio.gather(*(worker() for _ in range(conc)))
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> int:
        if not latencies:
            return 0
        return int(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1e6)

    return {
        "requests": len(latencies),
        "duration_us": int(elapsed * 1e6),
        "bytes": total_bytes,
        "rps": len(latencies) / elapsed,
        "p50_us": pct(50),
        "p90_us": pct(90),
        "p99_us": pct(99),
        "mean_us": round(sum(latencies) / len(latencies) * 1e6, 1) if latencies else 0,
        "max_us": int(latencies[-1] * 1e6) if latencies else 0,
        "err_connect": errors["connect"],
        "err_read": errors["read"],
        "err_write": errors["write"],
        "err_status": errors["status"],
        "err_timeout": errors["timeout"],
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "generator": "loadgen.py",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--conc", type=int, default=1)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--body-file", required=True)
    p.add_argument("--auth", default="dummy")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument(
        "--header", action="append", default=[], help="'name: value', sent with every request"
    )
    a = p.parse_args()
    with open(a.body_file, "rb") as f:
        body = f.read()
    coro = run(a.url, a.conc, a.duration, body, a.auth, a.timeout, a.header)
    try:
        import uvloop

        result = uvloop.run(coro)
    except ImportError:  # pragma: no cover
        result = asyncio.run(coro)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
