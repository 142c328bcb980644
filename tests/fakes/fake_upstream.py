"""A fault-injecting fake OpenAI-compatible upstream, shared by adapter and router tests.

Why it exists: the gateway's promises about failures (retry only transient errors, never call a
denied deployment, end a broken stream with an error event) can only be proven against a backend
that fails on demand and remembers what it received. The real local model cannot do either.

It is a real HTTP server (aiohttp.web on 127.0.0.1, port 0) running on its own event loop in a
background thread, so it works from sync tests, async tests and a gateway running in-process.

    with FakeUpstream() as up:
        up.script(["500", "429", "ok"])      # outcomes of the next three requests
        up.fail_mid_stream_after = 2         # streams die after two SSE frames
        up.stall_mid_stream_after = 2        # streams go silent after two frames (read timeouts)
        up.stall_before_eof = True           # all frames incl. [DONE] sent, connection kept open
        up.delay_s = 5.0                     # wait before sending headers (timeouts)
        up.error_body = lambda req: b"..."   # the body of scripted errors (e.g. echo a key)
        up.stream_error_after = 1            # an SSE error event after one frame, then [DONE]
        ... call up.base_url ...             # "http://127.0.0.1:PORT/v1"
        assert up.calls == 3 and up.requests[0].json["model"] == "m"
        up.arrived.wait(5)                   # a request has arrived (threading.Event)
        up.abandoned.wait(5)                 # a caller closed its connection before the answer

Script outcomes: ``"ok"`` (normal answer), an HTTP status such as ``"500"`` (OpenAI error
envelope), ``"drop"`` (close the connection without answering). ``closed_port_url()`` gives a
base URL where nothing listens, for connect errors.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp import web

CREATED = 1_700_000_000
_OUTCOME_WORDS = frozenset({"ok", "drop"})


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the fake received it (headers with lower-case names)."""

    method: str
    path: str
    headers: Mapping[str, str]
    raw: bytes
    json: Any


def closed_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


class FakeUpstream:
    """An OpenAI-compatible server whose answers and failures the test controls.

    Knobs are plain attributes read on every request: ``delay_s``, ``fail_mid_stream_after``,
    ``stall_mid_stream_after``, ``stall_before_eof``, ``stream_chunks``, ``reply``, ``model``,
    ``embedding_dim``, ``error_body`` (the body of scripted error statuses, from the request;
    JSON unless it does not parse, then text/plain), ``stream_error_after`` (frames before an
    SSE ``event: error`` whose data is ``error_body``, or a generic error). Events for tests to
    wait on (never a sleep): ``arrived`` is set when a request has been read, ``abandoned`` when
    a caller closed its connection while this server was still preparing the answer (aiohttp
    cancels the handler).
    """

    def __init__(
        self,
        *,
        model: str = "fake-model",
        reply: str = "Hello from the fake upstream.",
        stream_chunks: int = 3,
        embedding_dim: int = 8,
    ) -> None:
        self.model = model
        self.reply = reply
        self.stream_chunks = stream_chunks
        self.embedding_dim = embedding_dim
        self.delay_s = 0.0
        self.fail_mid_stream_after: int | None = None
        self.stall_mid_stream_after: int | None = None
        self.stall_before_eof = False
        self.error_body: Callable[[RecordedRequest], bytes] | None = None
        self.stream_error_after: int | None = None
        self.requests: list[RecordedRequest] = []
        self.arrived = threading.Event()
        self.abandoned = threading.Event()
        self.abandoned_calls = 0
        self._outcomes: deque[str] = deque()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._port = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start_server(), self._loop)
        self._port = future.result(timeout=10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._stop_server(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _start_server(self) -> int:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=0.1, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port: int = self._runner.addresses[0][1]
        return port

    async def _stop_server(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- test-facing API -------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    @property
    def calls(self) -> int:
        """How many HTTP requests reached the server (any path)."""
        return len(self.requests)

    def script(self, outcomes: Iterable[str]) -> None:
        """Queue outcomes for the next requests; once used up, requests answer ``"ok"``."""
        queued = list(outcomes)
        for outcome in queued:
            if outcome not in _OUTCOME_WORDS and not (outcome.isdigit() and len(outcome) == 3):
                raise ValueError(f"unknown outcome {outcome!r}: use 'ok', 'drop' or a status")
        self._outcomes.extend(queued)

    def reset(self) -> None:
        """Forget recorded requests, queued outcomes and faults (for module-scoped fakes)."""
        self.requests.clear()
        self._outcomes.clear()
        self.delay_s = 0.0
        self.fail_mid_stream_after = None
        self.stall_mid_stream_after = None
        self.stall_before_eof = False
        self.arrived.clear()
        self.abandoned.clear()
        self.abandoned_calls = 0
        self.error_body = None
        self.stream_error_after = None

    # -- request handling ------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        payload = _parse_json(raw)
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            raw=raw,
            json=payload,
        )
        self.requests.append(recorded)
        self.arrived.set()
        outcome = self._outcomes.popleft() if self._outcomes else "ok"
        if self.delay_s:
            try:
                await asyncio.sleep(self.delay_s)
            except asyncio.CancelledError:  # the caller closed the connection
                self.abandoned_calls += 1
                self.abandoned.set()
                raise
        if outcome == "drop":
            return _drop_connection(request)
        if outcome != "ok" and self.error_body is not None:
            return _raw(int(outcome), self.error_body(recorded))
        if outcome != "ok":
            return _error(int(outcome), f"fake upstream scripted {outcome}")
        return await self._answer(request, payload if isinstance(payload, dict) else {})

    async def _answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        path = request.path
        if request.method == "GET" and path == "/v1/models":
            return _json({"object": "list", "data": [_model_card(self.model)]})
        if request.method != "POST":
            return _error(405, f"{request.method} {path} is not served")
        if path == "/v1/chat/completions":
            return await self._completion(request, body, chat=True)
        if path == "/v1/completions":
            return await self._completion(request, body, chat=False)
        if path == "/v1/embeddings":
            return _json(self._embeddings(body))
        return _error(404, f"{path} is not served")

    async def _completion(
        self, request: web.Request, body: dict[str, Any], *, chat: bool
    ) -> web.StreamResponse:
        model = str(body.get("model", self.model))
        if not body.get("stream"):
            return _json(_full_completion(model, self.reply, chat=chat))
        frames = _stream_frames(model, self.reply, self.stream_chunks, chat=chat, body=body)
        return await self._stream(request, frames)

    async def _stream(self, request: web.Request, frames: list[bytes]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        if self.stream_error_after is not None:  # some frames, an error event, [DONE]
            cut = self.stream_error_after
            frames = [*frames[:cut], self._error_event(), frames[-1]]
        for index, frame in enumerate(frames):
            if index == self.fail_mid_stream_after:
                return _cut_stream(request, response)
            if index == self.stall_mid_stream_after:
                await asyncio.get_running_loop().create_future()  # until the client gives up
            await response.write(frame)
        if self.stall_before_eof:
            await asyncio.get_running_loop().create_future()  # until the client gives up
        await response.write_eof()
        return response

    def _error_event(self) -> bytes:
        last = self.requests[-1]
        data = self.error_body(last) if self.error_body else b'{"error": {"message": "boom"}}'
        return b"event: error\ndata: " + data + b"\n\n"

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        raw_input = body.get("input", "")
        texts = [raw_input] if isinstance(raw_input, str) else list(raw_input)
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(str(t), self.embedding_dim)}
            for i, t in enumerate(texts)
        ]
        tokens = sum(len(str(t).split()) for t in texts)
        return {
            "object": "list",
            "data": data,
            "model": str(body.get("model", self.model)),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


# -- response builders (pure) ------------------------------------------------------------


def _parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def _raw(status: int, body: bytes) -> web.Response:
    kind = "application/json" if _parse_json(body) is not None else "text/plain"
    return web.Response(body=body, status=status, content_type=kind)


def _error(status: int, message: str) -> web.Response:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    envelope = {"error": {"message": message, "type": kind, "param": None, "code": str(status)}}
    return _json(envelope, status)


def _drop_connection(request: web.Request) -> web.StreamResponse:
    """Close the socket without an answer; the client sees a disconnect."""
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError


def _cut_stream(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """End the TCP connection mid-body: the chunked body never gets its terminating chunk.

    ``close()`` (not ``abort()``) flushes the frames already written first, so the client
    deterministically receives exactly the frames before the cut, then a broken payload.
    """
    if request.transport is not None:
        request.transport.close()
    raise asyncio.CancelledError


def _model_card(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": CREATED, "owned_by": "fake-upstream"}


def _usage(reply: str) -> dict[str, int]:
    completion = len(reply.split())
    return {"prompt_tokens": 5, "completion_tokens": completion, "total_tokens": 5 + completion}


def _full_completion(model: str, reply: str, *, chat: bool) -> dict[str, Any]:
    if chat:
        choice: dict[str, Any] = {"message": {"role": "assistant", "content": reply}}
    else:
        choice = {"text": reply, "logprobs": None}
    return {
        "id": "cmpl-fake",
        "object": "chat.completion" if chat else "text_completion",
        "created": CREATED,
        "model": model,
        "choices": [{"index": 0, **choice, "finish_reason": "stop"}],
        "usage": _usage(reply),
    }


def _split(text: str, parts: int) -> list[str]:
    """Cut text into ``parts`` non-empty pieces that join back to it (fewer if it is short)."""
    parts = max(1, min(parts, len(text)))
    size, extra = divmod(len(text), parts)
    pieces, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


def _stream_frames(
    model: str, reply: str, chunks: int, *, chat: bool, body: dict[str, Any]
) -> list[bytes]:
    """SSE frames: one per content piece, a finish frame, optionally usage, then [DONE]."""
    obj = "chat.completion.chunk" if chat else "text_completion"
    events: list[dict[str, Any]] = []
    for i, piece in enumerate(_split(reply, chunks)):
        delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
        choice = {"delta": delta} if chat else {"text": piece, "logprobs": None}
        events.append({"choices": [{"index": 0, **choice, "finish_reason": None}]})
    finish = {"delta": {}} if chat else {"text": "", "logprobs": None}
    events.append({"choices": [{"index": 0, **finish, "finish_reason": "stop"}]})
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        events.append({"choices": [], "usage": _usage(reply)})
    header = {"id": "cmpl-fake", "object": obj, "created": CREATED, "model": model}
    frames = [b"data: " + orjson.dumps({**header, **event}) + b"\n\n" for event in events]
    return [*frames, b"data: [DONE]\n\n"]


def _vector(text: str, dim: int) -> list[float]:
    seed = sum(text.encode())
    return [((seed + 31 * i) % 97) / 97.0 for i in range(dim)]


# -- pytest helper -----------------------------------------------------------------------


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstream]:
    """A fresh FakeUpstream per test. Import it into a conftest to use it."""
    with FakeUpstream() as upstream:
        yield upstream
