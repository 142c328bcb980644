"""The OpenAI endpoints the gateway serves and the little it validates of their bodies.

The body is parsed once (orjson) and only what routing needs is checked; every other field
passes through to the backend untouched, so new OpenAI parameters work without a release.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from adapters.base import Endpoint
from router.errors import BadRequest
from router.policy.schema import CLASSIFICATIONS


@dataclass(frozen=True, slots=True)
class Operation:
    endpoint: Endpoint
    action: Literal["infer", "embed"]
    required: str  # the field a request cannot do without
    required_type: type
    streams: bool


OPERATIONS: dict[str, Operation] = {
    "/v1/chat/completions": Operation("chat/completions", "infer", "messages", list, True),
    "/v1/completions": Operation("completions", "infer", "prompt", object, True),
    "/v1/embeddings": Operation("embeddings", "embed", "input", object, False),
}


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    body: dict[str, Any]
    model: str
    stream: bool


def parse_body(raw: bytes, operation: Operation) -> ParsedRequest:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise BadRequest(
            f"We could not parse the JSON body of your request ({error}). "
            "Send a JSON object with Content-Type: application/json."
        ) from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("You must provide a model parameter.", param="model")
    value = body.get(operation.required)
    if value is None or not isinstance(value, operation.required_type):
        kind = "an array" if operation.required_type is list else "a value"
        raise BadRequest(
            f"`{operation.required}` is required and must be {kind}.", param=operation.required
        )
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise BadRequest("`stream` must be a boolean.", param="stream")
    return ParsedRequest(body=body, model=model, stream=bool(stream) and operation.streams)


def strictest_classification(values: Sequence[bytes], tenant_default: str) -> str:
    """The classification of a request: the strictest of every ``X-Data-Classification`` value
    it sends (repeated headers and comma-separated lists alike) and of its tenant's default.

    Request context can only tighten: sending ``confidential`` and then ``public`` is
    ``confidential``. A value that is not a known label is refused (400), never guessed. A
    tenant default that is not a known label counts as the strictest (fail closed)."""
    rank = CLASSIFICATIONS.index
    strictest = tenant_default if tenant_default in CLASSIFICATIONS else CLASSIFICATIONS[-1]
    for label in _items(values):
        if label not in CLASSIFICATIONS:
            raise BadRequest(
                f"Unknown X-Data-Classification `{label}`; use one of: "
                f"{', '.join(CLASSIFICATIONS)}.",
                param="X-Data-Classification",
                code="invalid_classification",
            )
        if rank(label) > rank(strictest):
            strictest = label
    return strictest


def declared_purpose(values: Sequence[bytes], vocabulary: frozenset[str]) -> str | None:
    """The purpose a request declares in ``X-Purpose``: one value from its tenant's declared
    vocabulary (matched ignoring case), or none. Anything else is refused (400): a free-text
    purpose would let one caller fill the decision caches, and two purposes are ambiguous."""
    declared = set(_items(values))
    if not declared:
        return None
    unknown = sorted(declared - vocabulary)
    if unknown:
        accepted = ", ".join(sorted(vocabulary)) or "none (this tenant declares no purposes)"
        raise BadRequest(
            f"Unknown X-Purpose `{unknown[0]}`; this tenant's purposes are: {accepted}.",
            param="X-Purpose",
            code="invalid_purpose",
        )
    if len(declared) > 1:
        raise BadRequest(
            f"Declare one X-Purpose, not {len(declared)} ({', '.join(sorted(declared))}).",
            param="X-Purpose",
            code="invalid_purpose",
        )
    return declared.pop()


def _items(values: Sequence[bytes]) -> list[str]:
    """The comma-separated items of every value of a repeated header, trimmed, lower case."""
    return [
        item.strip().lower()
        for value in values
        for item in value.decode("latin-1").split(",")
        if item.strip()
    ]
