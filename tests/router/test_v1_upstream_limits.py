"""The gateway's own limits, through the real gateway: a full connection pool is the gateway's
saturation (503 ``gateway_saturated``, no circuit opened, nothing retried elsewhere), a backend
answer past the size cap is a clear 502, a request body past its cap a 413."""

from __future__ import annotations

import gc
import socket
import types
from collections.abc import Callable

import pytest

from tests.fakes import FakeUpstream
from tests.router.conftest import RunningGateway, assert_envelope, deployment, uid

PROMPT = [{"role": "user", "content": "Limits."}]


@pytest.fixture(scope="module")
def gw(gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return gateway_factory(
        breaker_failures=2,
        breaker_cooldown_s=60.0,
        max_attempts=3,
        upstream_max_connections_per_origin=1,
        upstream_pool_timeout_s=0.2,
        upstream_max_body_bytes=4096,
        max_request_body_bytes=64 * 1024,
    )


def route_over(gw: RunningGateway, *urls: str) -> tuple[str, list[str]]:
    route, ids = uid("route"), [uid("d") for _ in urls]
    with gw.write() as w:
        for dep_id, url in zip(ids, urls, strict=True):
            w.create("deployment", deployment(dep_id, url))
        w.create("route", {"name": route, "candidates": ids})
    return route, ids


def test_a_full_pool_is_the_gateways_saturation_not_the_backends_failure(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream]
) -> None:
    busy, spare = upstreams(), upstreams()
    route, (first, _) = route_over(gw, busy.base_url, spare.base_url)
    busy.stall_mid_stream_after = 1
    body = {"model": route, "messages": PROMPT}
    with gw.http() as http, gw.http() as other:
        stream = {**body, "stream": True}
        with http.stream("POST", "/v1/chat/completions", json=stream) as held:
            frames = held.iter_bytes()  # kept: a dropped iterator closes the response
            next(frames)  # the one connection to `busy` is in use
            for _ in range(3):  # more than breaker_failures
                response = other.post("/v1/chat/completions", json=body)
                error = assert_envelope(response, 503, type="api_error", code="gateway_saturated")
                assert "no free connection" in error["message"]
                row = gw.decision(response.headers["x-request-id"])
                assert [a["outcome"] for a in row["attempts"]] == ["pool_timeout"]
                assert row["error_code"] == "gateway_saturated"
        busy.stall_mid_stream_after = None
        served = other.post("/v1/chat/completions", json=body)  # the circuit never opened
    assert served.status_code == 200 and served.headers["x-provenance-deployment"] == first
    assert spare.calls == 0  # not retried elsewhere as if the backend had failed
    assert busy.calls == 2


def test_a_backend_answer_past_the_size_cap_is_a_clear_error(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream]
) -> None:
    fake = upstreams(reply="x" * 10_000)
    route, _ = route_over(gw, fake.base_url)
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json={"model": route, "messages": PROMPT})
    error = assert_envelope(response, 502, type="api_error", code="upstream_response_too_large")
    assert "size limits" in error["message"]
    with gw.http() as http:  # a stream is not capped: backpressure bounds it
        stream = {"model": route, "messages": PROMPT, "stream": True}
        assert "x" * 100 in http.post("/v1/chat/completions", json=stream).text


def test_a_request_body_past_the_setting_is_refused(gw: RunningGateway) -> None:
    big = {"model": "acme/alpha", "messages": [{"role": "user", "content": "x" * 70_000}]}
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json=big)
    assert_envelope(response, 413, type="invalid_request_error", code="request_too_large")
    port = int(gw.url.rsplit(":", 1)[1])
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 999999999\r\n"
        f"Authorization: Bearer {gw.keys['apps']}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())  # declared, never sent: refused before it is read
        assert sock.recv(65536).startswith(b"HTTP/1.1 413 ")


REQUEST_FRAMES = {"_serve_operation", "call", "_call_once", "attempt_in_order", "_fall_back"}


@pytest.mark.parametrize("outcomes", [["413"], ["500", "500", "500"]], ids=["final", "fallback"])
def test_a_failed_request_leaves_no_cycle_holding_its_body(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream], outcomes: list[str]
) -> None:
    """A request's frames hold its body; a failure kept in a reference cycle with them holds
    it until a full collection (which big bodies do not trigger): that was 2 GiB of RSS after
    bursts of 30 MiB requests. Once it is answered and audited, none of a failed request's
    frames may be alive or left as cyclic garbage (the collector is off meanwhile)."""
    fakes = [upstreams() for _ in range(3)]
    route, _ = route_over(gw, *(f.base_url for f in fakes))
    for fake, outcome in zip(fakes, outcomes, strict=False):
        fake.script([outcome])
    body = {"model": route, "messages": [{"role": "user", "content": "x" * 1000}]}
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        with gw.http() as http:
            response = http.post("/v1/chat/completions", json=body)
        gw.decision(response.headers["x-request-id"])  # the audit writer is done with it
        gc.collect()
        kept = [  # alive (held by something) or cyclic garbage
            o.f_code.co_name
            for o in gc.get_objects() + gc.garbage
            if isinstance(o, types.FrameType) and o.f_code.co_name in REQUEST_FRAMES
        ]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert response.status_code in (413, 502)
    assert kept == []


def test_a_prompt_that_kills_its_backend_reaches_it_once(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream]
) -> None:
    """The backend drops the connection after reading the request (a prompt that crashes it),
    on a kept-alive connection: it is not sent to that deployment again, only to the next."""
    crashing, spare = upstreams(), upstreams()
    route, (_, second) = route_over(gw, crashing.base_url, spare.base_url)
    body = {"model": route, "messages": PROMPT}
    with gw.http() as http:
        assert http.post("/v1/chat/completions", json=body).status_code == 200  # warm the pool
        crashing.script(["drop"])
        response = http.post("/v1/chat/completions", json=body)
    assert response.headers["x-provenance-deployment"] == second
    assert (crashing.calls, spare.calls) == (2, 1)  # the warm-up, then the prompt once
    row = gw.decision(response.headers["x-request-id"])
    assert [a["outcome"] for a in row["attempts"]] == ["connect_error", "ok"]
