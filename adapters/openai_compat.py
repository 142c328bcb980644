"""The fast path: proxy to any OpenAI-compatible backend (vLLM, llama.cpp, Ollama, TGI, OpenAI).

Why it looks like this: every request of the gateway goes through here, and the measured budget
for the whole gateway is ~0.3 ms. So the adapter holds one shared aiohttp session (connection
pool with keep-alive, created once in the router's lifespan), forwards the client's JSON bytes
untouched, returns the upstream body as bytes and relays a stream chunk by chunk exactly as it
arrives. It parses nothing of the answer and re-serializes the request only when the upstream
needs another model name.

Upstreams are asked for ``Accept-Encoding: identity`` so the bytes we relay are plain (the
router can append an SSE error event to a broken stream and read usage from a body); if an
upstream compresses anyway, ``auto_decompress=False`` keeps its bytes intact and its
``Content-Encoding`` is in ``UpstreamResponse.headers``.

Failures become the ``UpstreamError`` tree of :mod:`adapters.base`: before the first byte from
``send()``, during a stream from the ``chunks`` iterator.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import aiohttp
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

HEALTH_TIMEOUT_S = 5.0
_BASE_HEADERS: Mapping[str, str] = {
    "Content-Type": "application/json",
    "Accept-Encoding": "identity",
}


def make_session(*, limit: int = 1024, keepalive_s: float = 60.0) -> aiohttp.ClientSession:
    """The shared client session for all OpenAI-compatible upstreams.

    Call it inside the running event loop (the router's lifespan) and hand it to
    :class:`OpenAICompatAdapter`, which then owns it.
    """
    connector = aiohttp.TCPConnector(
        limit=limit, limit_per_host=0, keepalive_timeout=keepalive_s, ttl_dns_cache=300
    )
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None),
    )


@lru_cache(maxsize=64)
def _timeout(timeout_s: float) -> aiohttp.ClientTimeout:
    """Bound connecting, waiting for headers and every read between chunks; not the total
    (a long answer that keeps streaming is healthy)."""
    return aiohttp.ClientTimeout(total=None, connect=timeout_s, sock_read=timeout_s)


def _headers(target: BackendTarget) -> Mapping[str, str]:
    if not target.api_key:
        return _BASE_HEADERS
    return {**_BASE_HEADERS, "Authorization": f"Bearer {target.api_key}"}


def _payload(target: BackendTarget, raw: bytes, body: Mapping[str, object]) -> bytes:
    """The client's bytes, unless the upstream knows the model under another name."""
    model = target.upstream_model
    if model is None or body.get("model") == model:
        return raw
    return orjson.dumps({**body, "model": model})


def _map_error(exc: Exception, target: BackendTarget, during: str) -> UpstreamError:
    """Translate an aiohttp failure into the contract's error tree."""
    where = f"{target.deployment_id}: {during}"
    if isinstance(exc, TimeoutError):  # includes aiohttp's ServerTimeoutError family
        return UpstreamTimeout(f"{where}: timed out", deployment_id=target.deployment_id)
    reason = str(exc) or type(exc).__name__
    return UpstreamConnectError(f"{where}: {reason}", deployment_id=target.deployment_id)


class _StreamRelay:
    """Yields the upstream's raw bytes as they arrive; always releases the connection.

    A class rather than an async generator so that ``aclose()`` releases the response even if
    iteration never started (a client that disconnects before the first chunk).
    """

    __slots__ = ("_content", "_response", "_target")

    def __init__(self, response: aiohttp.ClientResponse, target: BackendTarget) -> None:
        self._response: aiohttp.ClientResponse | None = response
        self._content = response.content
        self._target = target

    def __aiter__(self) -> _StreamRelay:
        return self

    async def __anext__(self) -> bytes:
        if self._response is None:
            raise StopAsyncIteration
        try:
            chunk = await self._content.readany()
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._release()
            raise _map_error(exc, self._target, "stream broke") from exc
        if chunk:
            return chunk
        self._release()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._release()

    def _release(self) -> None:
        if self._response is not None:
            self._response.release()
            self._response = None


class OpenAICompatAdapter:
    """Adapter for kinds ``openai`` and ``local``: one shared session, bytes passed through."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def send(
        self,
        target: BackendTarget,
        endpoint: Endpoint,
        raw: bytes,
        body: dict[str, object],
        stream: bool,
    ) -> UpstreamResponse:
        response = await self._post(target, endpoint, _payload(target, raw, body))
        if response.status >= 400:
            raise await self._http_error(response, target)
        content_type = response.headers.get("Content-Type", "application/json")
        if stream:
            return UpstreamResponse(
                status=response.status,
                content_type=content_type,
                chunks=_StreamRelay(response, target),
                headers=response.headers,
            )
        body_bytes = await self._read(response, target)
        return UpstreamResponse(
            status=response.status,
            content_type=content_type,
            body=body_bytes,
            headers=response.headers,
        )

    async def health(self, target: BackendTarget) -> bool:
        """True when ``GET {base_url}/models`` answers 200 within a few seconds."""
        timeout = _timeout(min(HEALTH_TIMEOUT_S, target.timeout_s))
        try:
            async with self._session.get(
                f"{target.base_url}/models", headers=_headers(target), timeout=timeout
            ) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def close(self) -> None:
        """Close the shared session (the adapter owns it)."""
        await self._session.close()

    async def _post(
        self, target: BackendTarget, endpoint: Endpoint, payload: bytes
    ) -> aiohttp.ClientResponse:
        try:
            return await self._session.post(
                f"{target.base_url}/{endpoint}",
                data=payload,
                headers=_headers(target),
                timeout=_timeout(target.timeout_s),
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _map_error(exc, target, f"POST {endpoint}") from exc

    async def _read(self, response: aiohttp.ClientResponse, target: BackendTarget) -> bytes:
        try:
            return await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _map_error(exc, target, "reading the body") from exc
        finally:
            response.release()

    async def _http_error(
        self, response: aiohttp.ClientResponse, target: BackendTarget
    ) -> UpstreamError:
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
