"""The fast path: proxy to any OpenAI-compatible backend (vLLM, llama.cpp, Ollama, TGI, OpenAI).

Why it looks like this: every request of the gateway goes through here, and the measured budget
for the whole gateway is ~0.3 ms. So the adapter holds one shared client (:mod:`adapters.http1`:
keep-alive connections, created in the router's lifespan), forwards the client's JSON bytes
untouched with request lines encoded once per backend, returns the upstream body as bytes and
relays a stream chunk by chunk exactly as it arrives. It parses nothing of the answer and
re-serializes the request only when the upstream needs another model name.

Upstreams are asked for ``Accept-Encoding: identity`` so the bytes we relay are plain (the
router can append an SSE error event to a broken stream and read usage from a body); if an
upstream compresses anyway, its bytes are passed on untouched and its ``content-encoding`` is in
``UpstreamResponse.headers``.

Failures become the ``UpstreamError`` tree of :mod:`adapters.base`: before the first byte from
``send()``, during a stream from the ``chunks`` iterator. A backend that echoes the API key it
was sent (in an error body, an SSE error event, anywhere in an answer) has it replaced by
``[redacted]`` before a byte moves on; error bodies keep only their sanitised OpenAI fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache

import orjson

from adapters.base import (
    MIN_SECRET_LEN,
    REDACTED,
    BackendTarget,
    Endpoint,
    Phase,
    UpstreamConnectError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamPoolTimeout,
    UpstreamResponse,
    UpstreamResponseTooLarge,
    UpstreamTimeout,
)
from adapters.http1 import (
    URL,
    Client,
    ClientError,
    ConnectTimeout,
    Limits,
    PoolTimeout,
    Response,
    ResponseTooLarge,
    Timeout,
    Timeouts,
    WriteTimeout,
    header_lines,
)

HEALTH_TIMEOUT_S = 5.0
ERROR_BODY_MAX = 64 * 1024  # of a backend's error body, read only for its OpenAI fields


def make_client(*, limits: Limits | None = None, idle_s: float = 60.0) -> Client:
    """The shared HTTP client for all OpenAI-compatible upstreams; hand it to
    :class:`OpenAICompatAdapter`, which then owns it."""
    return Client(limits=limits, idle_s=idle_s)


@dataclass(frozen=True, slots=True)
class PhaseTimeouts:
    """Defaults for the phases a deployment's ``timeout_s`` (the read timeout) does not set;
    each is cut to that read timeout when it is shorter (an attempt's deadline)."""

    connect_s: float = 10.0
    write_s: float = 30.0
    pool_s: float = 10.0

    def for_target(self, target: BackendTarget) -> Timeouts:
        read = target.timeout_s
        return Timeouts(
            read=read,
            connect=min(target.connect_timeout_s or self.connect_s, read),
            write=min(target.write_timeout_s or self.write_s, read),
            pool=min(self.pool_s, read),
        )


@dataclass(frozen=True, slots=True)
class _Request:
    """Where a backend's endpoint is and the header lines every request to it carries."""

    url: URL
    head: bytes = field(repr=False)  # may carry the backend's API key


@lru_cache(maxsize=4096)
def _request(base_url: str, endpoint: str, api_key: str | None) -> _Request:
    headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return _Request(URL.parse(f"{base_url}/{endpoint}"), header_lines(headers))


def _payload(target: BackendTarget, raw: bytes, body: Mapping[str, object]) -> bytes:
    """The client's bytes, unless the upstream knows the model under another name."""
    model = target.upstream_model
    if model is None or body.get("model") == model:
        return raw
    return orjson.dumps({**body, "model": model})


def _map_error(exc: Exception, target: BackendTarget, during: str) -> UpstreamError:
    """Translate a client failure into the contract's error tree."""
    where, deployment_id = f"{target.deployment_id}: {during}", target.deployment_id
    if isinstance(exc, PoolTimeout):
        return UpstreamPoolTimeout(f"{where}: {exc}", deployment_id=deployment_id)
    if isinstance(exc, Timeout):
        phase: Phase = "read"
        if isinstance(exc, ConnectTimeout):
            phase = "connect"
        elif isinstance(exc, WriteTimeout):
            phase = "write"
        message = f"{where}: timed out ({exc})"
        return UpstreamTimeout(message, deployment_id=deployment_id, phase=phase)
    if isinstance(exc, ResponseTooLarge):
        return UpstreamResponseTooLarge(f"{where}: {exc}", deployment_id=deployment_id)
    reason = str(exc) or type(exc).__name__
    return UpstreamConnectError(f"{where}: {reason}", deployment_id=deployment_id)


class _Redactor:
    """Replaces a secret in a byte stream, even one split across chunks: a chunk's tail that
    could begin the secret is held back until the next chunk (or the end) decides. SSE frames
    end in a blank line, which no key begins with, so nothing is held back in practice."""

    __slots__ = ("_held", "_secret")

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._held + chunk if self._held else chunk
        if self._secret in data:
            data = data.replace(self._secret, REDACTED.encode())
        keep = _partial_suffix(data, self._secret)
        self._held = data[len(data) - keep :] if keep else b""
        return data[: len(data) - keep] if keep else data

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return held


def _partial_suffix(data: bytes, secret: bytes) -> int:
    """The length of the longest end of ``data`` that is a proper beginning of ``secret``."""
    start = data.find(secret[:1], max(0, len(data) - len(secret) + 1))
    while start != -1:
        if secret.startswith(data[start:]):
            return len(data) - start
        start = data.find(secret[:1], start + 1)
    return 0


def _redacted_body(body: bytes, secret: str | None) -> bytes:
    if secret and len(secret) >= MIN_SECRET_LEN and secret.encode() in body:
        return body.replace(secret.encode(), REDACTED.encode())
    return body


class _StreamRelay:
    """Yields the upstream's raw bytes as they arrive; always releases the connection.

    A class rather than an async generator so that ``aclose()`` releases the response even if
    iteration never started (a client that disconnects before the first chunk).
    """

    __slots__ = ("_redactor", "_response", "_target")

    def __init__(self, response: Response, target: BackendTarget) -> None:
        self._response: Response | None = response
        self._target = target
        key = target.api_key
        self._redactor = _Redactor(key.encode()) if key and len(key) >= MIN_SECRET_LEN else None

    def __aiter__(self) -> _StreamRelay:
        return self

    async def __anext__(self) -> bytes:
        while self._response is not None:
            try:
                chunk = await self._response.next_chunk()
            except ClientError as exc:
                self._response = None
                raise _map_error(exc, self._target, "stream broke") from exc
            if not chunk:
                break
            if self._redactor is None:
                return chunk
            chunk = self._redactor.feed(chunk)
            if chunk:
                return chunk
        self._response = None
        rest = self._redactor.flush() if self._redactor is not None else b""
        if rest:
            return rest
        raise StopAsyncIteration

    async def aclose(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.close()


class OpenAICompatAdapter:
    """Adapter for kinds ``openai`` and ``local``: one shared client, bytes passed through."""

    def __init__(self, client: Client, timeouts: PhaseTimeouts | None = None) -> None:
        self._client = client
        self._timeouts = timeouts or PhaseTimeouts()

    async def send(
        self,
        target: BackendTarget,
        endpoint: Endpoint,
        raw: bytes,
        body: dict[str, object],
        stream: bool,
    ) -> UpstreamResponse:
        payload = _payload(target, raw, body)
        try:
            request = _request(target.base_url, endpoint, target.api_key)
            response = await self._client.request(
                b"POST", request.url, request.head, payload, self._timeouts.for_target(target)
            )
        except (ClientError, ValueError) as exc:  # ValueError: an unusable base_url or key
            raise _map_error(exc, target, f"POST {endpoint}") from exc
        if response.status >= 400:
            raise await self._http_error(response, target)
        content_type = response.headers.get("content-type", "application/json")
        if stream:
            return UpstreamResponse(
                status=response.status,
                content_type=content_type,
                chunks=_StreamRelay(response, target),
                headers=response.headers,
            )
        return UpstreamResponse(
            status=response.status,
            content_type=content_type,
            body=_redacted_body(await self._read(response, target), target.api_key),
            headers=response.headers,
        )

    async def health(self, target: BackendTarget) -> bool:
        """True when ``GET {base_url}/models`` answers 200 within a few seconds."""
        try:
            request = _request(target.base_url, "models", target.api_key)
            probe = replace(target, timeout_s=min(HEALTH_TIMEOUT_S, target.timeout_s))
            timeouts = self._timeouts.for_target(probe)
            response = await self._client.request(b"GET", request.url, request.head, b"", timeouts)
            await response.read()
        except (ClientError, ValueError):
            return False
        return response.status == 200

    async def close(self) -> None:
        """Close the shared client (the adapter owns it)."""
        await self._client.close()

    async def _read(
        self, response: Response, target: BackendTarget, limit: int | None = None
    ) -> bytes:
        try:
            return await response.read(limit)
        except ClientError as exc:
            raise _map_error(exc, target, "reading the body") from exc

    async def _http_error(self, response: Response, target: BackendTarget) -> UpstreamError:
        status = response.status
        try:
            body = await self._read(response, target, ERROR_BODY_MAX)
        except UpstreamError:
            body = b""
        return UpstreamHTTPError(
            f"{target.deployment_id}: upstream answered {status}",
            status=status,
            body=body,
            deployment_id=target.deployment_id,
            secrets=(target.api_key,),
        )
