"""A backend that echoes the API key the gateway sent it (in error bodies of every status, as
JSON fields or plain text, and in a stream's SSE error event): the key reaches no client
response, no log line, no audit row and no export (DESIGN invariant 3).

Client-facing errors are rebuilt from the sanitised OpenAI fields of the backend's error only;
the canary key is a fresh random value, so any occurrence is a leak.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from registry.gitops import export
from tests.fakes import FakeUpstream, RecordedRequest
from tests.router.conftest import RunningGateway, deployment, row_json, uid

CANARY = f"sk-canary-{uuid.uuid4().hex}"
STATUSES = ["400", "401", "403", "404", "422", "429", "500"]
PROMPT = [{"role": "user", "content": "Leak nothing."}]


@pytest.fixture(scope="module")
def gw(gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return gateway_factory(max_attempts=1)


def echo_json(request: RecordedRequest) -> bytes:
    auth = request.headers.get("authorization", "")
    return (
        b'{"error": {"message": "Incorrect API key provided: %s (%s)", "type": "%s",'
        b' "param": "%s", "code": "%s", "extra": "%s"}}'
        % ((auth.encode(), CANARY.encode()) + (auth.encode(),) * 4)
    )


def echo_text(request: RecordedRequest) -> bytes:
    return b"<html>bad key " + request.headers.get("authorization", "").encode() + b"</html>"


@pytest.fixture
def canary(
    gw: RunningGateway,
    upstreams: Callable[..., FakeUpstream],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[str, FakeUpstream]]:
    """A route to one deployment whose key is the canary, served by an echoing fake."""
    env = f"CANARY_KEY_{uuid.uuid4().hex}".upper()
    monkeypatch.setenv(env, CANARY)
    fake = upstreams()
    dep, route = uid("canary"), uid("route")
    with gw.write() as w:
        w.create("deployment", deployment(dep, fake.base_url, secret_ref=env))
        w.create("route", {"name": route, "candidates": [dep]})
    yield route, fake


def leaks(gw: RunningGateway, response: httpx.Response, caplog: pytest.LogCaptureFixture) -> Any:
    """Every place the canary must not be: the response, the log, the audit row, the export."""
    request_id = response.headers["x-request-id"]
    places = {
        "response body": response.text,
        "response headers": str(response.headers.multi_items()),
        "log": caplog.text,
        "audit row": row_json(gw.decision(request_id)),
        "export": export(gw.engine),
    }
    return {where: text.count(CANARY) for where, text in places.items() if CANARY in text}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("echo", [echo_json, echo_text], ids=["json-body", "text-body"])
@pytest.mark.parametrize("status", STATUSES)
def test_a_backend_echoing_its_key_in_an_error_leaks_it_nowhere(
    gw: RunningGateway,
    canary: tuple[str, FakeUpstream],
    caplog: pytest.LogCaptureFixture,
    status: str,
    echo: Callable[[RecordedRequest], bytes],
    stream: bool,
) -> None:
    route, fake = canary
    fake.error_body = echo
    fake.script([status])
    caplog.set_level(logging.DEBUG)
    body = {"model": route, "messages": PROMPT, "stream": stream}
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json=body)
    assert fake.requests[-1].headers["authorization"] == f"Bearer {CANARY}"  # it was sent
    assert response.status_code >= 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    if status in ("401", "403", "404"):  # the backend's (sanitised) words went to the log
        assert f"answered {status}" in caplog.text
    assert leaks(gw, response, caplog) == {}


def test_a_key_echoed_in_a_stream_error_event_is_redacted(
    gw: RunningGateway, canary: tuple[str, FakeUpstream], caplog: pytest.LogCaptureFixture
) -> None:
    route, fake = canary
    fake.error_body = echo_json
    fake.stream_error_after = 1
    caplog.set_level(logging.DEBUG)
    body = {"model": route, "messages": PROMPT, "stream": True}
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200 and "event: error" in response.text
    assert "[redacted]" in response.text
    assert leaks(gw, response, caplog) == {}


def test_a_backend_verdict_keeps_its_openai_fields_and_sdk_class(
    gw: RunningGateway, canary: tuple[str, FakeUpstream]
) -> None:
    route, fake = canary
    fake.error_body = echo_json
    fake.script(["422"])
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        gw.openai().chat.completions.create(model=route, messages=PROMPT)  # type: ignore[arg-type]
    error = caught.value.response.json()["error"]
    assert error["message"].startswith("Incorrect API key provided: Bearer [redacted]")
    assert error["param"] == "Bearer [redacted]" and "extra" not in error


def test_a_long_backend_message_is_capped(
    gw: RunningGateway, canary: tuple[str, FakeUpstream]
) -> None:
    route, fake = canary
    fake.error_body = lambda _: (
        b'{"error": {"message": "%s", "type": "invalid_request_error"}}' % (b"x" * 10_000)
    )
    fake.script(["400"])
    with pytest.raises(openai.BadRequestError) as caught:
        gw.openai().chat.completions.create(model=route, messages=PROMPT)  # type: ignore[arg-type]
    assert len(caught.value.response.json()["error"]["message"]) == 500
