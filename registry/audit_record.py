"""The audit record and its hash chain: plain values and pure functions, no I/O.

The request path builds one :class:`AuditRecord` (plain, immutable values) when a request
ends and hands it to the audit writer; everything else happens in the writer's thread:

    AuditRecord --sanitize--> row values --chain (seq, prev_hash)--> row_hash --> INSERT

Chain: each writer (one per gateway process) has a random ``chain_id``; its rows get
``seq`` = 1, 2, 3, ..., ``prev_hash`` = the previous row's ``row_hash`` (:data:`GENESIS` for
seq 1) and ``row_hash`` = SHA-256 of :func:`canonical` (every stored column but the
database's own ``id`` and ``row_hash`` itself, keys sorted, timestamps as UTC ISO strings).
Checkpoints sign a chain's head (``seq``, ``row_hash``) with the gateway's Ed25519 key; the
signed message is :func:`checkpoint_message`.

No record is ever refused for its content: :func:`sanitize` escapes what a database cannot
store (NUL characters, invalid UTF-8, text longer than :data:`MAX_TEXT`) and the row is
flagged ``sanitized``; :func:`unstorable` is the last resort for a row a database still
rejects (every text escaped to ASCII).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

GENESIS = "0" * 64
MAX_TEXT = 512  # characters kept of any text field; the rest is cut and the row flagged
CHECKPOINT_CONTEXT = b"provenance-router audit checkpoint v1\n"


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A routing decision's candidates (the policy's verdict on each), encoded once, with the
    digest under which ``decision_evaluations`` stores it. The router makes one per cached
    verdict, so neither encoding nor hashing happens per request."""

    id: str
    encoded: orjson.Fragment

    @classmethod
    def of(cls, candidates: Sequence[Mapping[str, Any]]) -> Evaluation:
        encoded = orjson.dumps(candidates)
        return cls(digest(encoded), orjson.Fragment(encoded))


def digest(encoded: bytes) -> str:
    """The evaluation id of an encoded candidate list: hex BLAKE2b-128."""
    return hashlib.blake2b(encoded, digest_size=16).hexdigest()


class AuditRecord(NamedTuple):
    """One request as the audit log keeps it: plain values only, built once at its end (a
    named tuple: immutable, and the cheapest record Python builds, since the request path
    builds one per request). ``status == "interrupted"`` marks a request that started but
    never finished (strict mode journals that record before calling a backend, and a restart
    stores it when the process died before the request ended)."""

    request_id: str
    created_at: datetime
    status: str
    tenant_id: str | None = None
    key_id: str | None = None
    requested_model: str | None = None
    route: str | None = None
    action: str = "unknown"
    context: Mapping[str, str | None] | None = None
    evaluation: Evaluation | None = None
    chosen_deployment: str | None = None
    attempts: tuple[tuple[str, str, float], ...] = ()  # (deployment, outcome, latency_ms)
    policy_version: int | None = None
    registry_version: int | None = None
    http_status: int | None = None
    error_code: str | None = None
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    # Not stored in the audit log; for metrics and traces (router.telemetry):
    endpoint: str | None = None  # the /v1 operation ("chat/completions", ..., "models")
    traceparent: str | None = None  # the client's W3C trace context, when tracing is on


def encode(record: AuditRecord) -> bytes:
    """The record as one JSON array in field order (the strict-mode journal line): orjson
    writes a named tuple, its timestamp and the already encoded candidates directly."""
    return orjson.dumps(tuple(record))


def decode(data: bytes) -> AuditRecord:
    """The inverse of :func:`encode`."""
    values: list[Any] = orjson.loads(data)
    values[_CREATED_AT] = datetime.fromisoformat(values[_CREATED_AT])
    evaluation = values[_EVALUATION]  # {"id": ..., "encoded": [...candidates]}
    values[_EVALUATION] = Evaluation.of(evaluation["encoded"]) if evaluation else None
    values[_ATTEMPTS] = tuple((d, o, ms) for d, o, ms in values[_ATTEMPTS])
    return AuditRecord(*values)


_CREATED_AT, _EVALUATION, _ATTEMPTS = (
    AuditRecord._fields.index(name) for name in ("created_at", "evaluation", "attempts")
)


# --- rows ----------------------------------------------------------------------------------

TEXT_FIELDS = (
    "request_id",
    "tenant_id",
    "key_id",
    "requested_model",
    "route",
    "action",
    "chosen_deployment",
    "status",
    "error_code",
)


def row_values(record: AuditRecord) -> dict[str, Any]:
    """The ``routing_decisions`` columns of a record (without its chain fields)."""
    return {
        "request_id": record.request_id,
        "created_at": record.created_at,
        "tenant_id": record.tenant_id,
        "key_id": record.key_id,
        "requested_model": record.requested_model,
        "route": record.route,
        "action": record.action,
        "context": dict(record.context) if record.context is not None else None,
        "candidates": [],
        "evaluation_id": record.evaluation.id if record.evaluation else None,
        "chosen_deployment": record.chosen_deployment,
        "attempts": [
            {"deployment": d, "outcome": o, "latency_ms": ms} for d, o, ms in record.attempts
        ],
        "policy_version": record.policy_version,
        "registry_version": record.registry_version,
        "status": record.status,
        "http_status": record.http_status,
        "error_code": record.error_code,
        "latency_ms": record.latency_ms,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "total_tokens": record.total_tokens,
        "sanitized": False,
    }


def clean_text(text: str) -> str:
    """``text`` as any database stores it: NUL escaped as ``\\u0000``, invalid UTF-8 (lone
    surrogates) backslash-escaped, cut to :data:`MAX_TEXT` characters."""
    if "\x00" in text:
        text = text.replace("\x00", "\\u0000")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
    if len(text) > MAX_TEXT:
        text = f"{text[:MAX_TEXT]}...[{len(text) - MAX_TEXT} more characters cut]"
    return text


def _needs_cleaning(text: str) -> bool:
    if len(text) > MAX_TEXT or "\x00" in text:
        return True
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def sanitize(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every text a database could refuse cleaned, flagged ``sanitized``;
    the same dict when nothing needed it (the common case costs a few checks)."""
    dirty = [f for f in TEXT_FIELDS if isinstance(values[f], str) and _needs_cleaning(values[f])]
    context = values["context"] or {}
    dirty_context = any(isinstance(v, str) and _needs_cleaning(v) for v in context.values())
    dirty_attempts = any(
        _needs_cleaning(a["deployment"]) or _needs_cleaning(a["outcome"])
        for a in values["attempts"]
    )
    if not (dirty or dirty_context or dirty_attempts):
        return values
    cleaned = {**values, "sanitized": True}
    for name in dirty:
        cleaned[name] = clean_text(values[name])
    if dirty_context:
        cleaned["context"] = {
            clean_text(k): clean_text(v) if isinstance(v, str) else v for k, v in context.items()
        }
    if dirty_attempts:
        cleaned["attempts"] = [
            {**a, "deployment": clean_text(a["deployment"]), "outcome": clean_text(a["outcome"])}
            for a in values["attempts"]
        ]
    return cleaned


def unstorable(values: dict[str, Any]) -> dict[str, Any]:
    """The last resort for a row a database rejected even after :func:`sanitize`: every text
    escaped to printable ASCII and cut, JSON fields reduced to their escaped text."""
    cleaned = {**values, "sanitized": True}
    for name in TEXT_FIELDS:
        if isinstance(values[name], str):
            cleaned[name] = ascii(values[name])[1:-1][:MAX_TEXT]
    for name in ("context", "attempts"):
        if values[name]:
            text = ascii(orjson.dumps(values[name], default=str))[2:-1][:MAX_TEXT]
            cleaned[name] = {"unstorable": text} if name == "context" else [{"unstorable": text}]
    return cleaned


# --- chain ---------------------------------------------------------------------------------

CHAIN_FIELDS = ("chain_id", "seq", "prev_hash", "row_hash")


def iso(moment: datetime) -> str:
    """A timestamp as the chain encodes it: UTC, microseconds (naive means UTC, as stored)."""
    if moment.tzinfo is not UTC:
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")


def canonical(row: Mapping[str, Any]) -> bytes:
    """The bytes a row's hash covers: every column but ``id`` and ``row_hash``, keys sorted."""
    values = dict(row)
    values.pop("id", None)
    values.pop("row_hash", None)
    values["created_at"] = iso(values["created_at"])
    return orjson.dumps(values, option=orjson.OPT_SORT_KEYS)


def row_hash(row: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(row)).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where a writer's chain stands: the last stored row's ``seq`` and ``row_hash``."""

    chain_id: str
    seq: int = 0
    hash: str = GENESIS


def chain(head: ChainHead, rows: Sequence[dict[str, Any]]) -> ChainHead:
    """Give ``rows`` (in order) their chain fields, in place; returns the new head."""
    seq, previous = head.seq, head.hash
    for row in rows:
        seq += 1
        row["chain_id"], row["seq"], row["prev_hash"] = head.chain_id, seq, previous
        row["row_hash"] = previous = row_hash(row)
    return ChainHead(head.chain_id, seq, previous)


def checkpoint_message(
    *, chain_id: str, seq: int, head_hash: str, created_at: datetime, kind: str
) -> bytes:
    """What a checkpoint's Ed25519 signature covers."""
    body = {
        "chain_id": chain_id,
        "seq": seq,
        "head_hash": head_hash,
        "created_at": iso(created_at),
        "kind": kind,
    }
    return CHECKPOINT_CONTEXT + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
