"""A very fast mock OpenAI-compatible backend (raw asyncio + uvloop + httptools).

Endpoints:
  POST /v1/chat/completions   JSON, or SSE when the body has ``"stream": true``
                              (role chunk + N content chunks + finish chunk [+ usage] + [DONE],
                              sent with chunked transfer-encoding)
  POST /v1/completions        same, legacy completions shape
  POST /v1/embeddings         ``input`` string or list; ``encoding_format`` float or base64
  GET  /v1/models             model list
  GET  /health                200 "ok"

Options (CLI flag, or env var in brackets):
  --port           [MOCK_PORT]           default 9001
  --host           [MOCK_HOST]           default 127.0.0.1
  --chunks         [MOCK_CHUNKS]         SSE content chunks per streamed response, default 20
  --delay-ms       [MOCK_DELAY_MS]       fixed delay before every answer (emulated model time)
  --chunk-delay-ms [MOCK_CHUNK_DELAY_MS] gap between SSE chunks, default 0 (one write)
  --words          [MOCK_WORDS]          words in the non-streaming answer, default 20
  --embed-dim      [MOCK_EMBED_DIM]      embedding dimensions, default 384

The point of the mock is to cost as little CPU as possible per request so that whatever sits in
front of it is what a benchmark measures. Reused from the shared anchor harness, plus
embeddings and completions.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import os
import struct
import time

import httptools
import orjson


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    e = os.environ.get
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--host", default=e("MOCK_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(e("MOCK_PORT", "9001")))
    p.add_argument("--chunks", type=int, default=int(e("MOCK_CHUNKS", "20")))
    p.add_argument("--delay-ms", type=float, default=float(e("MOCK_DELAY_MS", "0")))
    p.add_argument("--chunk-delay-ms", type=float, default=float(e("MOCK_CHUNK_DELAY_MS", "0")))
    p.add_argument("--words", type=int, default=int(e("MOCK_WORDS", "20")))
    p.add_argument("--embed-dim", type=int, default=int(e("MOCK_EMBED_DIM", "384")))
    return p.parse_args(argv)


ARGS = parse_args([]) if __name__ != "__main__" else parse_args()
_ids = itertools.count(1)
_tasks: set[asyncio.Future[None]] = set()  # keep a reference to running answers


def spawn(coro) -> None:  # type: ignore[no-untyped-def]
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


WORDS = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed"]
WORDS += ["do", "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna"]


def configure(args: argparse.Namespace) -> None:
    global ARGS, ANSWER, DELAY, CHUNK_DELAY, EMBED_FLOAT, EMBED_B64
    ARGS = args
    DELAY = args.delay_ms / 1000.0
    CHUNK_DELAY = args.chunk_delay_ms / 1000.0
    ANSWER = " ".join(WORDS[i % len(WORDS)] for i in range(args.words))
    vector = [round(((i * 7919) % 1000) / 1000.0 - 0.5, 6) for i in range(args.embed_dim)]
    EMBED_FLOAT = orjson.dumps(vector)
    EMBED_B64 = orjson.dumps(base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode())


ANSWER = ""
DELAY = CHUNK_DELAY = 0.0
EMBED_FLOAT = EMBED_B64 = b""
configure(ARGS)

MODELS_BODY = orjson.dumps(
    {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 1700000000, "owned_by": "mock"}
            for name in ("mock", "mock-slow", "mock-embed")
        ],
    }
)


def http_response(status: bytes, ctype: bytes, body: bytes, keep_alive: bool) -> bytes:
    return b"".join(
        (
            b"HTTP/1.1 ",
            status,
            b"\r\ncontent-type: ",
            ctype,
            b"\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: keep-alive\r\n\r\n"
            if keep_alive
            else b"\r\nconnection: close\r\n\r\n",
            body,
        )
    )


def usage(completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": 12,
        "completion_tokens": completion_tokens,
        "total_tokens": 12 + completion_tokens,
    }


def completion_body(model: str, chat: bool) -> bytes:
    n = next(_ids)
    if chat:
        choice: dict[str, object] = {
            "index": 0,
            "message": {"role": "assistant", "content": ANSWER},
            "logprobs": None,
            "finish_reason": "stop",
        }
    else:
        choice = {"index": 0, "text": ANSWER, "logprobs": None, "finish_reason": "stop"}
    return orjson.dumps(
        {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-mock{n}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [choice],
            "usage": usage(ARGS.words),
        }
    )


def embeddings_body(model: str, inputs: object, encoding: str | None) -> bytes:
    count = len(inputs) if isinstance(inputs, list) and inputs and not _is_tokens(inputs) else 1
    vector = EMBED_B64 if encoding == "base64" else EMBED_FLOAT
    items = b",".join(
        b'{"object":"embedding","index":%d,"embedding":%s}' % (i, vector) for i in range(count)
    )
    head = b'{"object":"list","data":[%s],"model":%s,' % (items, orjson.dumps(model))
    return head + b'"usage":{"prompt_tokens":%d,"total_tokens":%d}}' % (8 * count, 8 * count)


def _is_tokens(inputs: list[object]) -> bool:
    return isinstance(inputs[0], int)


def sse_events(model: str, include_usage: bool, chat: bool):  # type: ignore[no-untyped-def]
    """Yield SSE events (bytes, already framed as ``data: ...\\n\\n``)."""
    n = next(_ids)
    base = {
        "id": f"chatcmpl-mock{n}" if chat else f"cmpl-mock{n}",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_mock",
    }

    def choice(content: str | None, finish: str | None, role: bool = False) -> bytes:
        if chat:
            delta: dict[str, str] = {}
            if role:
                delta["role"] = "assistant"
            if content is not None:
                delta["content"] = content
            c: dict[str, object] = {"index": 0, "delta": delta}
        else:
            c = {"index": 0, "text": content or ""}
        c["logprobs"] = None
        c["finish_reason"] = finish
        return b"data: " + orjson.dumps({**base, "choices": [c]}) + b"\n\n"

    if chat:
        yield choice("", None, role=True)
    for i in range(ARGS.chunks):
        yield choice(WORDS[i % len(WORDS)] + " ", None)
    yield choice(None, "stop")
    if include_usage:
        last = {**base, "choices": [], "usage": usage(ARGS.chunks)}
        yield b"data: " + orjson.dumps(last) + b"\n\n"
    yield b"data: [DONE]\n\n"


def chunked(b: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(b), b)


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n"
)
CHAT_PATHS = (b"/v1/chat/completions", b"/chat/completions")
COMPLETION_PATHS = (b"/v1/completions", b"/completions")
EMBED_PATHS = (b"/v1/embeddings", b"/embeddings")


class HttpProto(asyncio.Protocol):
    __slots__ = ("body", "busy", "closed", "parser", "queue", "transport", "url")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.queue: list[tuple[bytes, bytes, bytes, bool]] = []  # pipelined requests (rare)
        self.busy = False
        self.closed = False

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.write(http_response(b"400 Bad Request", b"text/plain", b"bad request", False))
            self.transport.close()  # type: ignore[union-attr]

    def write(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        req = (
            self.parser.get_method(),
            self.url,
            b"".join(self.body),
            self.parser.should_keep_alive(),
        )
        if self.busy:
            self.queue.append(req)
        else:
            self.handle(req)

    def handle(self, req: tuple[bytes, bytes, bytes, bool]) -> None:
        method, url, body, keep_alive = req
        path = url.split(b"?", 1)[0]
        if method == b"POST" and path in CHAT_PATHS + COMPLETION_PATHS + EMBED_PATHS:
            try:
                j = orjson.loads(body) if body else {}
            except orjson.JSONDecodeError:
                j = None
            if not isinstance(j, dict):
                self.write(
                    http_response(
                        b"400 Bad Request",
                        b"application/json",
                        b'{"error":{"message":"invalid json","type":"invalid_request_error"}}',
                        keep_alive,
                    )
                )
                return
            model = j.get("model") or "mock"
            if path in EMBED_PATHS:
                reply = embeddings_body(model, j.get("input"), j.get("encoding_format"))
                if DELAY > 0:
                    self.busy = True
                    spawn(self.later(reply, keep_alive))
                    return
                self.json(reply, keep_alive)
                if not keep_alive:
                    self.transport.close()  # type: ignore[union-attr]
                return
            chat = path in CHAT_PATHS
            stream = bool(j.get("stream"))
            include_usage = bool((j.get("stream_options") or {}).get("include_usage"))
            if DELAY > 0 or (stream and CHUNK_DELAY > 0):
                self.busy = True
                spawn(self.slow(model, chat, stream, include_usage, keep_alive))
                return
            elif stream:
                self.write_stream_now(model, chat, include_usage)
            else:
                self.json(completion_body(model, chat), keep_alive)
        elif method == b"GET" and path in (b"/v1/models", b"/models"):
            self.json(MODELS_BODY, keep_alive)
        elif method == b"GET" and path in (b"/health", b"/"):
            self.write(http_response(b"200 OK", b"text/plain", b"ok", keep_alive))
        else:
            self.write(
                http_response(
                    b"404 Not Found",
                    b"application/json",
                    b'{"error":{"message":"not found","type":"invalid_request_error"}}',
                    keep_alive,
                )
            )
        if not keep_alive:
            self.transport.close()  # type: ignore[union-attr]

    def json(self, body: bytes, keep_alive: bool) -> None:
        self.write(http_response(b"200 OK", b"application/json", body, keep_alive))

    async def later(self, body: bytes, keep_alive: bool) -> None:
        try:
            await asyncio.sleep(DELAY)
            if not self.closed:
                self.json(body, keep_alive)
                if not keep_alive:
                    self.transport.close()  # type: ignore[union-attr]
        finally:
            self.drain_queue()

    def write_stream_now(self, model: str, chat: bool, include_usage: bool) -> None:
        parts = [SSE_HEAD]
        parts.extend(chunked(ev) for ev in sse_events(model, include_usage, chat))
        parts.append(b"0\r\n\r\n")
        self.write(b"".join(parts))

    async def slow(
        self, model: str, chat: bool, stream: bool, include_usage: bool, keep_alive: bool
    ) -> None:
        try:
            if DELAY > 0:
                await asyncio.sleep(DELAY)
            if self.closed:
                return
            if not stream:
                self.json(completion_body(model, chat), keep_alive)
            elif CHUNK_DELAY <= 0:
                self.write_stream_now(model, chat, include_usage)
            else:
                self.write(SSE_HEAD)
                for i, ev in enumerate(sse_events(model, include_usage, chat)):
                    if i:
                        await asyncio.sleep(CHUNK_DELAY)
                    if self.closed:
                        return
                    self.write(chunked(ev))
                self.write(b"0\r\n\r\n")
            if not keep_alive:
                self.transport.close()  # type: ignore[union-attr]
        finally:
            self.drain_queue()

    def drain_queue(self) -> None:
        self.busy = False
        while self.queue and not self.busy and not self.closed:
            self.handle(self.queue.pop(0))


def main() -> None:
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(HttpProto, ARGS.host, ARGS.port, backlog=4096, reuse_address=True)
    )
    print(
        f"mock_backend listening on {ARGS.host}:{ARGS.port} chunks={ARGS.chunks} "
        f"delay_ms={ARGS.delay_ms} chunk_delay_ms={ARGS.chunk_delay_ms} "
        f"embed_dim={ARGS.embed_dim}",
        flush=True,
    )
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


if __name__ == "__main__":
    main()
