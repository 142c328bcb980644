"""The gateway's HTTP server: uvicorn (httptools, uvloop) with the limits a public endpoint
needs, all from :class:`~router.settings.Settings`.

uvicorn closes a keep-alive connection idle after a response, and answers 503 past
``limit_concurrency`` connections or tasks, but it has no timeout for a connection that never
sends a request, or sends its head slowly (slowloris), and with httptools no cap on a request
head's size. :class:`GuardedHttpTools` adds both, at the cost of one timer per connection and
per request whose head did not arrive in one read:

- a request head (from the connection's start, or from its first byte on a kept-alive
  connection) must be complete within ``server_header_timeout_s``, or the connection closes;
- a head larger than ``server_max_header_bytes`` is answered ``431`` and the connection closed;
- a kept-alive connection idle for ``server_timeout_keep_alive_s`` closes (uvicorn's own).

:func:`tune_allocator` makes memory go back to the system after large requests: glibc's malloc
serves blocks above a *dynamic* threshold (raised up to 32 MiB each time such a block is
freed) from its heaps, which it rarely returns, so after a burst of 30 MiB bodies a process
kept ~250 MiB above idle for good. A fixed threshold (``malloc_mmap_threshold_bytes``, 64 KiB:
the size of the pieces uvicorn hands a body over in) maps each large block on its own and
unmaps it when freed; measured in ``bench/large_bodies.py`` (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import sys
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from router.settings import Settings

_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 27\r\nconnection: close\r\n\r\nRequest head is too large.\n"
)


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout and a head size cap (class
    attributes, set per server by :func:`guarded_protocol`)."""

    header_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    keep_alive_s: float = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.keep_alive_s  # type: ignore[assignment]
        self._in_head = True  # waiting for (the rest of) a request head
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that never sends a request is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._in_head or self.transport.is_closing():
            return
        self._head_bytes += len(data)
        if self._head_bytes > self.max_header_bytes:
            self._cancel_head_timer()
            self.transport.write(_TOO_LARGE)
            self.transport.close()
        elif self._head_timer is None:
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # its head is already in: not waiting for one
        super().on_response_complete()
        self._in_head, self._head_bytes = not pipelined, 0  # keep-alive timer until a byte

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self.transport.close()


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def tune_allocator(settings: Settings) -> bool:
    """Fix glibc's mmap threshold (see the module docstring); False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    mallopt = getattr(ctypes.CDLL(libc_name), "mallopt", None)
    if mallopt is None:  # musl
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, settings.malloc_mmap_threshold_bytes))


def guarded_protocol(settings: Settings) -> type[GuardedHttpTools]:
    """A protocol class carrying this server's limits (uvicorn builds one per connection)."""
    return type(
        "GatewayHttpProtocol",
        (GuardedHttpTools,),
        {
            "header_timeout_s": settings.server_header_timeout_s,
            "max_header_bytes": settings.server_max_header_bytes,
            "keep_alive_s": settings.server_timeout_keep_alive_s,
        },
    )


def server_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration ``serve`` and the test servers use."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": guarded_protocol(settings),
        "limit_concurrency": settings.server_limit_concurrency,
        "backlog": settings.server_backlog,
        "access_log": False,
        "log_level": settings.log_level,
        "lifespan": "on",
        **overrides,
    }
    return uvicorn.Config(app, **options)
