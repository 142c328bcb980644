"""Issue 20 with issue 18: ``serve --workers 2``, requests answered by both worker processes
(their audit chains prove it), then one scrape of ``/metrics`` (answered by either worker)
counts every one of them: the workers share prometheus_client's multiprocess directory."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx

from tests.conftest import Database
from tests.fakes import FakeUpstream
from tests.router.conftest import wait_for
from tests.router.test_metrics import parse, total
from tests.router.test_workers import (
    drive_until_both_workers_answered,
    fresh_connections,
    read_banner,
    register_upstream,
    start_serve,
    started,
    stop,
    up,
)

__all__ = ["started", "up"]  # fixtures of test_workers


def test_two_workers_add_up_in_one_scrape(
    blank_database: Database,
    up: FakeUpstream,
    tmp_path: Path,
    started: list[subprocess.Popen[str]],
) -> None:
    gateway = start_serve(blank_database, tmp_path, "--no-local-model")
    started.append(gateway)
    lines = read_banner(gateway)
    admin_key = next(line.strip() for line in lines if line.strip().startswith("pr-"))
    base_url = lines[-1].split()[3]
    key = register_upstream(base_url, admin_key, up)
    with fresh_connections(base_url, key) as client:
        received, _ = drive_until_both_workers_answered(blank_database, client, "busy")

    def counted() -> float:
        with httpx.Client(headers={"Connection": "close"}, timeout=10.0) as http:
            text = http.get(f"{base_url}/metrics").text
        ok = total(parse(text), "provenance_router_requests_total", model="busy", status="ok")
        return ok if ok == len(received) else 0.0

    # a scrape answered by either worker adds up both (each flushes within audit_flush_s)
    for _ in range(4):
        assert wait_for(counted, what=f"{len(received)} requests counted") == len(received)
    stop(gateway)
