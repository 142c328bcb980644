"""The fast path's HTTP client: HTTP/1.1 over keep-alive connections, parsed by httptools.

Why not aiohttp: every proxied request pays for its client, and aiohttp's costs ~50 us of CPU
per request on the benchmark machine against ~8 us for a bare asyncio protocol feeding
httptools (the llhttp parser uvicorn uses); that difference was the largest single item
between the gateway and its throughput targets (docs/benchmarks.md). The gateway needs little
of a general client: POST bytes, get a status, headers and the body (whole, or as it arrives),
reuse the connection.

What it does:
- one pool of keep-alive connections per origin (scheme, host, port), most recently used first;
  idle connections expire after ``idle_s`` and are dropped as soon as the peer closes them;
  at most ``limit`` connections exist at once, at most ``per_origin`` to one origin (a caller
  waits for one, within its pool timeout);
- ``http`` and ``https`` (the system's default certificate store, or the given
  ``ssl_context``; the hostname is checked);
- framing per RFC 9112: header names and the ``Transfer-Encoding`` value compared without
  regard to case; bodies with ``Content-Length``, ``chunked``, or (neither) ending when the
  server closes; ``Content-Length`` together with ``Transfer-Encoding``, a repeated differing
  ``Content-Length`` or a transfer coding other than ``chunked`` is refused; a close before a
  delimited body ended is always an error, never a short answer;
- caps on what a server sends: the response head (``max_header_bytes``, ``max_headers``) and a
  body read whole (``max_body_bytes``); a stream is bounded by backpressure instead;
- timeouts by phase, as httpx has them: ``pool`` (waiting for a free connection: the client's
  own saturation), ``connect``, ``write`` (the request's bytes leaving), ``read`` (the head, then
  every wait for more body bytes: a long answer that keeps arriving is healthy);
- a stream that its reader does not keep up with stops reading from the socket past
  ``HIGH_WATER`` bytes (TCP backpressure towards the upstream);
- a request is written at most once: a pooled connection found closed *before* the write (the
  server's keep-alive ran out) is replaced, but once a byte of the request may have left, a
  failure is the caller's to handle (a prompt that crashes a backend must not reach it twice);
- idle connections past ``idle_s`` are closed when their origin is next used.

What it does not do: proxies, redirects, cookies, decompression (callers ask for
``identity``), HTTP/2, ``Expect: 100-continue``, pipelining, ``HEAD`` (its response has no
body, which this parser would wait for). Any failure is a :class:`ClientError` (the tree, the
caps and the timeouts are in :mod:`adapters.http1_types`); a connection that failed, was
abandoned mid-response or timed out is closed, never reused.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import replace
from typing import cast

import httptools

from adapters.http1_types import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    URL,
    ClientError,
    ConnectError,
    ConnectTimeout,
    Limits,
    Origin,
    PoolTimeout,
    ProtocolError,
    ReadTimeout,
    ResponseTooLarge,
    StaleConnection,
    Timeout,
    Timeouts,
    WriteTimeout,
    header_lines,
)

__all__ = [
    "HIGH_WATER",
    "MAX_BODY_BYTES",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "MAX_IDLE_PER_ORIGIN",
    "URL",
    "Client",
    "ClientError",
    "ConnectError",
    "ConnectTimeout",
    "Limits",
    "Origin",
    "PoolTimeout",
    "ProtocolError",
    "ReadTimeout",
    "Response",
    "ResponseTooLarge",
    "StaleConnection",
    "Timeout",
    "Timeouts",
    "WriteTimeout",
    "header_lines",
]

HIGH_WATER = 256 * 1024  # buffered stream bytes before the socket stops being read
MAX_IDLE_PER_ORIGIN = 256
UNLIMITED = 1 << 62


class _Connection(asyncio.Protocol):
    """One socket; serves one request at a time. The parser's callbacks fill its state and wake
    the task waiting on it."""

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop, limits: Limits) -> None:
        self.origin = origin
        self.loop = loop
        self.limits = limits
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.busy = False  # a request is in flight
        self.write_paused = False  # the transport's write buffer is full
        self.idle_since = 0.0
        self.reset()

    def reset(self) -> None:
        self.high_water = HIGH_WATER
        self.max_body = UNLIMITED
        self.status = 0
        self.headers: dict[str, str] = {}
        self.header_count = 0
        self.head_bytes = 0  # bytes received before the head was complete
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self.received = 0  # body bytes, in all
        self.started = False  # a byte of the response arrived
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.delimited = False  # Content-Length or chunked: the end is known without a close
        self.paused = False
        self.error: ClientError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.read_timeout_s = 0.0
        self.write_timeout_s = 0.0

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if not self.busy or self.complete:  # bytes nobody asked for (a 408 before a close)
            self.abort()
            return
        self.started = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._fail_and_abort(
                cause
                if isinstance(cause, ClientError)
                else ProtocolError(f"{self.origin}: malformed response: {exc}")
            )
            return
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail_and_abort(ProtocolError(f"{self.origin}: malformed response: {exc}"))
            return
        if not self.headers_done:  # a head still incomplete: bound what the parser buffers
            self.head_bytes += len(data)
            if self.head_bytes > self.limits.max_header_bytes:
                self._fail_and_abort(self._too_large("head", self.limits.max_header_bytes))

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()  # a writer waiting for the buffer to drain
        if not self.busy or self.complete or self.error is not None:
            return
        if self.headers_done and not self.delimited and exc is None:  # the body ran to the close
            self.complete, self.keep_alive = True, False
            self._wake()
            return
        reason = f" ({exc})" if exc else ""
        if self.headers_done:
            self._fail(ProtocolError(f"{self.origin}: connection closed mid-response{reason}"))
        else:
            self._fail(ConnectError(f"{self.origin}: connection closed by the server{reason}"))

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake()

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # more bytes after the response, in the same packet
            raise ProtocolError(f"{self.origin}: unexpected bytes after the response")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        if self.header_count > self.limits.max_headers:
            raise self._too_large("header count", self.limits.max_headers)
        if self.headers_done:  # a trailer field of a chunked body: counted, not kept
            return
        # RFC 9112 5: the field value excludes leading and trailing whitespace (llhttp keeps
        # the trailing part)
        key, text = name.decode("latin-1").lower(), value.strip(b" \t").decode("latin-1")
        if key == "transfer-encoding" and b"\t" in value:
            # llhttp does not read "chunked<TAB>" as chunked: the parser and this client would
            # frame the body differently (the stuff of response smuggling), so refuse it
            raise ProtocolError(f"{self.origin}: a tab in Transfer-Encoding")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 1xx: informational, the real response follows
            self.headers, self.header_count = {}, 0
            return
        self.status, self.headers_done = status, True
        encoding = self.headers.get("transfer-encoding")
        if encoding is not None and encoding.strip().lower() != "chunked":
            # RFC 9112 6.3: anything but a final chunked would run to the close: refused
            raise ProtocolError(f"{self.origin}: unsupported Transfer-Encoding {encoding[:40]!r}")
        self.delimited = encoding is not None or "content-length" in self.headers
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.received += len(body)
        if self.received > self.max_body:
            raise self._too_large("body", self.max_body)
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > self.high_water and not self.paused and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True
        self._wake()

    def on_message_complete(self) -> None:
        if not self.headers_done:  # the end of a 1xx
            return
        self.complete, self.keep_alive = True, self.parser.should_keep_alive()
        self._wake()

    # -- waiting -----------------------------------------------------------------------------

    async def wait(self) -> None:
        """Until something happens (the head, body bytes, the end, the write buffer draining, a
        failure) or the current phase's timeout passed: writing while the write buffer is full,
        reading otherwise."""
        waiter = self.waiter = self.loop.create_future()
        writing = self.write_paused and not self.headers_done
        timeout_s = self.write_timeout_s if writing else self.read_timeout_s
        timer = self.loop.call_later(timeout_s, self._time_out, waiter, timeout_s, writing)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None

    def take_body(self) -> bytes:
        data = self.body.popleft() if len(self.body) == 1 else b"".join(self.body)
        self.body.clear()
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _too_large(self, what: str, cap: int) -> ResponseTooLarge:
        return ResponseTooLarge(f"{self.origin}: response {what} exceeds the limit of {cap}")

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: ClientError) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _fail_and_abort(self, error: ClientError) -> None:
        self._fail(error)
        self.abort()

    def _time_out(self, waiter: asyncio.Future[None], timeout_s: float, writing: bool) -> None:
        if waiter.done():
            return
        if writing:
            error: Timeout = WriteTimeout(f"{self.origin}: request not sent within {timeout_s:g} s")
        else:
            what = "more of the response" if self.headers_done else "response"
            error = ReadTimeout(f"{self.origin}: no {what} within {timeout_s:g} s")
        waiter.set_exception(error)


class Response:
    """A response whose head has arrived. Read it whole with :meth:`read`, or piece by piece
    with :meth:`next_chunk`; either gives the connection back once the body has ended. Call
    :meth:`close` on a response not read to its end (idempotent)."""

    __slots__ = ("_client", "_conn", "headers", "status")

    def __init__(self, client: Client, conn: _Connection) -> None:
        self.status = conn.status
        self.headers = conn.headers  # lower-case names
        self._client: Client = client
        self._conn: _Connection | None = conn

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body; :class:`ResponseTooLarge` past ``limit`` or, when that is None or
        larger, the client's ``max_body_bytes``."""
        conn = self._conn
        if conn is None:
            return b""
        conn.high_water = UNLIMITED  # the caller wants all of it: never pause
        cap = conn.limits.max_body_bytes
        conn.max_body = cap if limit is None else min(limit, cap)
        if conn.paused and conn.transport is not None:
            conn.paused = False
            conn.transport.resume_reading()
        length = conn.headers.get("content-length", "").strip()
        try:
            if conn.received > conn.max_body or (length.isdigit() and int(length) > conn.max_body):
                raise conn._too_large("body", conn.max_body)
            while not conn.complete:
                if conn.error is not None:
                    raise conn.error
                await conn.wait()
        except BaseException:
            self.close()
            raise
        data = conn.take_body()
        self._finish()
        return data

    async def next_chunk(self) -> bytes:
        """The bytes that arrived since the last call (waiting for some); ``b""`` at the end."""
        conn = self._conn
        if conn is None:
            return b""
        try:
            while True:
                if conn.body:
                    return conn.take_body()
                if conn.error is not None:
                    raise conn.error
                if conn.complete:
                    self._finish()
                    return b""
                await conn.wait()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Give up on the rest: the connection is closed (its state is unknown)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client._discard(conn)

    def _finish(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client._give_back(conn)


class Client:
    """Keep-alive connections to any number of origins; see the module docstring."""

    def __init__(
        self,
        *,
        limit: int | None = None,
        idle_s: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
        limits: Limits | None = None,
    ) -> None:
        limits = limits or Limits()
        if limit is not None:
            limits = replace(limits, connections=limit, per_origin=min(limits.per_origin, limit))
        self._limits = limits
        self._idle_s = idle_s
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._open = 0  # connections that exist (idle or in use) or are being opened
        self._open_to: dict[Origin, int] = {}  # the same, per origin
        self._waiters: deque[tuple[Origin, asyncio.Future[None]]] = deque()
        self._ssl = ssl_context  # None: the system's default store, made on first use
        self._closed = False

    async def request(
        self, method: bytes, url: URL, head: bytes, body: bytes, timeout: float | Timeouts
    ) -> Response:
        """Send ``method`` with the header lines ``head`` and ``body``; return once the
        response's head has arrived (any status). ``timeout``: seconds for every phase, or
        :class:`Timeouts`. The request is written at most once."""
        if self._closed:
            raise ConnectError("the HTTP client is closed")
        timeouts = Timeouts.of(timeout)
        length = b"Content-Length: %d\r\n" % len(body) if body or method == b"POST" else b""
        request = b"%s %s HTTP/1.1\r\nHost: %s\r\n%s%s\r\n" % (
            method,
            url.target,
            url.origin.host_header,
            head,
            length,
        )
        while True:
            conn, reused = await self._acquire(url.origin, timeouts)
            conn.reset()
            conn.busy = True
            conn.read_timeout_s = timeouts.read
            conn.write_timeout_s = timeouts.read if timeouts.write is None else timeouts.write
            try:
                self._write(conn, request, body)
            except StaleConnection:
                self._discard(conn)
                if reused:  # not a byte left: another connection may carry it
                    continue
                raise
            try:
                while not conn.headers_done:
                    if conn.error is not None:
                        raise conn.error
                    await conn.wait()
            except BaseException:
                self._discard(conn)
                raise
            return Response(self, conn)

    @staticmethod
    def _write(conn: _Connection, request: bytes, body: bytes) -> None:
        transport = conn.transport
        if conn.closed or transport is None or transport.is_closing():
            raise StaleConnection(f"{conn.origin}: connection closed by the server")
        try:
            if body:
                transport.writelines((request, body))
            else:
                transport.write(request)
        except RuntimeError as exc:  # uvloop: the transport closed under us, nothing written
            raise StaleConnection(f"{conn.origin}: connection closed by the server") from exc

    async def close(self) -> None:
        """Close idle connections; connections in use close when their response is done."""
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
                self._forget(conn)
        self._idle.clear()
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectError("the HTTP client is closed"))

    # -- the pool ----------------------------------------------------------------------------

    async def _acquire(self, origin: Origin, timeouts: Timeouts) -> tuple[_Connection, bool]:
        """A pooled connection or a new one, within the pool timeout; and whether it was
        reused."""
        loop = asyncio.get_running_loop()
        pool_s = timeouts.read if timeouts.pool is None else timeouts.pool
        deadline = loop.time() + pool_s
        while True:
            if self._closed:
                raise ConnectError("the HTTP client is closed")
            conn = self._pop_idle(origin, loop.time())
            if conn is not None:
                return conn, True
            if self._may_open(origin):
                self._count(origin, 1)
                try:
                    connect_s = timeouts.read if timeouts.connect is None else timeouts.connect
                    return await self._connect(origin, loop, connect_s), False
                except BaseException:
                    self._count(origin, -1)
                    self._notify()
                    raise
            await self._wait_for_slot(origin, loop, deadline, pool_s)

    async def _wait_for_slot(
        self, origin: Origin, loop: asyncio.AbstractEventLoop, deadline: float, pool_s: float
    ) -> None:
        waiter = loop.create_future()
        entry = (origin, waiter)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._notify()  # woken but leaving: pass the free slot on
            if isinstance(exc, TimeoutError):
                raise PoolTimeout(
                    f"{origin}: no free connection within {pool_s:g} s "
                    f"(limits: {self._limits.connections} in all, "
                    f"{self._limits.per_origin} per origin)"
                ) from None
            raise
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def _may_open(self, origin: Origin) -> bool:
        """Room for one more connection to ``origin`` (closing an idle one elsewhere if that
        is what it takes)."""
        if self._open_to.get(origin, 0) >= self._limits.per_origin:
            return False
        return self._open < self._limits.connections or self._evict_one()

    def _count(self, origin: Origin, delta: int) -> None:
        self._open += delta
        self._open_to[origin] = self._open_to.get(origin, 0) + delta

    def _forget(self, conn: _Connection) -> None:
        self._count(conn.origin, -1)

    def _pop_idle(self, origin: Origin, now: float) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self._idle_s:
                return conn
            conn.abort()
            self._forget(conn)
        return None

    def _evict_one(self) -> bool:
        """Close the longest-idle connection of any origin to make room; False if none."""
        oldest: deque[_Connection] | None = None
        for idle in self._idle.values():
            if idle and (oldest is None or idle[0].idle_since < oldest[0].idle_since):
                oldest = idle
        if oldest is None:
            return False
        conn = oldest.popleft()
        conn.abort()
        self._forget(conn)
        return True

    async def _connect(
        self, origin: Origin, loop: asyncio.AbstractEventLoop, timeout_s: float
    ) -> _Connection:
        context = self._ssl_context() if origin.tls else None
        try:
            async with asyncio.timeout(max(timeout_s, 0.0)):
                _, conn = await loop.create_connection(
                    lambda: _Connection(origin, loop, self._limits),
                    origin.host,
                    origin.port,
                    ssl=context,
                    server_hostname=origin.host if context else None,
                )
        except TimeoutError:
            raise ConnectTimeout(f"{origin}: could not connect within {timeout_s:g} s") from None
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise ConnectError(f"{origin}: cannot connect: {exc}") from exc
        return conn

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _give_back(self, conn: _Connection) -> None:
        if self._closed or conn.closed or not conn.keep_alive or conn.error is not None:
            self._discard(conn)
            return
        idle = self._idle.setdefault(conn.origin, deque())
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            self._discard(conn)
            return
        now = conn.loop.time()
        while idle and now - idle[0].idle_since >= self._idle_s:  # the longest idle first
            expired = idle.popleft()
            expired.abort()
            self._forget(expired)
        conn.idle_since = now
        conn.busy = False
        idle.append(conn)
        self._notify()

    def _discard(self, conn: _Connection) -> None:
        conn.abort()
        # the error was raised: its traceback holds frames that hold this connection (and the
        # request's body); dropping it here breaks that cycle
        conn.error = None
        self._forget(conn)
        self._notify()

    def _notify(self) -> None:
        """Wake the first waiter that can now get a connection (a pooled one or a new one)."""
        for entry in self._waiters:
            origin, waiter = entry
            if not waiter.done() and self._can_serve(origin):
                self._waiters.remove(entry)
                waiter.set_result(None)
                return

    def _can_serve(self, origin: Origin) -> bool:
        if self._idle.get(origin):
            return True
        if self._open_to.get(origin, 0) >= self._limits.per_origin:
            return False
        return self._open < self._limits.connections or any(self._idle.values())
