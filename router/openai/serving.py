"""The ``/v1/*`` hot path as plain ASGI: no framework routing, dependency injection or response
classes per request (measured on this machine: a FastAPI route costs ~45 % of non-stream and
~65 % of stream throughput).

    authenticate -> parse body once -> plan (policy) -> try allowed candidates -> relay -> audit
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from adapters.base import UpstreamError, UpstreamHTTPError, UpstreamResponse
from registry.audit_record import AuditRecord, clean_text
from registry.keys import hash_key
from registry.snapshot import DeploymentSnap, KeySnap
from router.departure import Departure
from router.errors import (
    MISSING_API_KEY,
    AuthenticationFailed,
    BadRequest,
    GatewayError,
    InternalError,
    LimitExceeded,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    UpstreamFailed,
)
from router.gateway import Gateway
from router.keys import usable_key
from router.limiter import Admission, Limiter, subjects, usage_of
from router.openai.models import model_list, one_model, visible_models
from router.openai.protocol import (
    OPERATIONS,
    Operation,
    declared_purpose,
    strictest_classification,
)
from router.openai.protocol import parse_body as parse_request
from router.policy import CandidateDecision, RequestContext
from router.receipts import HEADER as RECEIPT_HEADER
from router.receipts import BatchSigner
from router.receipts import payload as receipt_payload
from router.routing import (
    AttemptLog,
    attempt_in_order,
    final_failure,
    not_served,
    outcome_of,
    plan,
)
from router.table import RoutingTable

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

log = logging.getLogger("provenance_router")

CLIENT_DISCONNECTED = "client_disconnected"
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that closed the connection first
JSON = b"application/json"
USAGE = re.compile(rb'"(prompt_tokens|completion_tokens|total_tokens)"\s*:\s*(\d+)')


class Recorder(Protocol):
    """The audit writer as the request path sees it (router.audit.AuditWriter)."""

    @property
    def journal(self) -> object | None: ...

    def begin(self, record: AuditRecord) -> None: ...

    def record(self, record: AuditRecord) -> None: ...


@dataclass(slots=True)
class Exchange:
    """One request's facts as they become known; becomes its audit record."""

    request_id: str
    started: float
    table: RoutingTable
    receipts: BatchSigner | None  # signs the response's receipt (None: not started yet)
    audit: Recorder
    key: KeySnap | None = None
    model: str | None = None
    action: str | None = None
    endpoint: str | None = None  # the operation's ("chat/completions", ...) or "models"
    traceparent: str | None = None  # the client's trace context (kept when tracing is on)
    context: RequestContext | None = None
    decisions: tuple[CandidateDecision, ...] = ()
    log: AttemptLog = field(default_factory=AttemptLog)
    chosen: str | None = None
    status: str = "ok"
    responded: bool = False  # the response has started: no error response can follow
    recorded: bool = False  # its final record went to the audit writer
    http_status: int = 500
    error_code: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    request_bytes: int = 0
    response_bytes: int = 0  # relayed so far (usage estimate when a backend reports none)
    limiter: Limiter | None = None  # set when the key or its tenant has limits
    admission: Admission | None = None  # what the limiter granted, until settled
    limit: str | None = None  # the limit that refused the request (audited), e.g. key:rpm
    limit_headers: tuple[tuple[bytes, bytes], ...] = ()  # that refusal's Retry-After, ...

    def audit_record(self, status: str | None = None) -> AuditRecord:
        """The plain record the audit writer stores (``status`` overrides, for the
        "started" record of strict mode)."""
        table, key = self.table, self.key
        return AuditRecord(
            request_id=self.request_id,
            created_at=datetime.now(UTC),
            status=status or self.status,
            tenant_id=key.tenant_id if key else None,
            key_id=key.id if key else None,
            requested_model=self.model,
            route=self.model if self.model in table.snapshot.routes else None,
            action=self.action or "unknown",
            context=_context_dict(self.context, self.limit),
            evaluation=table.audit_evaluation(self.decisions) if self.decisions else None,
            chosen_deployment=self.chosen,
            attempts=tuple((a.deployment_id, a.outcome, a.latency_ms) for a in self.log.attempts),
            policy_version=table.policy_version,
            registry_version=table.snapshot.version,
            http_status=None if status else self.http_status,
            error_code=self.error_code,
            latency_ms=round((time.perf_counter() - self.started) * 1000, 3),
            prompt_tokens=self.usage.get("prompt_tokens"),
            completion_tokens=self.usage.get("completion_tokens"),
            total_tokens=self.usage.get("total_tokens"),
            endpoint=self.endpoint,
            traceparent=self.traceparent,
        )

    def close(self) -> None:
        """Hand the finished request to the audit writer, once; called before the
        response's last byte (in strict mode the writer journals it before returning)."""
        if not self.recorded:
            self.recorded = True
            self.audit.record(self.audit_record())

    async def finish_limits(self) -> None:
        """Charge a served request's usage to its limits and release its leases, once; called
        before the response's last byte, so a client's next request sees them."""
        admission, limiter = self.admission, self.limiter
        if admission is None or limiter is None:
            return
        self.admission = None
        if self.chosen is not None and (admission.tpm or admission.budgets):
            usage = usage_of(self.usage, self.request_bytes, self.response_bytes)
            deployment = self.table.snapshot.deployments.get(self.chosen)
            await limiter.settle(admission, usage, deployment)
        if admission.leases:
            await limiter.release(admission)


async def serve_v1(gateway: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one ``/v1`` request. Every request but a successful model listing leaves an audit
    row, including those refused before routing (bad key, bad JSON)."""
    exchange = Exchange(
        next(gateway.request_ids),
        time.perf_counter(),
        gateway.table,
        gateway.receipts,
        gateway.audit,
    )
    try:
        await _dispatch(gateway, exchange, scope, receive, send)
    except GatewayError as error:
        if isinstance(error, LimitExceeded):
            exchange.limit, exchange.limit_headers = error.limit, error.headers
        allow = error.allow if isinstance(error, MethodNotAllowed) else ()
        await _fail(send, exchange, error.status, error.error_code, error.body(), allow)
    except UpstreamHTTPError as error:  # non-transient: see _rejection
        status, body = _rejection(error, exchange.request_id)
        await _fail(send, exchange, status, "upstream_rejected", body)
    except UpstreamError as error:  # non-transient, not an HTTP verdict (e.g. pool timeout)
        failure = final_failure(error)
        await _fail(send, exchange, failure.status, failure.error_code, failure.body())
    except Exception:
        if exchange.responded:  # mid-stream: nothing can be said any more; uvicorn closes
            raise
        log.exception("request %s failed inside the gateway", exchange.request_id)
        internal = InternalError(f"The gateway failed to serve request {exchange.request_id}.")
        await _fail(send, exchange, internal.status, internal.error_code, internal.body())
    finally:
        exchange.log.release()
        if exchange.action != "list" or exchange.status != "ok":
            exchange.close()
        await exchange.finish_limits()  # when no response finished them (e.g. a disconnect)


async def _fail(
    send: Send,
    exchange: Exchange,
    status: int,
    code: str | None,
    body: bytes,
    allow: tuple[str, ...] = (),
) -> None:
    exchange.status = "denied" if status == 403 or exchange.limit else "error"
    exchange.http_status, exchange.error_code = status, code
    await _send_error(send, exchange, status, body, allow)


async def _dispatch(
    gateway: Gateway, exchange: Exchange, scope: Scope, receive: Receive, send: Send
) -> None:
    path, method = scope["path"], scope["method"]
    operation = OPERATIONS.get(path)
    if operation is None and path != "/v1/models" and not path.startswith("/v1/models/"):
        raise NotFound(f"Invalid URL ({method} {path}).", code="unknown_url")
    gateway.require_fresh()  # fail closed on a snapshot too stale to trust
    headers = RequestHeaders.of(scope["headers"])
    exchange.action = operation.action if operation else "list"
    exchange.endpoint = operation.endpoint if operation else "models"
    if gateway.tracing:
        exchange.traceparent = traceparent(scope["headers"])
    now = time.time()
    exchange.key = authenticate(exchange.table, headers.authorization, now)
    gateway.key_usage.touch(exchange.key.id, now)
    if operation is None:
        await _serve_models(exchange, path, method, headers, send)
        return
    if method != "POST":
        raise MethodNotAllowed(f"Invalid method {method} for {path}; use POST.", allow=("POST",))
    await _serve_operation(gateway, exchange, operation, headers, receive, send)


@dataclass(slots=True)
class RequestHeaders:
    """The request headers the gateway reads, each with every value the client sent: a
    repeated header must not let its last copy decide (see ``router.openai.protocol``)."""

    authorization: list[bytes] = field(default_factory=list)
    classification: list[bytes] = field(default_factory=list)
    purpose: list[bytes] = field(default_factory=list)
    content_length: bytes = b""  # the server refuses conflicting copies before we see them

    @classmethod
    def of(cls, raw: list[tuple[bytes, bytes]]) -> RequestHeaders:
        headers = cls()
        for name, value in raw:  # ASGI servers give names in lower case
            if name == b"authorization":
                headers.authorization.append(value)
            elif name == b"x-data-classification":
                headers.classification.append(value)
            elif name == b"x-purpose":
                headers.purpose.append(value)
            elif name == b"content-length":
                headers.content_length = value
        return headers


def traceparent(raw: list[tuple[bytes, bytes]]) -> str | None:
    """The W3C ``traceparent`` header (its first copy), for the request's span."""
    for name, value in raw:
        if name == b"traceparent":
            return value.decode("latin-1")
    return None


def authenticate(table: RoutingTable, values: list[bytes], now: float) -> KeySnap:
    """The request's key, usable at UNIX time ``now`` (expiry and rotation grace are checked
    against the clock: ``router.keys``), with the ``inference`` scope."""
    if len(set(values)) > 1:
        raise BadRequest("Send one Authorization header, not several.", code="invalid_header")
    scheme, _, token = (values[0] if values else b"").strip().partition(b" ")
    token = token.strip()
    if scheme.lower() != b"bearer" or not token:  # scheme: any case; "Bearer " is no key
        raise AuthenticationFailed(MISSING_API_KEY)
    key = usable_key(table.key(hash_key(token.decode("latin-1"))), now)
    if "inference" not in key.scopes:
        raise PermissionDenied("This API key does not have the `inference` scope.")
    return key


def request_context(table: RoutingTable, key: KeySnap, headers: RequestHeaders) -> RequestContext:
    """What the request says about itself, checked: it can only tighten the tenant's policy."""
    tenant = table.snapshot.tenants.get(key.tenant_id)
    default = tenant.default_classification if tenant else "restricted"
    return RequestContext(
        classification=strictest_classification(headers.classification, default),
        purpose=declared_purpose(headers.purpose, tenant.purposes if tenant else frozenset()),
        caller_region=tenant.region if tenant else None,
    )


async def _serve_operation(
    gateway: Gateway,
    exchange: Exchange,
    operation: Operation,
    headers: RequestHeaders,
    receive: Receive,
    send: Send,
) -> None:
    key, table = exchange.key, exchange.table
    assert key is not None
    raw = await read_body(receive, headers.content_length, gateway.settings.max_request_body_bytes)
    exchange.request_bytes = len(raw)
    request = parse_request(raw, operation)
    exchange.model = request.model
    exchange.context = request_context(table, key, headers)
    routed = plan(
        table,
        model=request.model,
        tenant_id=key.tenant_id,
        action=operation.action,
        context=exchange.context,
        health=gateway.health,
        rng=gateway.rng,
        key=key,
    )
    exchange.decisions = routed.decisions
    if not routed.ordered:
        raise not_served(table, request.model, routed.decisions)
    limited = subjects(table.snapshot, key)
    if limited:  # docs/keys.md: a 429 here, before any backend is called
        exchange.limiter = gateway.limiter
        exchange.admission = await gateway.limiter.admit(limited, exchange.request_id)
    if exchange.audit.journal is not None:  # strict: a backend call leaves a record
        exchange.audit.begin(exchange.audit_record(status="interrupted"))

    async def call(deployment: DeploymentSnap, timeout_s: float) -> UpstreamResponse:
        target = table.targets[deployment.id]
        if timeout_s < target.timeout_s:  # the request's overall deadline is nearer
            target = replace(target, timeout_s=timeout_s)
        adapter = gateway.adapter(target.kind)
        return await adapter.send(target, operation.endpoint, raw, request.body, request.stream)

    departure = Departure(receive, gateway.departures)
    try:
        await _call_and_relay(gateway, exchange, routed.ordered, call, send, departure)
    except asyncio.CancelledError:
        if not departure.cancelled_us():
            raise
        exchange.status, exchange.http_status = CLIENT_DISCONNECTED, CLIENT_CLOSED_REQUEST
        exchange.error_code = CLIENT_DISCONNECTED
    finally:
        departure.stop()


async def _call_and_relay(
    gateway: Gateway,
    exchange: Exchange,
    ordered: Sequence[DeploymentSnap],
    call: Callable[[DeploymentSnap, float], Awaitable[UpstreamResponse]],
    send: Send,
    departure: Departure,
) -> None:
    deployment, response = await attempt_in_order(
        ordered,
        call,
        health=gateway.health,
        log=exchange.log,
        max_attempts=gateway.settings.max_attempts,
        deadline_s=gateway.settings.request_deadline_s,
    )
    exchange.chosen = deployment.id
    if response.chunks is None:
        departure.responding()
        await _relay_body(exchange, response, send)
    else:
        departure.relaying(response)
        await _relay_stream(exchange, response, send, departure)


async def _response_headers(
    exchange: Exchange, content_type: bytes, status: int
) -> list[tuple[bytes, bytes]]:
    """The headers every /v1 response starts with, its signed receipt included: this is the
    one place where responses start (success, error, stream, model listing)."""
    table = exchange.table
    headers = [(b"content-type", content_type), (b"x-request-id", exchange.request_id.encode())]
    if exchange.chosen is not None:
        headers.extend(table.headers[exchange.chosen])
    headers.append((b"x-provenance-policy-version", str(table.policy_version).encode()))
    if exchange.admission is not None:
        headers.extend(exchange.admission.headers)
    headers.extend(exchange.limit_headers)
    if exchange.receipts is not None:
        headers.append((RECEIPT_HEADER, await _receipt(exchange, exchange.receipts, status)))
    return headers


def _receipt(exchange: Exchange, receipts: BatchSigner, status: int) -> Awaitable[bytes]:
    table, decisions = exchange.table, exchange.decisions
    payload = receipt_payload(
        receipts.signer,
        rid=exchange.request_id,
        tenant=exchange.key.tenant_id if exchange.key else None,
        model=clean_text(exchange.model) if exchange.model else exchange.model,  # as audited
        deployment=exchange.chosen,
        policy_version=table.policy_version,
        registry_version=table.registry_version,
        decision=table.audit_evaluation(decisions).id if decisions else None,
        status=status,
    )
    return receipts.receipt(payload)


async def _relay_body(exchange: Exchange, response: UpstreamResponse, send: Send) -> None:
    body = response.body or b""
    headers = await _response_headers(
        exchange, response.content_type.encode("latin-1"), response.status
    )
    headers.append((b"content-length", str(len(body)).encode()))
    encoding = response.headers.get("content-encoding")
    if encoding:  # an upstream that compressed despite Accept-Encoding: identity
        headers.append((b"content-encoding", encoding.encode("latin-1")))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    exchange.status, exchange.http_status = "ok", response.status
    exchange.usage = _usage(body[-512:])
    exchange.response_bytes = len(body)
    await exchange.finish_limits()
    exchange.close()
    await send({"type": "http.response.body", "body": body})


async def _relay_stream(
    exchange: Exchange, response: UpstreamResponse, send: Send, departure: Departure
) -> None:
    """Relay SSE bytes as they arrive. After the first byte nothing is retried: a failing
    backend ends the stream with an SSE error event and ``[DONE]``, never a silent cut. A client
    that goes away closes the upstream at once (``departure``: a model stops generating for
    nobody)."""
    assert response.chunks is not None
    headers = await _response_headers(
        exchange, response.content_type.encode("latin-1"), response.status
    )
    headers.append((b"cache-control", b"no-cache"))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    exchange.status, exchange.http_status, exchange.responded = "ok", response.status, True
    previous = last = b""
    try:
        async for chunk in response.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            previous, last = last, chunk
            exchange.response_bytes += len(chunk)
    except UpstreamError as error:
        if departure.left:  # we closed the upstream because the client left
            return
        exchange.status, exchange.error_code = "stream_error", "upstream_stream_error"
        # the details (backend address, socket error) stay in the gateway's log
        log.warning("request %s: stream broke: %s", exchange.request_id, error)
        failure = UpstreamFailed(f"The backend failed mid-stream ({outcome_of(error)}).")
        frame = b"event: error\ndata: " + failure.body() + b"\n\ndata: [DONE]\n\n"
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    finally:
        departure.stop()
        await response.aclose()  # a send that failed or was cancelled must not hold it open
        tail = previous + last
        exchange.usage = _usage(tail)
        # A client may hang up as soon as it has read [DONE], before the backend closes: that
        # stream was delivered whole. Only a disconnect before [DONE] is a broken-off request.
        if departure.left and not tail.rstrip().endswith(b"data: [DONE]"):
            exchange.status, exchange.error_code = CLIENT_DISCONNECTED, CLIENT_DISCONNECTED
    await exchange.finish_limits()
    exchange.close()
    await send({"type": "http.response.body", "body": b""})


def _usage(tail: bytes) -> dict[str, int]:
    """Token usage from the end of a response, without parsing the whole body."""
    return {name.decode(): int(value) for name, value in USAGE.findall(tail)}


async def _serve_models(
    exchange: Exchange,
    path: str,
    method: str,
    headers: RequestHeaders,
    send: Send,
) -> None:
    if method != "GET":
        raise MethodNotAllowed(f"Invalid method {method} for {path}; use GET.", allow=("GET",))
    assert exchange.key is not None
    context = request_context(exchange.table, exchange.key, headers)
    visible = visible_models(exchange.table, exchange.key, context)
    body = model_list(visible) if path == "/v1/models" else one_model(visible, path[11:])
    headers_out = await _response_headers(exchange, JSON, 200)
    headers_out.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers_out})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive, content_length: bytes, max_bytes: int) -> bytes:
    """The whole request body, at most ``max_bytes`` (a declared larger one is refused before
    a byte of it is read). One copy: the pieces are joined once and dropped."""
    declared = content_length.strip()
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            chunks.clear()
            raise _too_large(max_bytes)
        chunks.append(chunk)
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body larger than {max_bytes} bytes.")


async def _send_error(
    send: Send, exchange: Exchange, status: int, body: bytes, allow: tuple[str, ...] = ()
) -> None:
    headers = await _response_headers(exchange, JSON, status)
    headers.append((b"content-length", str(len(body)).encode()))
    if allow:  # RFC 9110: a 405 names the methods the path serves
        headers.append((b"allow", ", ".join(allow).encode()))
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await exchange.finish_limits()
    exchange.close()
    await send({"type": "http.response.body", "body": body})


PASSTHROUGH_STATUSES = frozenset({400, 413, 422})


def _rejection(error: UpstreamHTTPError, request_id: str) -> tuple[int, bytes]:
    """The client's status and body for a backend's final verdict, built only from the
    sanitised OpenAI fields of its error (``error.detail``), never from its raw body.

    A verdict on the request itself (400, 413, 422) reaches the client with that status.
    Anything else (401/403/404 from the backend) means the gateway's deployment is
    misconfigured: that is the gateway's failure (502), not the client's bad key or model,
    and the backend's words about it go to the log only."""
    detail = error.detail
    if error.status not in PASSTHROUGH_STATUSES:
        log.warning(
            "request %s: deployment %s answered %d: %s",
            request_id,
            error.deployment_id,
            error.status,
            detail.get("message") if detail else "(no OpenAI error body)",
        )
        failure = UpstreamFailed(
            f"Deployment {error.deployment_id} rejected the gateway's request ({error.status})."
        )
        return failure.status, failure.body()
    if detail is None or not detail.get("message"):
        return error.status, BadRequest(
            f"The backend rejected the request ({error.status}).", code="upstream_rejected"
        ).body()
    envelope = {"error": {**detail, "type": detail.get("type") or "invalid_request_error"}}
    return error.status, orjson.dumps(envelope)


def _context_dict(context: RequestContext | None, limit: str | None) -> dict[str, Any] | None:
    if context is None:
        return None
    values = {
        "classification": context.classification,
        "purpose": context.purpose,
        "caller_region": context.caller_region,
    }
    if limit is not None:  # the limit that refused the request (docs/keys.md)
        values["limit"] = limit
    return values
