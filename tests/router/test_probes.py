"""Issue 20: ``/healthz`` and ``/readyz``, unauthenticated and cheap, on the real gateway.

A load balancer asks every replica every second: the probes answer from state the gateway
keeps, so no database statement runs for them (counted with an engine event while the version
poll is slowed out of the way). Readiness follows the snapshot's freshness and the audit
writer, and its body summarizes the backends; the cut-database case, where readiness turns to
503, runs against real processes in ``test_propagation``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import event

from router.gateway import Gateway
from router.probes import readiness
from tests.router.conftest import RunningGateway, closed_port_url, deployment, uid


@pytest.fixture(scope="module")
def gw(gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    # a slow poll, so that the only database work during a test is the test's own
    return gateway_factory(snapshot_poll_s=60.0, breaker_failures=1, breaker_cooldown_s=60.0)


@pytest.mark.parametrize("path", ["/healthz", "/health"])
def test_liveness_answers_200_without_a_key(gw: RunningGateway, path: str) -> None:
    response = httpx.get(f"{gw.url}{path}")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"


def test_readiness_reports_each_check(gw: RunningGateway) -> None:
    response = httpx.get(f"{gw.url}/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    snapshot = body["snapshot"]
    assert snapshot["loaded"] and snapshot["fresh"]
    assert snapshot["registry_version"] == gw.served_version()
    assert snapshot["policy_version"] == gw.policy_version
    assert snapshot["max_staleness_s"] == 300.0
    assert body["database"]["reachable"] is True
    assert body["audit"] == {"healthy": True, "pending": 0, "write_failing": False}
    assert body["backends"]["open_circuits"] == 0


def test_probes_run_no_database_statement(gw: RunningGateway) -> None:
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(gw.engine, "before_cursor_execute", count)
    try:
        with httpx.Client(base_url=gw.url) as http:
            for _ in range(50):
                assert http.get("/readyz").status_code == 200
                assert http.get("/healthz").status_code == 200
    finally:
        event.remove(gw.engine, "before_cursor_execute", count)
    assert statements == []


def test_readiness_counts_open_circuits(gw: RunningGateway) -> None:
    route, gone = uid("probe-route"), uid("probe-gone")
    with gw.write() as w:
        w.create("deployment", deployment(gone, closed_port_url()))
        w.create("route", {"name": route, "candidates": [gone]})
    with pytest.raises(openai.APIStatusError):
        gw.openai().chat.completions.create(
            model=route, messages=[{"role": "user", "content": "x"}]
        )
    body = httpx.get(f"{gw.url}/readyz").json()
    assert body["backends"]["open_circuits"] == 1
    assert body["status"] == "ready"  # a backend down is not this replica's own readiness


def test_readiness_is_503_when_the_snapshot_is_stale(
    gw: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = gw.app.gateway
    fresh_until = gateway.fresh_until
    # as if the database had been away past the bound: no check confirms the snapshot meanwhile
    monkeypatch.setattr(gateway, "_confirm_fresh", lambda: None)
    gateway.fresh_until = 1.0
    try:
        response = httpx.get(f"{gw.url}/readyz")
        with gw.http() as http:
            v1 = http.post("/v1/chat/completions", json={"model": "x", "messages": []})
    finally:
        gateway.fresh_until = fresh_until
    assert response.status_code == 503
    assert response.json()["status"] == "not_ready"
    assert response.json()["snapshot"]["fresh"] is False
    assert v1.status_code == 503 and v1.json()["error"]["code"] == "registry_unavailable"


def test_a_gateway_not_started_is_not_ready(gw: RunningGateway) -> None:
    """No snapshot loaded yet and no audit writer running: not ready on either count."""
    ready, body = readiness(Gateway(gw.app.gateway.settings, gw.engine))
    assert not ready and body["status"] == "not_ready"
    assert body["snapshot"]["loaded"] is False and body["snapshot"]["registry_version"] is None
    assert body["audit"]["healthy"] is False


def test_probes_answer_get_and_head_only(gw: RunningGateway) -> None:
    assert httpx.head(f"{gw.url}/readyz").status_code == 200
    response = httpx.post(f"{gw.url}/readyz")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert response.json()["error"]["code"] == "method_not_allowed"
