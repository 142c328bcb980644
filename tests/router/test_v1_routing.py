"""Routing through the real gateway with fault-injecting upstreams: fallback on transient
failures only, never after the first byte, circuit breakers, strategies, and the invariant that a
policy-denied deployment is never called (DESIGN invariant 1).

Each test builds its own route over fresh upstreams with unique deployment ids, so the shared
gateway's circuit breakers and latency statistics never carry over between tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import openai
import orjson
import pytest

from tests.fakes import FakeUpstream
from tests.router.conftest import (
    RunningGateway,
    assert_envelope,
    closed_port_url,
    deployment,
    uid,
    wait_for,
)

PROMPT = [{"role": "user", "content": "Route me."}]
COOLDOWN_S = 1.0


@pytest.fixture(scope="module")
def gw(gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return gateway_factory(breaker_failures=3, breaker_cooldown_s=COOLDOWN_S, max_attempts=3)


def make_route(
    gw: RunningGateway,
    backends: Sequence[tuple[str, str] | tuple[str, str, dict[str, Any]]],
    *,
    strategy: str = "priority",
) -> str:
    """A new route over new deployments ``(id, url[, fields])``, in this fallback order."""
    route = uid("route")
    with gw.write() as w:
        for dep_id, url, *fields in backends:
            w.create("deployment", deployment(dep_id, url, **(fields[0] if fields else {})))
        w.create(
            "route", {"name": route, "strategy": strategy, "candidates": [b[0] for b in backends]}
        )
    return route


def chat(gw: RunningGateway, route: str, **options: Any) -> Any:
    """One non-stream chat request; returns the raw response (headers + parse())."""
    return gw.openai().chat.completions.with_raw_response.create(
        model=route, messages=PROMPT, **options
    )


def served_by(gw: RunningGateway, route: str) -> str:
    return str(chat(gw, route).headers["x-provenance-deployment"])


def attempts(gw: RunningGateway, request_id: str) -> list[tuple[str, str]]:
    return [(a["deployment"], a["outcome"]) for a in gw.decision(request_id)["attempts"]]


# --- fallback on transient failures -------------------------------------------------------------


def test_connect_error_falls_back_to_the_next_candidate(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream]
) -> None:
    second = upstreams()
    a, b = uid("a"), uid("b")
    route = make_route(gw, [(a, closed_port_url()), (b, second.base_url)])
    raw = chat(gw, route)
    assert raw.headers["x-provenance-deployment"] == b
    assert raw.parse().choices[0].message.content == second.reply
    assert attempts(gw, raw.headers["x-request-id"]) == [(a, "connect_error"), (b, "ok")]


@pytest.mark.parametrize(
    ("outcome", "logged"),
    [
        ("500", "http_500"),
        ("502", "http_502"),
        ("503", "http_503"),
        ("429", "http_429"),
        ("drop", "connect_error"),
    ],
)
def test_transient_failure_falls_back(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream], outcome: str, logged: str
) -> None:
    first, second = upstreams(), upstreams()
    a, b = uid("a"), uid("b")
    route = make_route(gw, [(a, first.base_url), (b, second.base_url)])
    first.script([outcome])
    raw = chat(gw, route)
    assert raw.headers["x-provenance-deployment"] == b
    assert (first.calls, second.calls) == (1, 1)
    assert attempts(gw, raw.headers["x-request-id"]) == [(a, logged), (b, "ok")]


def test_timeout_falls_back(gw: RunningGateway, upstreams: Callable[..., FakeUpstream]) -> None:
    first, second = upstreams(), upstreams()
    first.delay_s = 5.0
    a, b = uid("a"), uid("b")
    route = make_route(gw, [(a, first.base_url, {"timeout_s": 0.3}), (b, second.base_url)])
    started = time.monotonic()
    raw = chat(gw, route)
    assert time.monotonic() - started < 3.0  # the slow backend's answer was not awaited
    assert raw.headers["x-provenance-deployment"] == b
    assert attempts(gw, raw.headers["x-request-id"]) == [(a, "timeout"), (b, "ok")]


def test_stream_falls_back_before_the_first_byte(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream]
) -> None:
    first, second = upstreams(), upstreams()
    a, b = uid("a"), uid("b")
    route = make_route(gw, [(a, first.base_url), (b, second.base_url)])
    first.script(["503"])
    with gw.openai().chat.completions.with_streaming_response.create(
        model=route, messages=PROMPT, stream=True
    ) as response:
        assert response.headers["x-provenance-deployment"] == b
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == second.reply
    assert (first.calls, second.calls) == (1, 1)


@pytest.mark.parametrize("status", ["400", "413", "422"])
def test_non_transient_error_is_not_retried(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream], status: str
) -> None:
    first, second = upstreams(), upstreams()
    a, b = uid("a"), uid("b")
    route = make_route(gw, [(a, first.base_url), (b, second.base_url)])
    first.script([status])
    with pytest.raises(openai.APIStatusError) as caught:
        chat(gw, route)
    assert caught.value.status_code == int(status)
    assert caught.value.response.json()["error"]["message"] == f"fake upstream scripted {status}"
    assert (first.calls, second.calls) == (1, 0)
    request_id = caught.value.response.headers["x-request-id"]
    assert attempts(gw, request_id) == [(a, f"http_{status}")]


def test_attempts_are_bounded_by_max_attempts(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream]
) -> None:
    fakes = [upstreams() for _ in range(4)]
    ids = [uid(f"d{i}") for i in range(4)]
    route = make_route(gw, list(zip(ids, [f.base_url for f in fakes], strict=True)))
    for fake in fakes:
        fake.script(["500"])
    with pytest.raises(openai.InternalServerError) as caught:
        chat(gw, route)
    assert caught.value.status_code == 502
    assert [f.calls for f in fakes] == [1, 1, 1, 0]
    assert len(attempts(gw, caught.value.response.headers["x-request-id"])) == 3


# --- never after the first byte ---------------------------------------------------------------


@pytest.fixture
def broken_stream(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream]
) -> tuple[str, FakeUpstream, FakeUpstream]:
    """A route whose first backend dies after two SSE frames; the second is healthy."""
    first, second = upstreams(stream_chunks=5), upstreams()
    first.fail_mid_stream_after = 2
    route = make_route(gw, [(uid("a"), first.base_url), (uid("b"), second.base_url)])
    return route, first, second


def test_sdk_sees_the_chunks_then_an_error_and_nothing_is_retried(
    gw: RunningGateway, broken_stream: tuple[str, FakeUpstream, FakeUpstream]
) -> None:
    route, first, second = broken_stream
    received = []
    stream = gw.openai().chat.completions.create(model=route, messages=PROMPT, stream=True)
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert not isinstance(caught.value, openai.APIStatusError)  # the stream had started: 200
    assert "failed mid-stream" in caught.value.message
    assert str(first.port) not in caught.value.message  # the backend's address stays inside
    assert caught.value.code == "upstream_error"
    pieces = [piece for piece in received if piece]
    assert len(pieces) == 2 and first.reply.startswith("".join(pieces))
    assert (first.calls, second.calls) == (1, 0)


def test_raw_stream_ends_with_an_error_event_and_done(
    gw: RunningGateway, broken_stream: tuple[str, FakeUpstream, FakeUpstream]
) -> None:
    route, first, second = broken_stream
    with (
        gw.http() as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": route, "messages": PROMPT, "stream": True},
        ) as response,
    ):
        assert response.status_code == 200
        body = b"".join(response.iter_bytes())
        request_id = response.headers["x-request-id"]
    frames = [f for f in body.split(b"\n\n") if f]
    assert [f.startswith(b"data: {") for f in frames[:2]] == [True, True]
    assert frames[2].startswith(b"event: error\ndata: ")
    assert frames[3:] == [b"data: [DONE]"] and body.endswith(b"\n\n")
    error = orjson.loads(frames[2].split(b"data: ", 1)[1])
    assert set(error) == {"error"}
    assert set(error["error"]) == {"message", "type", "param", "code"}
    assert error["error"]["code"] == "upstream_error"
    assert (first.calls, second.calls) == (1, 0)
    row = gw.decision(request_id)
    assert (row["status"], row["error_code"]) == ("stream_error", "upstream_stream_error")


def test_stalled_stream_times_out_with_an_error_event(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream]
) -> None:
    first, second = upstreams(stream_chunks=4), upstreams()
    first.stall_mid_stream_after = 1
    route = make_route(
        gw, [(uid("a"), first.base_url, {"timeout_s": 0.3}), (uid("b"), second.base_url)]
    )
    with gw.http() as http:
        body = http.post(
            "/v1/chat/completions", json={"model": route, "messages": PROMPT, "stream": True}
        ).content
    assert body.count(b"data: {") == 2  # one frame relayed, then the error event's data
    assert b"event: error\ndata: " in body and body.endswith(b"data: [DONE]\n\n")
    assert second.calls == 0


def test_client_disconnect_mid_stream_releases_the_upstream(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream]
) -> None:
    slow = upstreams(stream_chunks=4)
    slow.stall_mid_stream_after = 1  # the upstream keeps the stream open, silent
    route = make_route(gw, [(uid("slow"), slow.base_url, {"timeout_s": 3.0})])
    with (
        gw.http() as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": route, "messages": PROMPT, "stream": True},
        ) as response,
    ):
        request_id = response.headers["x-request-id"]
        next(response.iter_raw())  # the first frame arrived; the client goes away
    row = gw.decision(request_id)
    assert row["latency_ms"] < 1500  # released at the disconnect, not at the 3 s timeout
    assert row["status"] == "client_disconnected"


def test_client_leaving_after_done_is_a_complete_stream(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream]
) -> None:
    """The SDK hangs up once it has read [DONE]; a backend that has not closed yet must not
    turn a delivered stream into a broken-off one in the audit log."""
    lingering = upstreams(stream_chunks=3)
    lingering.stall_before_eof = True  # [DONE] sent, connection kept open
    route = make_route(gw, [(uid("linger"), lingering.base_url, {"timeout_s": 3.0})])
    with gw.openai().chat.completions.with_streaming_response.create(
        model=route, messages=PROMPT, stream=True
    ) as response:
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())
    assert chunks
    row = gw.decision(request_id)
    assert (row["status"], row["http_status"], row["error_code"]) == ("ok", 200, None)
    assert row["latency_ms"] < 1500  # the upstream was released when the client left


# --- circuit breaker ------------------------------------------------------------------------


def test_circuit_opens_after_failures_and_recovers_after_cooldown(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream]
) -> None:
    first, second = upstreams(), upstreams()
    a, b = uid("a"), uid("b")
    route = make_route(gw, [(a, first.base_url), (b, second.base_url)])
    first.script(["500", "500", "500"])  # then healthy again
    for _ in range(3):
        assert served_by(gw, route) == b
    opened = time.monotonic()
    assert first.calls == 3
    for _ in range(3):  # open: skipped without a call
        raw = chat(gw, route)
        assert raw.headers["x-provenance-deployment"] == b
    assert first.calls == 3
    assert attempts(gw, raw.headers["x-request-id"]) == [(a, "circuit_open"), (b, "ok")]
    wait_for(lambda: served_by(gw, route) == a, timeout_s=COOLDOWN_S + 5, what="half-open probe")
    assert time.monotonic() - opened >= COOLDOWN_S * 0.8
    assert first.calls == 4
    assert [served_by(gw, route) for _ in range(3)] == [a, a, a]  # closed again


def test_every_circuit_open_is_503(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream]
) -> None:
    only = upstreams()
    route = make_route(gw, [(uid("only"), only.base_url)])
    only.script(["500"] * 3)
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            chat(gw, route)
    with pytest.raises(openai.InternalServerError) as caught:
        chat(gw, route)
    error = assert_envelope(
        caught.value.response, 503, type="api_error", code="no_backend_available"
    )
    assert "circuit_open" in error["message"]
    assert only.calls == 3


# --- policy: a denied deployment is never called ------------------------------------------------


def test_denied_deployment_is_never_called_even_when_it_is_the_only_healthy_one(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream]
) -> None:
    healthy, failing = upstreams(), upstreams()
    failing.script(["500"] * 100)
    denied, bad, gone = uid("x") + "-denied", uid("bad"), uid("gone")
    route = make_route(
        gw, [(denied, healthy.base_url), (bad, failing.base_url), (gone, closed_port_url())]
    )
    statuses = []
    for _ in range(6):  # failures, then open circuits: the denied one stays untouched
        with pytest.raises(openai.APIStatusError) as caught:
            chat(gw, route)
        statuses.append(caught.value.status_code)
    assert statuses[:3] == [502, 502, 502] and statuses[-1] == 503
    assert healthy.calls == 0
    row = gw.decision(caught.value.response.headers["x-request-id"])
    verdicts = {c["deployment"]: (c["allowed"], c["rule_ids"]) for c in row["candidates"]}
    assert verdicts[denied] == (False, ["test-deny-denied-deployments"])
    assert verdicts[bad][0] and verdicts[gone][0]
    assert denied not in {a["deployment"] for a in row["attempts"]}


def test_only_denied_candidates_is_403_without_a_call(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream]
) -> None:
    healthy = upstreams()
    route = make_route(gw, [(uid("y") + "-denied", healthy.base_url)])
    for stream in (False, True):
        with pytest.raises(openai.PermissionDeniedError) as caught:
            gw.openai().chat.completions.create(model=route, messages=PROMPT, stream=stream)
        assert caught.value.code == "provenance_policy_denied"
    assert healthy.calls == 0


def test_denied_deployment_skipped_in_fallback_order(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream]
) -> None:
    first, denied_up, last = upstreams(), upstreams(), upstreams()
    first.script(["503"])
    a, d, c = uid("a"), uid("z") + "-denied", uid("c")
    route = make_route(gw, [(a, first.base_url), (d, denied_up.base_url), (c, last.base_url)])
    raw = chat(gw, route)
    assert raw.headers["x-provenance-deployment"] == c
    assert (first.calls, denied_up.calls, last.calls) == (1, 0, 1)


# --- strategies -----------------------------------------------------------------------------


def test_priority_uses_the_first_healthy_candidate(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream]
) -> None:
    first, second = upstreams(), upstreams()
    a, b = uid("a"), uid("b")
    route = make_route(gw, [(a, first.base_url), (b, second.base_url)])
    assert {served_by(gw, route) for _ in range(10)} == {a}
    assert (first.calls, second.calls) == (10, 0)


def test_model_id_expands_to_its_deployments_by_priority(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream]
) -> None:
    low, high = upstreams(), upstreams()
    model, a, b = f"acme/{uid('prio')}", uid("later"), uid("sooner")
    with gw.write() as w:
        w.create(
            "model",
            {
                "id": model,
                "developer": "acme",
                "license": "Apache-2.0",
                "review_status": "approved",
            },
        )
        w.create("deployment", deployment(a, low.base_url, model=model, priority=20))
        w.create("deployment", deployment(b, high.base_url, model=model, priority=10))
    assert served_by(gw, model) == b
    high.script(["500"])
    assert served_by(gw, model) == a


def test_weighted_spreads_traffic_by_weight(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream]
) -> None:
    heavy, light = upstreams(), upstreams()
    a, b = uid("heavy"), uid("light")
    route = make_route(
        gw,
        [(a, heavy.base_url, {"weight": 3}), (b, light.base_url, {"weight": 1})],
        strategy="weighted",
    )
    served = [served_by(gw, route) for _ in range(80)]
    # P(heavy first) = 3/4: both are used, and heavy clearly more (P(fail) < 1e-5)
    assert served.count(b) > 0
    assert served.count(a) > served.count(b)
    assert (heavy.calls, light.calls) == (served.count(a), served.count(b))


def test_weight_zero_is_only_a_fallback(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream]
) -> None:
    drained, live = upstreams(), upstreams()
    a, b = uid("drained"), uid("live")
    route = make_route(
        gw,
        [(a, drained.base_url, {"weight": 0}), (b, live.base_url, {"weight": 1})],
        strategy="weighted",
    )
    assert {served_by(gw, route) for _ in range(30)} == {b}
    live.script(["503"])
    assert served_by(gw, route) == a


def test_least_latency_prefers_the_faster_backend(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream]
) -> None:
    slow, fast = upstreams(), upstreams()
    slow.delay_s = 0.2
    a, b = uid("slow"), uid("fast")
    route = make_route(gw, [(a, slow.base_url), (b, fast.base_url)], strategy="least-latency")
    served = [served_by(gw, route) for _ in range(8)]
    # unmeasured backends go first (each once), then the measured faster one wins
    assert served[:2] == [a, b]
    assert served[2:] == [b] * 6
    assert slow.calls == 1
