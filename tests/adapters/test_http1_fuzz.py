"""Differential fuzzing of the fast path's HTTP client against h11, the reference parser.

Hypothesis writes HTTP/1.1 responses, valid (every framing, header case, whitespace, 1xx
heads, chunk sizes, extensions and trailers RFC 9112 allows) and invalid (the valid ones,
mutated). A raw socket server sends each one to the real :class:`adapters.http1.Client` and
closes; h11 parses the same bytes. On valid input both must agree on the status, the headers
and the body; on any input the client must finish (a result or a ``ClientError``), never hang
or raise anything else, and when both accept a response they must agree on it.

One event loop (uvloop) and one server serve every case, so ~10,000 cases take well under a
minute; ``FUZZ_EXAMPLES`` scales each test's share.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass

import h11
import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.http1 import URL, Client, ClientError, Limits, header_lines

VALID_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6000"))
INVALID_EXAMPLES = VALID_EXAMPLES * 2 // 3
CASE_TIMEOUT_S = 5.0  # a case still running after this is a hang
HEAD = header_lines({"Content-Type": "application/json"})
FRAMING = frozenset(
    {"content-length", "transfer-encoding", "connection", "upgrade", "keep-alive", "trailer"}
)
SUPPRESSED = [HealthCheck.too_slow, HealthCheck.data_too_large]


@dataclass(frozen=True, slots=True)
class Parsed:
    status: int
    headers: dict[str, str]
    body: bytes


class Stage:
    """One loop, one server: each connection gets the current ``payload``, then a close."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.payload = b""
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0)
        )
        port = self.server.sockets[0].getsockname()[1]
        self.url = URL.parse(f"http://127.0.0.1:{port}/v1/chat/completions")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(2)  # the client's body: b"{}"
            writer.write(self.payload)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def client_parse(self, payload: bytes) -> Parsed | ClientError:
        self.payload = payload
        return self.loop.run_until_complete(asyncio.wait_for(self._fetch(), CASE_TIMEOUT_S))

    async def _fetch(self) -> Parsed | ClientError:
        client = Client(limits=Limits(max_header_bytes=1 << 20, max_headers=1000))
        try:
            response = await client.request(b"POST", self.url, HEAD, b"{}", 2.0)
            body = await response.read()
            headers = dict(response.headers)
            if "transfer-encoding" in headers:  # h11 gives this value in lower case
                headers["transfer-encoding"] = headers["transfer-encoding"].lower()
            return Parsed(response.status, headers, body)
        except ClientError as error:
            return error
        finally:
            await client.close()

    def close(self) -> None:
        self.server.close()
        self.loop.run_until_complete(self.server.wait_closed())
        self.loop.close()


@pytest.fixture(scope="module")
def stage() -> Iterator[Stage]:
    stage = Stage()
    yield stage
    stage.close()


def h11_parse(payload: bytes) -> Parsed | Exception:
    """What h11 makes of ``payload`` as the answer to our POST, the server closing after it."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=1 << 20)
    conn.send(
        h11.Request(method="POST", target="/", headers=[("Host", "x"), ("Content-Length", "2")])
    )
    conn.send(h11.Data(data=b"{}"))
    conn.send(h11.EndOfMessage())
    try:
        conn.receive_data(payload)
        conn.receive_data(b"")
        status, headers, body = 0, {}, b""
        while True:
            event = conn.next_event()
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                for name, value in event.headers:
                    key, text = name.decode("latin-1"), value.decode("latin-1")
                    headers[key] = f"{headers[key]}, {text}" if key in headers else text
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return Parsed(status, headers, body)
            else:  # NEED_DATA after the close, ConnectionClosed: an incomplete response
                return h11.RemoteProtocolError(f"incomplete: {event!r}")
    except h11.RemoteProtocolError as error:
        return error


# -- valid responses ---------------------------------------------------------------------------

TOKEN = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~",
    min_size=1,
    max_size=12,
)
VCHARS = "".join(chr(c) for c in range(0x21, 0x7F))
OWS = st.sampled_from(["", " ", "\t", "  "])
SPACES = st.sampled_from(["", " ", "  "])


MASK = st.integers(0, (1 << 20) - 1)
NAME = TOKEN.filter(lambda n: n.lower() not in FRAMING)
SIZE_FORMAT = st.sampled_from(["{:x}", "{:X}", "0{:x}", "00{:X}"])
EXTENSION = st.sampled_from(["", ";ext", ";name=value", ';q="quoted"'])
CUTS = st.lists(st.integers(0, 1500), max_size=6)
INFORMATIONAL = st.lists(st.sampled_from([100, 102, 103]), max_size=2)
STATUS = st.integers(200, 599)
VERSION = st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"])
REASON = st.text("abcdefghijklmnopqrstuvwxyz ABCXYZ", max_size=20)
BODY = st.binary(max_size=1500)


def random_case(draw: st.DrawFn, text: str) -> str:
    mask = draw(MASK)
    return "".join(c.upper() if mask >> i & 1 else c for i, c in enumerate(text))


FIELD_VALUE = st.text(VCHARS + " ", max_size=24).map(str.strip)


@st.composite
def header_line(draw: st.DrawFn) -> tuple[str, str, str]:
    """(name as sent, value, the whole line)."""
    name = draw(NAME)
    value = draw(FIELD_VALUE)
    return name, value, f"{name}:{draw(OWS)}{value}{draw(OWS)}\r\n"


HEADERS = st.lists(header_line(), max_size=12)
TRAILERS = st.lists(header_line(), max_size=2)
FRAMINGS = st.sampled_from(["length", "close", "chunked"])
FRAMINGS_1_0 = st.sampled_from(["length", "close"])


@st.composite
def chunked(draw: st.DrawFn, body: bytes) -> bytes:
    cuts = sorted(min(cut, len(body)) for cut in draw(CUTS))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    out = []
    for piece in pieces:
        if not piece:
            continue
        size = draw(SIZE_FORMAT).format(len(piece))
        extension = draw(EXTENSION)
        out.append(f"{size}{extension}\r\n".encode() + piece + b"\r\n")
    trailers = draw(TRAILERS)
    out.append(b"0\r\n" + "".join(line for *_, line in trailers).encode() + b"\r\n")
    return b"".join(out)


@st.composite
def valid_response(draw: st.DrawFn) -> bytes:
    informational = draw(INFORMATIONAL)
    status = draw(STATUS)
    version = draw(VERSION)
    reason = draw(REASON)
    headers = draw(HEADERS)
    body = draw(BODY)
    framing = draw(FRAMINGS if version == "HTTP/1.1" else FRAMINGS_1_0)
    lines = "".join(line for *_, line in headers)
    if status in (204, 304):
        framing, body = "none", b""
    if framing == "length":
        name = random_case(draw, "content-length")
        lines += f"{name}:{draw(OWS)}{len(body)}{draw(OWS)}\r\n"
        encoded = body
    elif framing == "chunked":
        name, value = random_case(draw, "transfer-encoding"), random_case(draw, "chunked")
        lines += f"{name}:{draw(SPACES)}{value}{draw(SPACES)}\r\n"  # a tab is refused
        encoded = draw(chunked(body))
    else:
        encoded = body
    heads = "".join(f"HTTP/1.1 {code} Info\r\n\r\n" for code in informational)
    head = f"{heads}{version} {status} {reason}\r\n{lines}\r\n"
    return head.encode("latin-1") + encoded


@settings(max_examples=VALID_EXAMPLES, deadline=None, suppress_health_check=SUPPRESSED)
@given(payload=valid_response())
def test_valid_responses_parse_as_h11_parses_them(stage: Stage, payload: bytes) -> None:
    expected = h11_parse(payload)
    assert isinstance(expected, Parsed), f"the generator made an invalid response: {expected!r}"
    assert stage.client_parse(payload) == expected


# -- invalid responses --------------------------------------------------------------------------

NASTY = [
    b"\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b" ",
    b"\t",
    b":",
    b";",
    b"0",
    b"-1",
    b"ffffffffffffffffff",
    b"Content-Length: 5\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"content-length: 99999999999999999999\r\n",
    b"HTTP/1.1 200 OK\r\n",
    b"\r\n\r\n",
    b"\xff",
]


MUTATIONS = st.integers(1, 4)
POSITION = st.integers(0, 1000)  # per mille of the length
ACTION = st.sampled_from(["insert", "delete", "replace", "truncate"])
INSERT = st.sampled_from(NASTY) | st.binary(min_size=1, max_size=4)
DELETE = st.integers(1, 8)
BYTE = st.integers(0, 255)


@st.composite
def invalid_response(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(valid_response()))
    for _ in range(draw(MUTATIONS)):
        at = len(data) * draw(POSITION) // 1000
        action = draw(ACTION)
        if action == "insert":
            data[at:at] = draw(INSERT)
        elif action == "delete":
            del data[at : at + draw(DELETE)]
        elif action == "replace" and at < len(data):
            data[at] = draw(BYTE)
        else:
            del data[at:]
    return bytes(data)


@settings(max_examples=INVALID_EXAMPLES, deadline=None, suppress_health_check=SUPPRESSED)
@given(payload=invalid_response())
def test_any_response_ends_in_a_result_or_a_client_error(stage: Stage, payload: bytes) -> None:
    got = stage.client_parse(payload)  # a hang fails here (TimeoutError), a crash raises
    expected = h11_parse(payload)
    if isinstance(got, Parsed) and isinstance(expected, Parsed):
        assert (got.status, got.body) == (expected.status, expected.body)
