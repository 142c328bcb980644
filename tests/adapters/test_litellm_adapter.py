"""LiteLLMAdapter through a non-default provider route, against the fake and the real model."""

from __future__ import annotations

import subprocess
import sys
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
from adapters.litellm_adapter import LiteLLMAdapter
from adapters.local_llamacpp import LocalModelServer
from adapters.openai_compat import OpenAICompatAdapter, make_client
from tests.fakes import FakeUpstream, closed_port_url

# LiteLLM silences these pydantic warnings with global filters when it is imported; pytest resets
# global filters around every test, so the same filters are restated here.
LITELLM_OWN_WARNING_FILTERS = [
    "ignore:.*`ReadOnly` qualifier.*",
    "ignore:.*conflict with protected namespace.*",
    "ignore:.*Accessing the.*attribute on the instance is deprecated.*",
]
pytestmark = [
    pytest.mark.anyio,
    *(pytest.mark.filterwarnings(rule) for rule in LITELLM_OWN_WARNING_FILTERS),
]

MESSAGES = [{"role": "user", "content": "hi"}]
CHAT: dict[str, Any] = {"model": "public-name", "messages": MESSAGES}
DONE = b"data: [DONE]\n\n"


def target(base_url: str, **overrides: Any) -> BackendTarget:
    fields: dict[str, Any] = {
        "deployment_id": "dep-litellm",
        "kind": "litellm",
        "base_url": base_url,
        "upstream_model": "hosted_vllm/served-name",
    }
    return BackendTarget(**{**fields, **overrides})


@pytest.fixture
async def adapter() -> AsyncIterator[LiteLLMAdapter]:
    adapter = LiteLLMAdapter()
    yield adapter
    await adapter.close()


async def send(
    adapter: LiteLLMAdapter,
    up: BackendTarget,
    body: dict[str, Any],
    endpoint: Endpoint = "chat/completions",
) -> UpstreamResponse:
    stream = bool(body.get("stream"))
    return await adapter.send(up, endpoint, orjson.dumps(body), body, stream)


async def sse_events(response: UpstreamResponse) -> list[dict[str, Any]]:
    assert response.chunks is not None
    frames = [chunk async for chunk in response.chunks]
    assert frames[-1] == DONE
    assert all(f.startswith(b"data: ") and f.endswith(b"\n\n") for f in frames)
    return [orjson.loads(f.removeprefix(b"data: ")) for f in frames[:-1]]


def test_importing_the_adapter_does_not_import_litellm() -> None:
    code = (
        "import sys, adapters.litellm_adapter as m; m.LiteLLMAdapter(); "
        "assert 'litellm' not in sys.modules, 'litellm imported eagerly'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# -- against the fake upstream -------------------------------------------------------------


async def test_chat_uses_the_upstream_model_and_passes_fields(
    adapter: LiteLLMAdapter, fake_upstream: FakeUpstream
) -> None:
    response = await send(adapter, target(fake_upstream.base_url), {**CHAT, "temperature": 0.5})

    received = fake_upstream.requests[0]
    assert received.path == "/v1/chat/completions"
    assert received.json["model"] == "served-name"
    assert received.json["messages"] == MESSAGES and received.json["temperature"] == 0.5
    assert response.status == 200 and response.content_type == "application/json"
    assert response.body is not None
    answer = orjson.loads(response.body)
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == fake_upstream.reply
    assert answer["usage"]["total_tokens"] == 10


async def test_openai_route_sends_the_api_key(
    adapter: LiteLLMAdapter, fake_upstream: FakeUpstream
) -> None:
    up = target(fake_upstream.base_url, upstream_model="openai/served-name", api_key="sk-l")

    await send(adapter, up, CHAT)

    assert fake_upstream.requests[0].headers["authorization"] == "Bearer sk-l"
    assert fake_upstream.requests[0].json["model"] == "served-name"


async def test_client_cannot_redirect_or_fake_the_call(
    adapter: LiteLLMAdapter, fake_upstream: FakeUpstream
) -> None:
    hostile = {
        **CHAT,
        "api_base": closed_port_url(),
        "base_url": closed_port_url(),
        "api_key": "sk-stolen",
        "extra_headers": {"x-injected": "1"},
        "mock_response": "not from the upstream",
    }

    response = await send(adapter, target(fake_upstream.base_url), hostile)

    assert fake_upstream.calls == 1
    headers = fake_upstream.requests[0].headers
    assert "x-injected" not in headers and "sk-stolen" not in headers.get("authorization", "")
    assert response.body is not None
    assert orjson.loads(response.body)["choices"][0]["message"]["content"] == fake_upstream.reply


async def test_missing_upstream_model_is_refused(
    adapter: LiteLLMAdapter, fake_upstream: FakeUpstream
) -> None:
    with pytest.raises(ValueError, match="upstream_model"):
        await send(adapter, target(fake_upstream.base_url, upstream_model=None), CHAT)
    assert fake_upstream.calls == 0


async def test_chat_stream_is_openai_sse(
    adapter: LiteLLMAdapter, fake_upstream: FakeUpstream
) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}

    response = await send(adapter, target(fake_upstream.base_url), body)
    events = await sse_events(response)

    assert response.content_type == "text/event-stream" and response.body is None
    assert fake_upstream.requests[0].json["stream"] is True
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == fake_upstream.reply
    assert events[-1]["usage"]["total_tokens"] == 10


async def test_text_completion_and_stream(
    adapter: LiteLLMAdapter, fake_upstream: FakeUpstream
) -> None:
    body: dict[str, Any] = {"model": "public-name", "prompt": "Once"}
    up = target(fake_upstream.base_url)

    plain = await send(adapter, up, body, "completions")
    streamed = await send(adapter, up, {**body, "stream": True}, "completions")

    assert plain.body is not None
    assert orjson.loads(plain.body)["choices"][0]["text"] == fake_upstream.reply
    events = await sse_events(streamed)
    assert "".join(e["choices"][0]["text"] or "" for e in events) == fake_upstream.reply
    assert [r.path for r in fake_upstream.requests] == ["/v1/completions"] * 2


async def test_embeddings(adapter: LiteLLMAdapter, fake_upstream: FakeUpstream) -> None:
    body = {"model": "public-name", "input": ["a b", "c"]}

    response = await send(adapter, target(fake_upstream.base_url), body, "embeddings")

    assert response.body is not None
    data = orjson.loads(response.body)["data"]
    assert [len(item["embedding"]) for item in data] == [fake_upstream.embedding_dim] * 2
    assert fake_upstream.requests[0].json["input"] == ["a b", "c"]


@pytest.mark.parametrize(("status", "transient"), [(500, True), (429, True), (400, False)])
async def test_http_errors_keep_their_status(
    adapter: LiteLLMAdapter, fake_upstream: FakeUpstream, status: int, transient: bool
) -> None:
    fake_upstream.script([str(status)])

    with pytest.raises(UpstreamHTTPError) as caught:
        await send(adapter, target(fake_upstream.base_url), CHAT)

    assert (caught.value.status, caught.value.transient) == (status, transient)
    assert "fake upstream scripted" in orjson.loads(caught.value.body)["error"]["message"]
    assert fake_upstream.calls == 1  # LiteLLM does not retry behind the router's back


@pytest.mark.parametrize("route", ["hosted_vllm/served-name", "openai/served-name"])
async def test_closed_port_is_a_connect_error(adapter: LiteLLMAdapter, route: str) -> None:
    up = target(closed_port_url(), upstream_model=route, api_key="sk-x")

    with pytest.raises(UpstreamConnectError) as caught:
        await send(adapter, up, CHAT)

    assert caught.value.transient and caught.value.deployment_id == "dep-litellm"


async def test_dropped_connection_is_a_connect_error(
    adapter: LiteLLMAdapter, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(["drop"])

    with pytest.raises(UpstreamConnectError):
        await send(adapter, target(fake_upstream.base_url), CHAT)


async def test_slow_upstream_is_a_timeout(
    adapter: LiteLLMAdapter, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.delay_s = 30.0

    with pytest.raises(UpstreamTimeout):
        await send(adapter, target(fake_upstream.base_url, timeout_s=0.3), CHAT)


async def test_mid_stream_failure_raises_upstream_error(
    adapter: LiteLLMAdapter, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.fail_mid_stream_after = 2
    response = await send(adapter, target(fake_upstream.base_url), {**CHAT, "stream": True})
    assert response.chunks is not None
    received: list[bytes] = []

    with pytest.raises(UpstreamError):
        async for frame in response.chunks:
            received.append(frame)

    assert len(received) <= 2 and DONE not in received


async def test_aclose_before_reading_closes_the_stream(
    adapter: LiteLLMAdapter, fake_upstream: FakeUpstream
) -> None:
    response = await send(adapter, target(fake_upstream.base_url), {**CHAT, "stream": True})

    await response.aclose()

    assert response.chunks is not None
    assert [frame async for frame in response.chunks] == []


async def test_health_loads_litellm(adapter: LiteLLMAdapter) -> None:
    assert await adapter.health(target(closed_port_url())) is True
    assert "litellm" in sys.modules


# -- against the real local model ----------------------------------------------------------


@pytest.mark.slow
async def test_real_model_answers_like_the_fast_path(
    adapter: LiteLLMAdapter, local_model: LocalModelServer
) -> None:
    body: dict[str, Any] = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi!"}]}
    body.update(temperature=0, max_tokens=12)
    local = BackendTarget(deployment_id="local", kind="local", base_url=local_model.base_url)
    via_litellm = target(local_model.base_url, upstream_model="openai/smollm2", api_key="none")

    through_litellm = await send(adapter, via_litellm, body)
    fast = OpenAICompatAdapter(make_client())
    try:
        direct = await fast.send(local, "chat/completions", orjson.dumps(body), body, False)
    finally:
        await fast.close()

    assert through_litellm.body is not None and direct.body is not None
    texts = [
        orjson.loads(r.body)["choices"][0]["message"]["content"] for r in (through_litellm, direct)
    ]
    assert texts[0].strip() and texts[0] == texts[1]
