"""The fast path's client interface (``adapters.http1.Client``: ``request`` → a response with
``status``, ``headers``, ``read``, ``next_chunk``, ``close``) on top of pyreqwest, the
Rust-backed async client (reqwest + hyper + tokio), so ``OpenAICompatAdapter`` can run on it
unchanged. For the side-by-side measurement in ``bench/client_compare.py`` only: pyreqwest is
not a dependency of the gateway (install it into the environment that runs the bench).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pyreqwest.client import ClientBuilder
from pyreqwest.exceptions import (
    ConnectTimeoutError,
    PoolTimeoutError,
    ReadTimeoutError,
    RequestError,
)

from adapters.http1 import (
    URL,
    ConnectError,
    ConnectTimeout,
    Limits,
    PoolTimeout,
    ProtocolError,
    ReadTimeout,
    Timeouts,
)


def _headers(head: bytes) -> dict[str, str]:
    pairs = (line.split(b":", 1) for line in head.split(b"\r\n") if line)
    return {name.decode("latin-1"): value.strip().decode("latin-1") for name, value in pairs}


def _client_error(exc: Exception) -> Exception:
    if isinstance(exc, PoolTimeoutError):
        return PoolTimeout(str(exc))
    if isinstance(exc, ConnectTimeoutError):
        return ConnectTimeout(str(exc))
    if isinstance(exc, ReadTimeoutError):
        return ReadTimeout(str(exc))
    if isinstance(exc, RequestError):
        return ConnectError(str(exc))
    return ProtocolError(str(exc))


class ReqwestResponse:
    __slots__ = ("_context", "_reader", "_response", "headers", "status")

    def __init__(self, context: Any, response: Any) -> None:
        self._context = context
        self._response = response
        self._reader: Any = None
        self.status: int = response.status
        self.headers = {k.lower(): v for k, v in response.headers.items()}

    async def read(self, limit: int | None = None) -> bytes:
        try:
            return bytes(await self._response.bytes())
        except Exception as exc:
            raise _client_error(exc) from exc
        finally:
            await self._exit()

    async def next_chunk(self) -> bytes:
        if self._context is None:
            return b""
        if self._reader is None:
            self._reader = self._response.body_reader
        try:
            chunk = await self._reader.read_chunk()
        except Exception as exc:
            await self._exit()
            raise _client_error(exc) from exc
        if chunk is None:
            await self._exit()
            return b""
        return bytes(chunk)

    def close(self) -> None:
        context, self._context = self._context, None
        if context is not None:
            import asyncio

            asyncio.get_running_loop().create_task(context.__aexit__(None, None, None))

    async def _exit(self) -> None:
        context, self._context = self._context, None
        if context is not None:
            await context.__aexit__(None, None, None)


class ReqwestClient:
    def __init__(self, *, limits: Limits | None = None, idle_s: float = 60.0) -> None:
        limits = limits or Limits()
        self._client = (
            ClientBuilder()
            .http1_only()
            .max_connections(limits.connections)
            .pool_max_idle_per_host(limits.per_origin)
            .pool_idle_timeout(timedelta(seconds=idle_s))
            .build()
        )

    async def request(
        self, method: bytes, url: URL, head: bytes, body: bytes, timeout: float | Timeouts
    ) -> ReqwestResponse:
        timeouts = Timeouts.of(timeout)
        builder = (
            self._client.request(method.decode(), f"{url.origin}{url.target.decode()}")
            .headers(_headers(head))
            .timeout(timedelta(seconds=timeouts.read))
        )
        if body:
            builder = builder.body_bytes(body)
        context = builder.build_streamed()
        try:
            response = await context.__aenter__()
        except Exception as exc:
            raise _client_error(exc) from exc
        return ReqwestResponse(context, response)

    async def close(self) -> None:
        await self._client.close()
