"""The vocabulary of the fast path's HTTP client (:mod:`adapters.http1`): where a request
goes (:class:`URL`), the caps and timeouts it runs under, and what can go wrong.

    ClientError
    ├── ConnectError            no connection, or it closed before a response started
    │   └── StaleConnection     a pooled connection found closed before the write
    ├── ProtocolError           malformed or broken response
    │   └── ResponseTooLarge    a cap on the head or the body was exceeded
    └── Timeout (TimeoutError)
        ├── PoolTimeout         no free connection in time: this client is saturated
        ├── ConnectTimeout
        ├── WriteTimeout
        └── ReadTimeout
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit

MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 100
MAX_BODY_BYTES = 64 * 1024 * 1024


class ClientError(Exception):
    """The request failed; nothing usable came back."""


class ConnectError(ClientError):
    """No connection, or it closed before the response started."""


class ProtocolError(ClientError):
    """The response was malformed, or the connection broke while it was being read."""


class ResponseTooLarge(ProtocolError):
    """The response's head or body exceeded the client's caps."""


class StaleConnection(ConnectError):
    """A pooled connection was found closed before a byte of the request was written."""


class Timeout(ClientError, TimeoutError):
    """A phase of the request took longer than allowed."""


class PoolTimeout(Timeout):
    """No free connection in time: this client's own limit, not the server's fault."""


class ConnectTimeout(Timeout):
    """The connection (TCP, TLS) was not established in time."""


class WriteTimeout(Timeout):
    """The request's bytes did not leave in time (the server does not read them)."""


class ReadTimeout(Timeout):
    """The response, or its next bytes, did not arrive in time."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps on what a server may send, and on this client's connections."""

    connections: int = 1024  # at once, all origins
    per_origin: int = 256  # at once, to one origin
    max_header_bytes: int = MAX_HEADER_BYTES  # the response head (incl. 1xx heads)
    max_headers: int = MAX_HEADERS
    max_body_bytes: int = MAX_BODY_BYTES  # a body read whole; streams are not capped


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds per phase; ``read`` bounds the wait for the head and every wait for more body."""

    read: float
    connect: float | None = None  # None: ``read``
    write: float | None = None
    pool: float | None = None

    @classmethod
    def of(cls, timeout: float | Timeouts) -> Timeouts:
        return timeout if isinstance(timeout, Timeouts) else cls(timeout)


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
