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
  at most ``limit`` connections exist at once (a caller waits for one, within its timeout);
- ``http`` and ``https`` (the system's default certificate store, or the given
  ``ssl_context``; the hostname is checked);
- bodies with ``Content-Length``, ``chunked``, or ending when the server closes;
- ``timeout_s`` bounds everything until the response starts (waiting for a free connection,
  connecting, a resend, the answer's head), then every wait for more body bytes (a long answer
  that keeps arriving is healthy), as before with aiohttp;
- a stream that its reader does not keep up with stops reading from the socket past
  ``HIGH_WATER`` bytes (TCP backpressure towards the upstream);
- a request sent on a reused connection that the server had already closed (its keep-alive
  ran out: uvicorn-based servers such as vLLM close idle connections after 5 s) is sent once
  more on a new connection, only when not one byte of a response arrived;
- idle connections past ``idle_s`` are closed when their origin is next used.

What it does not do: proxies, redirects, cookies, decompression (callers ask for
``identity``), HTTP/2, ``Expect: 100-continue``, pipelining, ``HEAD`` (its response has no
body, which this parser would wait for). Any failure is a
:class:`ClientError` (``Timeout`` is also a ``TimeoutError``); a connection that failed, was
abandoned mid-response or timed out is closed, never reused.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass
from typing import cast
from urllib.parse import quote, urlsplit

import httptools

HIGH_WATER = 256 * 1024  # buffered stream bytes before the socket stops being read
MAX_IDLE_PER_ORIGIN = 256


class ClientError(Exception):
    """The request failed; nothing usable came back."""


class ConnectError(ClientError):
    """No connection, or it closed before the response started."""


class ProtocolError(ClientError):
    """The response was malformed, or the connection broke while it was being read."""


class Timeout(ClientError, TimeoutError):
    """Connecting, or waiting for the response or its next bytes, took longer than allowed."""


@dataclass(frozen=True, slots=True)
class Origin:
    tls: bool
    host: str
    port: int
    host_header: bytes  # the URL's host[:port], as written

    def __str__(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host_header.decode()}"


@dataclass(frozen=True, slots=True)
class URL:
    """Where a request goes, parsed once: its origin and the request target (path + query)."""

    origin: Origin
    target: bytes

    @classmethod
    def parse(cls, url: str) -> URL:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # the URL itself may hold credentials: name only what is wrong with it
            raise ValueError(f"not an http(s) URL with a host (scheme {parts.scheme!r})")
        tls = parts.scheme == "https"
        netloc = parts.netloc.rpartition("@")[2]  # never send userinfo as the Host
        origin = Origin(tls, parts.hostname, parts.port or (443 if tls else 80), netloc.encode())
        safe = "/%:@!$&'()*+,;=-._~"
        path = quote(parts.path or "/", safe=safe)
        query = f"?{quote(parts.query, safe=safe + '?')}" if parts.query else ""
        return cls(origin, (path + query).encode())


def header_lines(headers: dict[str, str]) -> bytes:
    """Encoded request header lines; refuses a CR or LF in a value (header injection)."""
    lines = []
    for name, value in headers.items():
        if any(c in value or c in name for c in "\r\n\0"):
            raise ValueError(f"header {name!r}: line breaks are not allowed in HTTP headers")
        lines.append(f"{name}: {value}\r\n".encode("latin-1"))
    return b"".join(lines)


class _Connection(asyncio.Protocol):
    """One socket; serves one request at a time. The parser's callbacks fill its state and wake
    the task waiting on it."""

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.origin = origin
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.busy = False  # a request is in flight
        self.idle_since = 0.0
        self.reset()

    def reset(self) -> None:
        self.high_water = HIGH_WATER
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self.started = False  # a byte of the response arrived
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.delimited = False  # Content-Length or chunked: the end is known without a close
        self.paused = False
        self.error: ClientError | None = None
        self.waiter: asyncio.Future[None] | None = None

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
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(ProtocolError(f"{self.origin}: malformed response: {exc}"))
            self.abort()

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete or self.error is not None:
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

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # more bytes after the response, in the same packet
            raise ProtocolError(f"{self.origin}: unexpected bytes after the response")

    def on_header(self, name: bytes, value: bytes) -> None:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 1xx: informational, the real response follows
            self.headers = {}
            return
        self.status, self.headers_done = status, True
        self.delimited = "content-length" in self.headers or "chunked" in self.headers.get(
            "transfer-encoding", ""
        )
        self._wake()

    def on_body(self, body: bytes) -> None:
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

    async def wait(self, timeout_s: float, limit_s: float | None = None) -> None:
        """Until something happens (the head, body bytes, the end, a failure) or ``timeout_s``
        passed (``limit_s``: the whole allowance, when this wait has only what is left of it)."""
        waiter = self.waiter = self.loop.create_future()
        limit = timeout_s if limit_s is None else limit_s
        timer = self.loop.call_later(timeout_s, self._time_out, waiter, limit)
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

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: ClientError) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _time_out(self, waiter: asyncio.Future[None], timeout_s: float) -> None:
        if not waiter.done():
            what = "more of the response" if self.headers_done else "response"
            waiter.set_exception(Timeout(f"{self.origin}: no {what} within {timeout_s:g} s"))


class Response:
    """A response whose head has arrived. Read it whole with :meth:`read`, or piece by piece
    with :meth:`next_chunk`; either gives the connection back once the body has ended. Call
    :meth:`close` on a response not read to its end (idempotent)."""

    __slots__ = ("_client", "_conn", "_timeout_s", "headers", "status")

    def __init__(self, client: Client, conn: _Connection, timeout_s: float) -> None:
        self.status = conn.status
        self.headers = conn.headers  # lower-case names
        self._client: Client = client
        self._conn: _Connection | None = conn
        self._timeout_s = timeout_s

    async def read(self) -> bytes:
        conn = self._conn
        if conn is None:
            return b""
        conn.high_water = 1 << 62  # the caller wants all of it: never pause
        if conn.paused and conn.transport is not None:
            conn.paused = False
            conn.transport.resume_reading()
        try:
            while not conn.complete:
                if conn.error is not None:
                    raise conn.error
                await conn.wait(self._timeout_s)
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
                await conn.wait(self._timeout_s)
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
        self, *, limit: int = 1024, idle_s: float = 60.0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._limit = limit
        self._idle_s = idle_s
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._open = 0  # connections that exist (idle or in use) or are being opened
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._ssl = ssl_context  # None: the system's default store, made on first use
        self._closed = False

    async def request(
        self, method: bytes, url: URL, head: bytes, body: bytes, timeout_s: float
    ) -> Response:
        """Send ``method`` with the header lines ``head`` and ``body``; return once the
        response's head has arrived (any status)."""
        if self._closed:
            raise ConnectError("the HTTP client is closed")
        length = b"Content-Length: %d\r\n" % len(body) if body or method == b"POST" else b""
        request = b"%s %s HTTP/1.1\r\nHost: %s\r\n%s%s\r\n" % (
            method,
            url.target,
            url.origin.host_header,
            head,
            length,
        )
        deadline = asyncio.get_running_loop().time() + timeout_s
        fresh = False
        while True:
            conn, reused = await self._acquire(url.origin, deadline, fresh=fresh)
            conn.reset()
            conn.busy = True
            try:
                self._write(conn, request, body)
                while not conn.headers_done:
                    if conn.error is not None:
                        raise conn.error
                    await conn.wait(deadline - conn.loop.time(), timeout_s)
            except ConnectError:
                self._discard(conn)
                if reused and not conn.started and not fresh and not self._closed:
                    fresh = True  # the server had closed this idle connection: once more
                    continue
                raise
            except BaseException:
                self._discard(conn)
                raise
            return Response(self, conn, timeout_s)

    @staticmethod
    def _write(conn: _Connection, request: bytes, body: bytes) -> None:
        transport = conn.transport
        if conn.closed or transport is None or transport.is_closing():
            raise ConnectError(f"{conn.origin}: connection closed by the server")
        try:
            if body:
                transport.writelines((request, body))
            else:
                transport.write(request)
        except RuntimeError as exc:  # uvloop: the transport closed under us
            raise ConnectError(f"{conn.origin}: connection closed by the server") from exc

    async def close(self) -> None:
        """Close idle connections; connections in use close when their response is done."""
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
                self._open -= 1
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectError("the HTTP client is closed"))

    # -- the pool ----------------------------------------------------------------------------

    async def _acquire(
        self, origin: Origin, deadline: float, *, fresh: bool = False
    ) -> tuple[_Connection, bool]:
        """A pooled connection (unless ``fresh``) or a new one, by ``deadline``; and whether it
        was reused."""
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise ConnectError("the HTTP client is closed")
            conn = None if fresh else self._pop_idle(origin, loop.time())
            if conn is not None:
                return conn, True
            if self._open < self._limit or self._evict_one():
                self._open += 1
                try:
                    return await self._connect(origin, loop, deadline - loop.time()), False
                except BaseException:
                    self._open -= 1
                    self._notify()
                    raise
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._notify()  # woken but leaving: pass the free slot on
                if isinstance(exc, TimeoutError):
                    raise Timeout(f"{origin}: no free connection in time") from None
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _pop_idle(self, origin: Origin, now: float) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self._idle_s:
                return conn
            conn.abort()
            self._open -= 1
        return None

    def _evict_one(self) -> bool:
        """Close the longest-idle connection of any origin to make room; False if none."""
        oldest: deque[_Connection] | None = None
        for idle in self._idle.values():
            if idle and (oldest is None or idle[0].idle_since < oldest[0].idle_since):
                oldest = idle
        if oldest is None:
            return False
        oldest.popleft().abort()
        self._open -= 1
        return True

    async def _connect(
        self, origin: Origin, loop: asyncio.AbstractEventLoop, timeout_s: float
    ) -> _Connection:
        context = self._ssl_context() if origin.tls else None
        try:
            async with asyncio.timeout(max(timeout_s, 0.0)):
                _, conn = await loop.create_connection(
                    lambda: _Connection(origin, loop),
                    origin.host,
                    origin.port,
                    ssl=context,
                    server_hostname=origin.host if context else None,
                )
        except TimeoutError:
            raise Timeout(f"{origin}: could not connect in time") from None
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
            idle.popleft().abort()
            self._open -= 1
        conn.idle_since = now
        conn.busy = False
        idle.append(conn)
        self._notify()

    def _discard(self, conn: _Connection) -> None:
        conn.abort()
        self._open -= 1
        self._notify()

    def _notify(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
