"""The gateway's own server under idle and slow clients: connections that never send a
request, or send their head slowly (slowloris), are closed after ``server_header_timeout_s``;
idle keep-alive connections after ``server_timeout_keep_alive_s``; an oversized request head
gets 431. With thousands of such connections open, normal requests are still served."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from tests.router.conftest import RunningGateway

HEADER_TIMEOUT_S = 0.5
HELD = 1500  # of each kind: idle and slow


@pytest.fixture(scope="module")
def gw(gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return gateway_factory(
        server_header_timeout_s=HEADER_TIMEOUT_S,
        server_timeout_keep_alive_s=HEADER_TIMEOUT_S,
        server_max_header_bytes=16 * 1024,
    )


def port_of(gw: RunningGateway) -> int:
    return int(gw.url.rsplit(":", 1)[1])


@pytest.fixture
def sockets() -> Iterator[Callable[[int], socket.socket]]:
    with ExitStack() as stack:

        def connect(port: int) -> socket.socket:
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port)))
            sock.settimeout(30.0)  # a failure guard: the server should close long before
            return sock

        yield connect


def closed_by_server(sock: socket.socket) -> bool:
    """Reads until the server closes (True) or the guard timeout passes (False)."""
    try:
        while sock.recv(65536):
            pass
        return True
    except TimeoutError:
        return False


def test_idle_and_slow_connections_are_closed_and_never_starve_requests(
    gw: RunningGateway, sockets: Callable[[int], socket.socket]
) -> None:
    port = port_of(gw)
    idle = [sockets(port) for _ in range(HELD)]
    slow = [sockets(port) for _ in range(HELD)]
    for sock in slow:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
    models = gw.openai().models.list()  # served while 3,000 connections hang
    assert models.object == "list"
    assert all(closed_by_server(sock) for sock in idle + slow)


def test_an_idle_keep_alive_connection_is_closed(
    gw: RunningGateway, sockets: Callable[[int], socket.socket]
) -> None:
    sock = sockets(port_of(gw))
    head = f"GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {gw.keys['apps']}\r\n\r\n"
    sock.sendall(head.encode())
    assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    assert closed_by_server(sock)


def test_an_oversized_request_head_is_refused(
    gw: RunningGateway, sockets: Callable[[int], socket.socket]
) -> None:
    sock = sockets(port_of(gw))
    filler = b"X-Filler: " + b"a" * 4086 + b"\r\n"
    # 32 KiB of headers, never ending, in one write (a second one could meet the close)
    sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n" + filler * 8)
    assert sock.recv(65536).startswith(b"HTTP/1.1 431 ")
    assert closed_by_server(sock)
