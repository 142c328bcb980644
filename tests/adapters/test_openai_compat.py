"""OpenAICompatAdapter against a real HTTP upstream (the fake): passthrough, errors, streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from adapters.base import (
    BackendTarget,
    Endpoint,
    UpstreamConnectError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamResponse,
    UpstreamTimeout,
)
from adapters.http1 import Limits
from adapters.openai_compat import OpenAICompatAdapter, _Redactor, make_client
from tests.fakes import FakeUpstream, closed_port_url

pytestmark = pytest.mark.anyio

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


def target(base_url: str, **overrides: Any) -> BackendTarget:
    fields: dict[str, Any] = {"deployment_id": "dep-1", "kind": "openai", "base_url": base_url}
    return BackendTarget(**{**fields, **overrides})


def encode(body: dict[str, Any]) -> tuple[bytes, dict[str, object]]:
    return orjson.dumps(body), dict(body)


@pytest.fixture
async def adapter() -> AsyncIterator[OpenAICompatAdapter]:
    adapter = OpenAICompatAdapter(make_client())
    yield adapter
    await adapter.close()


@pytest.fixture
async def one_conn_adapter() -> AsyncIterator[OpenAICompatAdapter]:
    """A pool of one connection: a response that is not released makes the next call hang."""
    adapter = OpenAICompatAdapter(make_client(limits=Limits(connections=1, per_origin=1)))
    yield adapter
    await adapter.close()


async def collect(response: UpstreamResponse) -> bytes:
    assert response.chunks is not None
    return b"".join([chunk async for chunk in response.chunks])


# -- passthrough ---------------------------------------------------------------------------


async def test_non_stream_forwards_client_bytes_untouched(
    adapter: OpenAICompatAdapter, fake_upstream: FakeUpstream
) -> None:
    raw = b'{"model":  "fake-model", "messages": [{"role": "user", "content": "hi"}], "x_y": 1}'
    body = orjson.loads(raw)

    response = await adapter.send(
        target(fake_upstream.base_url), "chat/completions", raw, body, False
    )

    assert fake_upstream.requests[0].raw == raw
    assert fake_upstream.requests[0].path == "/v1/chat/completions"
    assert response.status == 200
    assert response.content_type.startswith("application/json")
    assert response.chunks is None and response.body is not None
    assert orjson.loads(response.body)["choices"][0]["message"]["content"] == fake_upstream.reply


async def test_same_upstream_model_keeps_bytes(
    adapter: OpenAICompatAdapter, fake_upstream: FakeUpstream
) -> None:
    raw = b'{"model":"fake-model" ,"messages":[]}'
    up = target(fake_upstream.base_url, upstream_model="fake-model")

    await adapter.send(up, "chat/completions", raw, orjson.loads(raw), False)

    assert fake_upstream.requests[0].raw == raw


async def test_upstream_model_rewrites_only_the_model(
    adapter: OpenAICompatAdapter, fake_upstream: FakeUpstream
) -> None:
    raw, body = encode({**CHAT, "temperature": 0, "x_extra": {"a": [1, 2]}})
    up = target(fake_upstream.base_url, upstream_model="served-name")

    response = await adapter.send(up, "chat/completions", raw, body, False)

    assert fake_upstream.requests[0].json == {**body, "model": "served-name"}
    assert response.body is not None
    assert orjson.loads(response.body)["model"] == "served-name"


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("completions", {"model": "fake-model", "prompt": "Once"}),
        ("embeddings", {"model": "fake-model", "input": ["a b", "c"]}),
    ],
)
async def test_other_endpoints_pass_through(
    adapter: OpenAICompatAdapter,
    fake_upstream: FakeUpstream,
    endpoint: Endpoint,
    body: dict[str, Any],
) -> None:
    raw, parsed = encode(body)

    response = await adapter.send(target(fake_upstream.base_url), endpoint, raw, parsed, False)

    assert fake_upstream.requests[0].path == f"/v1/{endpoint}"
    assert fake_upstream.requests[0].raw == raw
    assert response.body is not None and response.status == 200


async def test_api_key_becomes_bearer_header(
    adapter: OpenAICompatAdapter, fake_upstream: FakeUpstream
) -> None:
    raw, body = encode(CHAT)

    await adapter.send(
        target(fake_upstream.base_url, api_key="sk-x"), "chat/completions", raw, body, False
    )
    await adapter.send(target(fake_upstream.base_url), "chat/completions", raw, body, False)

    with_key, without_key = (r.headers for r in fake_upstream.requests)
    assert with_key["authorization"] == "Bearer sk-x"
    assert "authorization" not in without_key
    assert with_key["content-type"] == "application/json"
    assert with_key["accept-encoding"] == "identity"


# -- errors before the first byte ----------------------------------------------------------


async def test_closed_port_is_a_connect_error(adapter: OpenAICompatAdapter) -> None:
    raw, body = encode(CHAT)

    with pytest.raises(UpstreamConnectError) as caught:
        await adapter.send(target(closed_port_url()), "chat/completions", raw, body, False)

    assert caught.value.transient and caught.value.status == 502
    assert caught.value.deployment_id == "dep-1"


async def test_dropped_connection_is_a_connect_error(
    adapter: OpenAICompatAdapter, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(["drop"])
    raw, body = encode(CHAT)

    with pytest.raises(UpstreamConnectError):
        await adapter.send(target(fake_upstream.base_url), "chat/completions", raw, body, False)


@pytest.mark.parametrize("stream", [False, True])
async def test_no_headers_before_deadline_is_a_timeout(
    adapter: OpenAICompatAdapter, fake_upstream: FakeUpstream, stream: bool
) -> None:
    fake_upstream.delay_s = 30.0
    raw, body = encode({**CHAT, "stream": stream})
    up = target(fake_upstream.base_url, timeout_s=0.2)

    with pytest.raises(UpstreamTimeout) as caught:
        await adapter.send(up, "chat/completions", raw, body, stream)

    assert caught.value.transient and caught.value.status == 504


@pytest.mark.parametrize(
    ("status", "transient"), [(500, True), (503, True), (429, True), (400, False), (404, False)]
)
@pytest.mark.parametrize("stream", [False, True])
async def test_http_error_status_carries_body(
    adapter: OpenAICompatAdapter,
    fake_upstream: FakeUpstream,
    status: int,
    transient: bool,
    stream: bool,
) -> None:
    fake_upstream.script([str(status)])
    raw, body = encode({**CHAT, "stream": stream})

    with pytest.raises(UpstreamHTTPError) as caught:
        await adapter.send(target(fake_upstream.base_url), "chat/completions", raw, body, stream)

    error = caught.value
    assert (error.status, error.transient) == (status, transient)
    assert orjson.loads(error.body)["error"]["message"] == f"fake upstream scripted {status}"


async def test_error_responses_release_their_connection(
    one_conn_adapter: OpenAICompatAdapter, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(["500", "429", "400", "ok"])
    raw, body = encode(CHAT)
    up = target(fake_upstream.base_url, timeout_s=2.0)

    for _ in range(3):
        with pytest.raises(UpstreamHTTPError):
            await one_conn_adapter.send(up, "chat/completions", raw, body, False)
    response = await one_conn_adapter.send(up, "chat/completions", raw, body, False)

    assert response.status == 200 and fake_upstream.calls == 4


# -- streams -------------------------------------------------------------------------------


async def test_stream_relays_upstream_bytes(
    adapter: OpenAICompatAdapter, fake_upstream: FakeUpstream
) -> None:
    raw, body = encode({**CHAT, "stream": True, "stream_options": {"include_usage": True}})

    response = await adapter.send(
        target(fake_upstream.base_url), "chat/completions", raw, body, True
    )
    data = await collect(response)

    assert response.content_type == "text/event-stream"
    assert response.body is None
    frames = data.split(b"\n\n")
    assert frames[-2:] == [b"data: [DONE]", b""]
    events = [orjson.loads(f.removeprefix(b"data: ")) for f in frames[:-2]]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text == fake_upstream.reply
    assert events[-1]["usage"]["total_tokens"] > 0


async def test_mid_stream_disconnect_raises_after_the_frames_sent(
    adapter: OpenAICompatAdapter, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.fail_mid_stream_after = 2
    raw, body = encode({**CHAT, "stream": True})
    response = await adapter.send(
        target(fake_upstream.base_url), "chat/completions", raw, body, True
    )
    assert response.chunks is not None
    received: list[bytes] = []

    with pytest.raises(UpstreamConnectError) as caught:
        async for chunk in response.chunks:
            received.append(chunk)

    assert b"".join(received).count(b"data: ") == 2
    assert caught.value.deployment_id == "dep-1"


async def test_silent_stream_times_out_between_chunks(
    adapter: OpenAICompatAdapter, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.stall_mid_stream_after = 1
    raw, body = encode({**CHAT, "stream": True})
    up = target(fake_upstream.base_url, timeout_s=0.3)
    response = await adapter.send(up, "chat/completions", raw, body, True)

    with pytest.raises(UpstreamTimeout):
        await collect(response)


async def test_stream_error_after_end_keeps_iterator_finished(
    adapter: OpenAICompatAdapter, fake_upstream: FakeUpstream
) -> None:
    raw, body = encode({**CHAT, "stream": True})
    response = await adapter.send(
        target(fake_upstream.base_url), "chat/completions", raw, body, True
    )
    await collect(response)

    assert await collect(response) == b""
    await response.aclose()  # idempotent after exhaustion


@pytest.mark.parametrize("read_first", [False, True])
async def test_aclose_releases_an_unfinished_stream(
    one_conn_adapter: OpenAICompatAdapter, fake_upstream: FakeUpstream, read_first: bool
) -> None:
    fake_upstream.stall_mid_stream_after = 1  # the first stream never ends by itself
    raw, body = encode({**CHAT, "stream": True})
    up = target(fake_upstream.base_url, timeout_s=2.0)
    response = await one_conn_adapter.send(up, "chat/completions", raw, body, True)
    assert response.chunks is not None
    if read_first:
        assert (await anext(response.chunks)).startswith(b"data: ")

    await response.aclose()
    fake_upstream.stall_mid_stream_after = None
    raw, body = encode(CHAT)
    again = await one_conn_adapter.send(up, "chat/completions", raw, body, False)

    assert again.status == 200


# -- health --------------------------------------------------------------------------------


async def test_health(adapter: OpenAICompatAdapter, fake_upstream: FakeUpstream) -> None:
    assert await adapter.health(target(fake_upstream.base_url, api_key="sk-h")) is True
    assert fake_upstream.requests[0].path == "/v1/models"
    assert fake_upstream.requests[0].headers["authorization"] == "Bearer sk-h"

    fake_upstream.script(["503"])
    assert await adapter.health(target(fake_upstream.base_url)) is False
    assert await adapter.health(target(closed_port_url())) is False


async def test_health_is_bounded_by_the_target_timeout(
    adapter: OpenAICompatAdapter, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.delay_s = 30.0

    assert await adapter.health(target(fake_upstream.base_url, timeout_s=0.2)) is False


async def test_errors_are_upstream_errors(adapter: OpenAICompatAdapter) -> None:
    """The router catches UpstreamError only: every failure must be one."""
    raw, body = encode(CHAT)

    with pytest.raises(UpstreamError):
        await adapter.send(target("http://127.0.0.1:1/v1"), "chat/completions", raw, body, False)


async def test_unusable_backend_settings_are_upstream_errors_that_hide_the_key(
    adapter: OpenAICompatAdapter, fake_upstream: FakeUpstream
) -> None:
    raw, body = encode(CHAT)
    bad_key = target(fake_upstream.base_url, api_key="sk-secret\r\nX-Injected: 1")
    with pytest.raises(UpstreamConnectError, match="line breaks") as caught:
        await adapter.send(bad_key, "chat/completions", raw, body, False)
    assert "sk-secret" not in str(caught.value) and fake_upstream.calls == 0
    with pytest.raises(UpstreamConnectError, match="not an http"):
        await adapter.send(target("ftp://example/v1"), "chat/completions", raw, body, False)
    assert await adapter.health(bad_key) is False


# -- secrets in relayed bytes --------------------------------------------------------------


@pytest.mark.parametrize("cut", range(1, 30))
def test_a_key_split_across_stream_chunks_is_redacted(cut: int) -> None:
    key = b"sk-canary-0123456789"
    stream = b'data: {"error": "bad key ' + key + b'"}\n\ndata: [DONE]\n\n'
    redactor = _Redactor(key)
    relayed = redactor.feed(stream[:cut]) + redactor.feed(stream[cut:]) + redactor.flush()
    assert relayed == stream.replace(key, b"[redacted]")


def test_a_chunk_that_cannot_begin_the_key_is_relayed_at_once() -> None:
    redactor = _Redactor(b"sk-canary-0123456789")
    assert redactor.feed(b"data: {}\n\n") == b"data: {}\n\n"
    assert redactor.feed(b"data: s") == b"data: "  # "s" may begin the key: held back
    assert redactor.feed(b"o\n\n") == b"so\n\n"
