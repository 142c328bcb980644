"""What every backend adapter receives and promises.

An adapter gets a plain, frozen :class:`BackendTarget` (built by the router from a registry
deployment; the secret already resolved from its env var reference) and speaks one protocol.

Failures are reported with :class:`UpstreamError` subclasses so the router can decide whether
to try the next allowed candidate (``transient``) and which status to return.

    UpstreamError
    ├── UpstreamConnectError   (transient: refused, reset, DNS)
    ├── UpstreamTimeout        (transient: no response before the deadline)
    └── UpstreamHTTPError      (status >= 400; transient when 429 or >= 500)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

Endpoint = Literal["chat/completions", "completions", "embeddings"]


@dataclass(frozen=True, slots=True)
class BackendTarget:
    deployment_id: str
    kind: Literal["openai", "litellm", "local"]
    base_url: str  # ends before "/chat/completions", e.g. "http://127.0.0.1:8080/v1"
    upstream_model: str | None = None  # replaces the request's "model" when set
    api_key: str | None = None
    timeout_s: float = 60.0
    extra: Mapping[str, str] = field(default_factory=dict)


class UpstreamError(Exception):
    """A backend did not give a usable answer."""

    transient: bool = True
    status: int = 502

    def __init__(self, message: str, *, deployment_id: str = "") -> None:
        super().__init__(message)
        self.deployment_id = deployment_id


class UpstreamConnectError(UpstreamError):
    status = 502


class UpstreamTimeout(UpstreamError):
    status = 504


class UpstreamHTTPError(UpstreamError):
    def __init__(self, message: str, *, status: int, body: bytes, deployment_id: str = "") -> None:
        super().__init__(message, deployment_id=deployment_id)
        self.status = status
        self.body = body
        self.transient = status == 429 or status >= 500


@dataclass(slots=True)
class UpstreamResponse:
    """A started upstream response. ``body`` is set for non-stream answers; ``chunks`` yields
    the raw bytes of a stream as they arrive (SSE frames untouched). ``headers`` are the
    upstream's response headers, names in lower case."""

    status: int
    content_type: str
    body: bytes | None = None
    chunks: AsyncIterator[bytes] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    async def aclose(self) -> None:
        """Release a stream that will not be read to its end (idempotent; no-op otherwise).

        Adapters' ``chunks`` iterators expose ``aclose()``; call this when the client goes away
        before the stream ends, so the upstream connection is returned or closed."""
        close = getattr(self.chunks, "aclose", None)
        if close is not None:
            await close()


class Adapter(Protocol):
    """A backend protocol. ``raw`` is the client's JSON body as received and ``body`` the same,
    parsed once; an adapter forwards ``raw`` untouched unless it must change it (e.g. the
    upstream model name differs)."""

    async def send(
        self,
        target: BackendTarget,
        endpoint: Endpoint,
        raw: bytes,
        body: dict[str, object],
        stream: bool,
    ) -> UpstreamResponse:
        """Start a request. Raises UpstreamError before any byte is returned to the router.

        For ``stream=True`` the returned ``chunks`` iterator may raise UpstreamError mid-stream."""
        ...

    async def health(self, target: BackendTarget) -> bool: ...

    async def close(self) -> None: ...
