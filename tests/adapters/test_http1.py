"""The fast path's HTTP client against raw TCP servers whose every byte a test writes: framing
(length, chunked, until close, 1xx), keep-alive reuse, stale connections, timeouts, the
connection limit, backpressure, TLS. Each test runs on asyncio and on uvloop (what uvicorn
picks in production)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trustme

from adapters.http1 import (
    HIGH_WATER,
    URL,
    Client,
    ConnectError,
    Limits,
    PoolTimeout,
    ProtocolError,
    ReadTimeout,
    ResponseTooLarge,
    Timeout,
    Timeouts,
    WriteTimeout,
    header_lines,
)

pytestmark = pytest.mark.anyio

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
HEAD = header_lines({"Content-Type": "application/json"})


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> object:
    return request.param


class Server:
    """127.0.0.1, port 0; counts connections and the requests read with :meth:`request`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.tasks: set[asyncio.Task[None]] = set()
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []  # (head, body)
        self.port = 0

    def url(self, path: str = "/v1/chat/completions", scheme: str = "http") -> URL:
        return URL.parse(f"{scheme}://127.0.0.1:{self.port}{path}")

    async def request(self, reader: asyncio.StreamReader) -> bytes | None:
        """Read one request; its head, or None when the client closed."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        self.requests.append((head, await reader.readexactly(length)))
        return head

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    server = Server(handler)
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0, ssl=tls)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        for task in server.tasks:  # handlers still sleeping or reading
            task.cancel()
        await asyncio.gather(*server.tasks, return_exceptions=True)


@asynccontextmanager
async def client(**options: object) -> AsyncIterator[Client]:
    c = Client(**options)  # type: ignore[arg-type]
    try:
        yield c
        # every connection still counted is one waiting in the pool: nothing leaked
        assert c._open == sum(len(idle) for idle in c._idle.values())
    finally:
        await c.close()


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
    while await s.request(reader) is not None:
        writer.write(OK)


async def test_keep_alive_reuses_one_connection_and_sends_the_body() -> None:
    async with serving(keep_alive) as server, client() as c:
        for body in (b'{"a":1}', b'{"b":2}', b'{"c":3}'):
            response = await c.request(b"POST", server.url(), HEAD, body, 5.0)
            assert (response.status, await response.read()) == (200, b"{}")
            assert response.headers["content-type"] == "application/json"
    assert server.connections == 1
    assert [body for _, body in server.requests] == [b'{"a":1}', b'{"b":2}', b'{"c":3}']
    head = server.requests[0][0]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in head
    assert b"Content-Length: 7\r\n" in head and b"Content-Type: application/json\r\n" in head


async def test_chunked_body_arrives_piece_by_piece() -> None:
    more = asyncio.Event()

    async def chunked(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await more.wait()
        w.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await s.request(r)  # then the connection serves the next request
        w.write(OK)

    async with serving(chunked) as server, client() as c:
        response = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        assert await response.next_chunk() == b"first"
        more.set()
        assert await response.next_chunk() == b"second"
        assert await response.next_chunk() == b""
        assert await response.next_chunk() == b""  # finished stays finished
        again = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        assert await again.read() == b"{}"
    assert server.connections == 1


async def test_body_that_ends_when_the_server_closes() -> None:
    async def until_close(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of ")
        await asyncio.sleep(0.01)
        w.write(b"it")

    async with serving(until_close) as server, client() as c:
        for _ in range(2):
            response = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
            assert await response.read() == b"all of it"
    assert server.connections == 2  # such a connection cannot be reused


async def test_connection_close_is_honoured() -> None:
    async def closing(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")
        await asyncio.sleep(10)  # keeps the socket open: only the header says not to reuse it

    async with serving(closing) as server, client() as c:
        for _ in range(3):
            response = await c.request(b"POST", server.url(), HEAD, b"{}", 2.0)
            assert await response.read() == b"{}"
    assert server.connections == 3


async def test_informational_response_is_skipped() -> None:
    async def continue_first(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        w.write(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)

    async with serving(continue_first) as server, client() as c:
        response = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        assert (response.status, await response.read()) == (200, b"{}")


async def test_repeated_headers_are_joined_and_names_lowercased() -> None:
    async def cookies(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        w.write(b"HTTP/1.1 429 Too Many\r\nX-A: 1\t \r\nx-a: 2\r\nContent-Length: 0\r\n\r\n")

    async with serving(cookies) as server, client() as c:
        response = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        assert response.status == 429 and response.headers["x-a"] == "1, 2"  # OWS trimmed
        assert await response.read() == b""


async def test_malformed_response_is_a_protocol_error_and_the_connection_dropped() -> None:
    answers = iter([b"NOT HTTP AT ALL\r\n\r\n", OK])

    async def garbage(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while await s.request(r) is not None:
            w.write(next(answers))

    async with serving(garbage) as server, client() as c:
        with pytest.raises(ProtocolError, match="malformed"):
            await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        response = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        assert await response.read() == b"{}"
    assert server.connections == 2


# -- connections that go away ---------------------------------------------------------------


async def test_bytes_on_an_idle_connection_retire_it() -> None:
    """A server may say something unasked (a 408 before it closes): that connection is done."""

    async def chatty(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        if await s.request(r) is None:
            return
        w.write(OK)
        if s.connections == 1:
            await w.drain()
            await asyncio.sleep(0.02)
            w.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
            await s.request(r)  # a request sent here anyway would get no answer
            await asyncio.sleep(10)

    async with serving(chatty) as server, client() as c:
        response = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        assert await response.read() == b"{}"
        await asyncio.sleep(0.3)
        response = await c.request(b"POST", server.url(), HEAD, b"{}", 1.0)
        assert await response.read() == b"{}"
    assert server.connections == 2


async def test_idle_connection_closed_by_the_server_is_replaced() -> None:
    async def one_each(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        w.write(OK)
        await w.drain()  # then close, as a server whose keep-alive ran out

    async with serving(one_each) as server, client() as c:
        for _ in range(3):
            response = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
            assert await response.read() == b"{}"
            await asyncio.sleep(0.05)  # the close reaches the client while idle
            assert all(conn.closed for idle in c._idle.values() for conn in idle)
    assert (server.connections, len(server.requests)) == (3, 3)  # no request was resent


async def test_bytes_after_the_response_in_the_same_packet_retire_the_connection() -> None:
    async def extra(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while await s.request(r) is not None:
            w.write(OK + b"HTTP/1.1 200 OK\r\nX-Sneaky: 1\r\nContent-Length: 3\r\n\r\nbad")

    async with serving(extra) as server, client() as c:
        for _ in range(2):
            response = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
            assert await response.read() == b"{}" and "x-sneaky" not in response.headers
    assert server.connections == 2


async def test_reset_during_a_body_that_ends_at_close_is_an_error_not_the_end() -> None:
    async def reset(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\ntrunc")
        await w.drain()
        await asyncio.sleep(0.05)
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort()  # RST, not FIN

    async with serving(reset) as server, client() as c:
        response = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        with pytest.raises(ProtocolError, match="mid-response"):
            await response.read()


async def test_a_pooled_connection_found_closing_at_write_is_replaced() -> None:
    async with serving(keep_alive) as server, client() as c:
        response = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        assert await response.read() == b"{}"
        (pooled,) = c._idle[server.url().origin]
        assert pooled.transport is not None
        pooled.transport.abort()  # closing; the pool learns of it only on the next loop turn
        response = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        assert await response.read() == b"{}"
    assert (server.connections, len(server.requests)) == (2, 2)


async def test_no_resend_once_part_of_the_answer_arrived() -> None:
    async def half_second(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while await s.request(r) is not None:
            if len(s.requests) == 2:
                w.write(b"HTTP/1.1 200 O")
                await w.drain()
                return
            w.write(OK)

    async with serving(half_second) as server, client() as c:
        response = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        assert await response.read() == b"{}"
        with pytest.raises(ConnectError, match="closed by the server"):
            await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
    assert len(server.requests) == 2


async def test_a_server_that_closes_at_once_is_a_connect_error() -> None:
    async def hang_up(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        return

    async with serving(hang_up) as server, client() as c:
        with pytest.raises(ConnectError, match="closed by the server"):
            await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)


async def test_request_on_a_reused_connection_closed_after_reading_is_not_resent() -> None:
    """The server read the request on a reused connection and closed without a byte of answer
    (a keep-alive race, or a prompt that crashed it): the request was written, so it is not
    written again (it would reach the backend twice); the caller gets the failure."""

    async def drop_second(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        first = s.connections == 1
        while await s.request(r) is not None:
            if first and len(s.requests) == 2:
                return  # closes without answering
            w.write(OK)

    async with serving(drop_second) as server, client() as c:
        response = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        assert await response.read() == b"{}"
        with pytest.raises(ConnectError, match="closed by the server"):
            await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
    assert (server.connections, len(server.requests)) == (1, 2)


async def test_fresh_connection_closed_without_an_answer_is_not_resent() -> None:
    async def drop(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)

    async with serving(drop) as server, client() as c:
        with pytest.raises(ConnectError, match="closed by the server"):
            await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
    assert len(server.requests) == 1


async def test_connection_breaking_mid_body_is_a_protocol_error() -> None:
    async def cut(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await w.drain()

    async with serving(cut) as server, client() as c:
        response = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        assert await response.next_chunk() == b"partial"
        with pytest.raises(ProtocolError, match="mid-response"):
            await response.next_chunk()


async def test_refused_connection_is_a_connect_error() -> None:
    async with serving(keep_alive) as server:
        url = server.url()
    async with client() as c:
        with pytest.raises(ConnectError, match="cannot connect"):
            await c.request(b"POST", url, HEAD, b"{}", 5.0)


# -- time and capacity ----------------------------------------------------------------------


async def test_no_answer_times_out_and_the_connection_is_not_reused() -> None:
    async def silent_second(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while await s.request(r) is not None:
            if len(s.requests) != 2:
                w.write(OK)

    async with serving(silent_second) as server, client() as c:
        response = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        assert await response.read() == b"{}"
        with pytest.raises(ReadTimeout, match=r"no response within 0\.2 s"):
            await c.request(b"POST", server.url(), HEAD, b"{}", 0.2)  # on the kept connection
        response = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        assert await response.read() == b"{}"
    assert server.connections == 2


async def test_stalled_body_times_out_between_chunks() -> None:
    async def stall(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n")
        await asyncio.sleep(10)

    async with serving(stall) as server, client() as c:
        response = await c.request(b"POST", server.url(), HEAD, b"{}", 0.5)
        assert await response.next_chunk() == b"hi"
        with pytest.raises(Timeout, match="more of the response"):
            await response.next_chunk()


async def test_a_body_that_keeps_arriving_is_not_cut_by_the_timeout() -> None:
    async def trickle(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(12):
            await asyncio.sleep(0.05)
            w.write(b"1\r\nx\r\n")
        w.write(b"0\r\n\r\n")

    async with serving(trickle) as server, client() as c:
        response = await c.request(b"POST", server.url(), HEAD, b"{}", 0.4)
        assert await response.read() == b"x" * 12  # 0.6 s in all, never 0.4 s silent


async def test_limit_makes_callers_wait_for_a_connection() -> None:
    async with serving(keep_alive) as server, client(limit=1) as c:
        held = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        with pytest.raises(PoolTimeout, match="no free connection"):
            await c.request(b"POST", server.url(), HEAD, b"{}", 0.1)
        waiting = asyncio.ensure_future(c.request(b"POST", server.url(), HEAD, b"{}", 5.0))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        assert await held.read() == b"{}"  # gives the connection back: the waiter gets it
        assert await (await waiting).read() == b"{}"
    assert server.connections == 1


async def test_a_waiter_that_gives_up_passes_its_turn_on() -> None:
    async with serving(keep_alive) as server, client(limit=1) as c:
        held = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        first = asyncio.ensure_future(c.request(b"POST", server.url(), HEAD, b"{}", 5.0))
        second = asyncio.ensure_future(c.request(b"POST", server.url(), HEAD, b"{}", 5.0))
        await asyncio.sleep(0.05)
        assert await held.read() == b"{}"  # wakes `first`...
        first.cancel()  # ...which leaves before it runs: `second` must get the connection
        assert await (await asyncio.wait_for(second, 2.0)).read() == b"{}"
        with pytest.raises(asyncio.CancelledError):
            await first


async def test_close_fails_waiting_callers_at_once() -> None:
    async with serving(keep_alive) as server:
        c = Client(limit=1)
        held = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        waiting = asyncio.ensure_future(c.request(b"POST", server.url(), HEAD, b"{}", 30.0))
        await asyncio.sleep(0.05)
        await c.close()
        with pytest.raises(ConnectError, match="closed"):
            await asyncio.wait_for(waiting, 2.0)
        assert await held.read() == b"{}"  # in flight: finishes, then its connection closes
        assert c._open == 0
        with pytest.raises(ConnectError, match="closed"):
            await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)


async def test_a_closed_response_frees_its_slot_and_its_connection_is_not_reused() -> None:
    async def endless(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while await s.request(r) is not None:
            if len(s.requests) == 1:
                w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n")
            else:
                w.write(OK)

    async with serving(endless) as server, client(limit=1) as c:
        stream = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        stream.close()
        response = await c.request(b"POST", server.url(), HEAD, b"{}", 1.0)
        assert await response.read() == b"{}"
    assert server.connections == 2


async def test_slow_reader_pauses_the_socket_and_loses_nothing() -> None:
    payload = bytes(range(256)) * (16 * 1024 * 4)  # 16 MiB: more than the sockets buffer
    sent = asyncio.Event()

    async def firehose(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        while await s.request(r) is not None:
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload))
            for i in range(0, len(payload), 65536):
                w.write(payload[i : i + 65536])
                await w.drain()
            sent.set()

    async with serving(firehose) as server, client() as c:
        response = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        conn = response._conn
        assert conn is not None
        for _ in range(500):  # not reading: the client stops reading the socket
            if conn.paused:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert conn.paused and conn.buffered <= 2 * HIGH_WATER and not sent.is_set()
        received = bytearray()
        while chunk := await response.next_chunk():
            received += chunk
        assert bytes(received) == payload
        # read() lifts the limit for its response only: a later stream on the same
        # connection is bounded again
        again = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        assert len(await again.read()) == len(payload)
        third = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        conn = third._conn
        assert conn is not None and conn.high_water == HIGH_WATER
        third.close()
    assert server.connections == 1


# -- TLS, URLs, headers -----------------------------------------------------------------------


async def test_https_with_a_trusted_ca_and_refused_with_an_unknown_one() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)

    async with serving(keep_alive, tls=server_context) as server:
        url = server.url(scheme="https")
        async with client(ssl_context=trusting) as c:
            for _ in range(2):
                response = await c.request(b"POST", url, HEAD, b"{}", 5.0)
                assert await response.read() == b"{}"
        async with client() as c:  # the system store does not know this CA
            with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await c.request(b"POST", url, HEAD, b"{}", 5.0)
    assert len(server.requests) == 2


def test_url_parsing() -> None:
    url = URL.parse("https://user:pw@api.example.com/v1/chat/completions?api-version=2")
    assert (url.origin.tls, url.origin.host, url.origin.port) == (True, "api.example.com", 443)
    assert url.origin.host_header == b"api.example.com"  # never the credentials
    assert url.target == b"/v1/chat/completions?api-version=2"
    v6 = URL.parse("http://[::1]:8080/v1/models")
    assert (v6.origin.host, v6.origin.port, v6.origin.host_header) == ("::1", 8080, b"[::1]:8080")
    assert URL.parse("http://h/a b").target == b"/a%20b"
    with pytest.raises(ValueError, match="not an http"):
        URL.parse("ftp://h/x")


def test_header_values_cannot_inject_lines() -> None:
    assert header_lines({"Authorization": "Bearer k"}) == b"Authorization: Bearer k\r\n"
    with pytest.raises(ValueError, match="line breaks") as caught:
        header_lines({"Authorization": "Bearer sk-secret\r\nX-Evil: 1"})
    assert "sk-secret" not in str(caught.value)


# -- framing (RFC 9112) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "te",
    [b"Transfer-Encoding: Chunked", b"TRANSFER-ENCODING: CHUNKED", b"transfer-encoding: chunked "],
)
async def test_chunked_in_any_case_cut_mid_body_is_an_error_not_a_short_answer(te: bytes) -> None:
    async def cut(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        w.write(b"HTTP/1.1 200 OK\r\n" + te + b"\r\n\r\n5\r\nfirst\r\n")
        await w.drain()  # then close: the terminating chunk never comes

    async with serving(cut) as server, client() as c:
        response = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        with pytest.raises(ProtocolError, match="mid-response"):
            await response.read()


@pytest.mark.parametrize(
    "head",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked",
        b"transfer-encoding: chunked\r\ncontent-length: 5",
        b"Content-Length: 5\r\nContent-Length: 6",
        b"Transfer-Encoding: gzip",
        b"Transfer-Encoding: gzip, chunked",
        b"Transfer-Encoding: chunked\t",  # llhttp would not frame it as chunked
        b"Content-Length: -1",
        b"Content-Length: 5x",
    ],
)
async def test_conflicting_or_unsupported_framing_is_refused(head: bytes) -> None:
    async def answer(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        w.write(b"HTTP/1.1 200 OK\r\n" + head + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        await w.drain()

    async with serving(answer) as server, client() as c:
        with pytest.raises(ProtocolError):
            response = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
            await response.read()


# -- caps on what a server sends --------------------------------------------------------------


async def test_a_huge_response_head_is_refused_without_buffering_it() -> None:
    async def huge(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        w.write(b"HTTP/1.1 200 OK\r\nX-Big: ")
        for _ in range(20 * 16):  # 20 MiB of one header value, if nobody stops it
            w.write(b"a" * 65536)
            await w.drain()

    async with serving(huge) as server, client(limits=Limits(max_header_bytes=8192)) as c:
        with pytest.raises(ResponseTooLarge, match="head exceeds the limit of 8192"):
            await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)


async def test_too_many_response_headers_are_refused() -> None:
    async def many(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        lines = b"".join(b"X-H%d: v\r\n" % i for i in range(20_001))
        w.write(b"HTTP/1.1 200 OK\r\n" + lines + b"Content-Length: 0\r\n\r\n")
        await w.drain()

    async with serving(many) as server, client(limits=Limits(max_header_bytes=1 << 20)) as c:
        with pytest.raises(ResponseTooLarge, match="header count exceeds the limit of 100"):
            await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_a_body_read_whole_is_capped_and_a_stream_is_not(framing: str) -> None:
    body = b"x" * 5000

    async def big(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await s.request(r)
        if framing == "length":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        elif framing == "chunked":
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(body), 1000):
                w.write(b"3e8\r\n" + body[i : i + 1000] + b"\r\n")
            w.write(b"0\r\n\r\n")
        else:
            w.write(b"HTTP/1.1 200 OK\r\n\r\n" + body)
        await w.drain()

    async with serving(big) as server, client(limits=Limits(max_body_bytes=4096)) as c:
        response = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        with pytest.raises(ResponseTooLarge, match="body exceeds the limit of 4096"):
            await response.read()
        stream = await c.request(b"POST", server.url(), HEAD, b"{}", 5.0)
        received = b""
        while chunk := await stream.next_chunk():
            received += chunk
        assert received == body


# -- phases of a timeout, and the pool ---------------------------------------------------------


async def test_a_server_that_does_not_read_the_request_is_a_write_timeout() -> None:
    async def deaf(r: asyncio.StreamReader, w: asyncio.StreamWriter, s: Server) -> None:
        await asyncio.sleep(10)

    async with serving(deaf) as server, client() as c:
        body = b"x" * (64 * 1024 * 1024)  # more than the loopback socket buffers hold
        with pytest.raises(WriteTimeout, match=r"not sent within 0\.3 s"):
            await c.request(b"POST", server.url(), HEAD, body, Timeouts(read=30.0, write=0.3))


async def test_the_per_origin_limit_makes_only_that_origin_wait() -> None:
    limits = Limits(per_origin=1)
    async with serving(keep_alive) as a, serving(keep_alive) as b, client(limits=limits) as c:
        held = await c.request(b"POST", a.url(), HEAD, b"{}", 5.0)
        with pytest.raises(PoolTimeout, match="1 per origin"):
            await c.request(b"POST", a.url(), HEAD, b"{}", Timeouts(read=5.0, pool=0.1))
        other = await c.request(b"POST", b.url(), HEAD, b"{}", 5.0)  # another origin
        assert await other.read() == b"{}"
        waiting = asyncio.ensure_future(c.request(b"POST", a.url(), HEAD, b"{}", 5.0))
        assert await held.read() == b"{}"  # frees the origin's slot: the waiter gets it
        assert await (await waiting).read() == b"{}"
    assert (a.connections, b.connections) == (1, 1)
