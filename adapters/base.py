"""What every backend adapter receives and promises.

An adapter gets a plain, frozen :class:`BackendTarget` (built by the router from a registry
deployment; the secret already resolved from its env var reference) and speaks one protocol.

Failures are reported with :class:`UpstreamError` subclasses so the router can decide whether
to try the next allowed candidate (``transient``) and which status to return.

    UpstreamError
    ├── UpstreamConnectError      (transient: refused, reset, DNS, closed without an answer)
    ├── UpstreamTimeout           (transient: ``phase`` connect, write or read)
    ├── UpstreamResponseTooLarge  (not transient: the answer exceeded a cap of the gateway)
    ├── UpstreamPoolTimeout       (not transient, not the backend's failure: the gateway's own
    │                              connection pool had no free slot in time)
    └── UpstreamHTTPError         (status >= 400; transient when 429 or >= 500)

A backend's words never travel further as they came: :func:`sanitized_error` keeps only the
OpenAI ``error`` fields of a backend's error body, length-capped, with the deployment's
credentials redacted (:func:`redact`); a body that is not such JSON is dropped.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import orjson

Endpoint = Literal["chat/completions", "completions", "embeddings"]
Phase = Literal["connect", "write", "read"]

ERROR_MESSAGE_MAX = 500  # characters of a backend's error message a client may see
ERROR_FIELD_MAX = 100  # characters of its type, param and code
REDACTED = "[redacted]"
MIN_SECRET_LEN = 8  # shorter "keys" (test values) are not searched for: they would mangle text
_BEARER = re.compile(r"(?i)(bearer)\s+[^\s\"',;]+")
_ERROR_FIELDS = ("message", "type", "param", "code")


@dataclass(frozen=True, slots=True)
class BackendTarget:
    deployment_id: str
    kind: Literal["openai", "litellm", "local"]
    base_url: str  # ends before "/chat/completions", e.g. "http://127.0.0.1:8080/v1"
    upstream_model: str | None = None  # replaces the request's "model" when set
    api_key: str | None = None
    timeout_s: float = 60.0  # the read timeout: the answer's start, then every silence in it
    connect_timeout_s: float | None = None  # None: the adapter's default
    write_timeout_s: float | None = None
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

    def __init__(self, message: str, *, deployment_id: str = "", phase: Phase = "read") -> None:
        super().__init__(message, deployment_id=deployment_id)
        self.phase = phase


class UpstreamResponseTooLarge(UpstreamError):
    """The backend's response head or body exceeded the gateway's caps."""

    transient = False
    status = 502


class UpstreamPoolTimeout(UpstreamError):
    """No free connection to the backend in time: the gateway is saturated. Not the backend's
    failure (no circuit breaker counts it) and not retried elsewhere: the request already
    waited its pool timeout, and a saturated gateway should shed load, not add attempts."""

    transient = False
    status = 503


class UpstreamHTTPError(UpstreamError):
    """A backend's error status. ``detail`` is the sanitised OpenAI ``error`` object of its
    body (None when the body was not one) and ``body`` that object's envelope, encoded (or
    ``b""``): the raw body is not kept."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        body: bytes,
        deployment_id: str = "",
        secrets: Iterable[str | None] = (),
    ) -> None:
        super().__init__(redact(message, secrets), deployment_id=deployment_id)
        self.status = status
        self.detail = sanitized_error(body, secrets)
        self.body = orjson.dumps({"error": self.detail}) if self.detail else b""
        self.transient = status == 429 or status >= 500


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` without any of ``secrets`` (e.g. the deployment's API key) or a bearer token."""
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_LEN:
            text = text.replace(secret, REDACTED)
    return _BEARER.sub(rf"\1 {REDACTED}", text)


def sanitized_error(body: bytes, secrets: Iterable[str | None]) -> dict[str, str | None] | None:
    """The OpenAI ``error`` fields of a backend's error body, redacted and length-capped; None
    when the body is not ``{"error": {...}}`` JSON (or ``{"error": "text"}``)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, str):
        error = {"message": error}
    if not isinstance(error, dict):
        return None
    secrets = tuple(secrets)
    detail: dict[str, str | None] = {}
    for name in _ERROR_FIELDS:
        value = error.get(name)
        if value is None or isinstance(value, (dict, list)):
            detail[name] = None
            continue
        cap = ERROR_MESSAGE_MAX if name == "message" else ERROR_FIELD_MAX
        detail[name] = redact(str(value), secrets)[:cap]
    return detail


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
