"""The OpenAI endpoints the gateway serves and the little it validates of their bodies.

The body is parsed once (orjson) and only what routing needs is checked; every other field
passes through to the backend untouched, so new OpenAI parameters work without a release.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from adapters.base import Endpoint
from router.errors import BadRequest

CLASSIFICATIONS = ("public", "internal", "confidential", "restricted")  # least to most strict


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


def stricter_classification(requested: str | None, tenant_default: str) -> str:
    """The request may tighten the tenant's default classification, never loosen it.

    A tenant default that is not a known label counts as the strictest (fail closed), as in
    the policy engine; passing it on unchanged would make every such request fail."""
    if tenant_default not in CLASSIFICATIONS:
        tenant_default = CLASSIFICATIONS[-1]
    if requested is None:
        return tenant_default
    if requested not in CLASSIFICATIONS:
        allowed = ", ".join(CLASSIFICATIONS)
        raise BadRequest(
            f"Unknown X-Data-Classification `{requested}`; use one of: {allowed}.",
            param="X-Data-Classification",
        )
    rank = CLASSIFICATIONS.index
    return requested if rank(requested) >= rank(tenant_default) else tenant_default
