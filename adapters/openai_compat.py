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
``send()``, during a stream from the ``chunks`` iterator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import orjson

from adapters.base import (
    BackendTarget,
    Endpoint,
    UpstreamConnectError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamResponse,
    UpstreamTimeout,
)
from adapters.http1 import URL, Client, ClientError, Response, header_lines

HEALTH_TIMEOUT_S = 5.0


def make_client(*, limit: int = 1024, idle_s: float = 60.0) -> Client:
    """The shared HTTP client for all OpenAI-compatible upstreams; hand it to
    :class:`OpenAICompatAdapter`, which then owns it."""
    return Client(limit=limit, idle_s=idle_s)


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
    where = f"{target.deployment_id}: {during}"
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(f"{where}: timed out ({exc})", deployment_id=target.deployment_id)
    reason = str(exc) or type(exc).__name__
    return UpstreamConnectError(f"{where}: {reason}", deployment_id=target.deployment_id)


class _StreamRelay:
    """Yields the upstream's raw bytes as they arrive; always releases the connection.

    A class rather than an async generator so that ``aclose()`` releases the response even if
    iteration never started (a client that disconnects before the first chunk).
    """

    __slots__ = ("_response", "_target")

    def __init__(self, response: Response, target: BackendTarget) -> None:
        self._response: Response | None = response
        self._target = target

    def __aiter__(self) -> _StreamRelay:
        return self

    async def __anext__(self) -> bytes:
        if self._response is None:
            raise StopAsyncIteration
        try:
            chunk = await self._response.next_chunk()
        except ClientError as exc:
            self._response = None
            raise _map_error(exc, self._target, "stream broke") from exc
        if chunk:
            return chunk
        self._response = None
        raise StopAsyncIteration

    async def aclose(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.close()


class OpenAICompatAdapter:
    """Adapter for kinds ``openai`` and ``local``: one shared client, bytes passed through."""

    def __init__(self, client: Client) -> None:
        self._client = client

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
                b"POST", request.url, request.head, payload, target.timeout_s
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
            body=await self._read(response, target),
            headers=response.headers,
        )

    async def health(self, target: BackendTarget) -> bool:
        """True when ``GET {base_url}/models`` answers 200 within a few seconds."""
        try:
            request = _request(target.base_url, "models", target.api_key)
            response = await self._client.request(
                b"GET", request.url, request.head, b"", min(HEALTH_TIMEOUT_S, target.timeout_s)
            )
            await response.read()
        except (ClientError, ValueError):
            return False
        return response.status == 200

    async def close(self) -> None:
        """Close the shared client (the adapter owns it)."""
        await self._client.close()

    async def _read(self, response: Response, target: BackendTarget) -> bytes:
        try:
            return await response.read()
        except ClientError as exc:
            raise _map_error(exc, target, "reading the body") from exc

    async def _http_error(self, response: Response, target: BackendTarget) -> UpstreamError:
        status = response.status
        try:
            body = await self._read(response, target)
        except UpstreamError:
            body = b""
        return UpstreamHTTPError(
            f"{target.deployment_id}: upstream answered {status}",
            status=status,
            body=body,
            deployment_id=target.deployment_id,
        )
