"""The admin API's OpenAPI document, made to say what the API really does (issue 17).

FastAPI documents what it sees: a 200 and its own 422 on every route. The admin API answers
validation errors with 400 and every error in the OpenAI envelope, so ``build_admin_app``
rewrites the document once, here, for every route alike:

- the error body is one component, ``Error`` (``{"error": {"message", "type", "param",
  "code"}}``); FastAPI's 422 and its ``HTTPValidationError`` schemas are gone;
- each operation lists the statuses it really returns, derived from what the route is:

      400  it takes parameters or a body (request validation, registry validation)
      401  it needs an API key (the ``bearer`` security scheme), with ``WWW-Authenticate``
      403  ... and the key lacks the scope
      503  ... ``registry_busy``: the key lookup or the write found the database busy,
           with ``Retry-After``
      404, 409  declared by the route itself with :func:`errors` (a named entity, a
           compare-and-set write or a duplicate)

- the large vocabularies (countries, licenses, hardware: every accepted spelling) are one
  component each, referred to by every field that uses them (``x-vocabulary`` names them);
- schemas no operation refers to any more are dropped.

An unsupported method on an existing path answers 405 with ``Allow`` (``router.admin.errors``);
OpenAPI has no place for that per operation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from registry.validation import VOCABULARY_KEY

__all__ = ["ErrorEnvelope", "errors", "install_openapi"]

ERROR_SCHEMA = "Error"
_REF_PREFIX = "#/components/schemas/"
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

DESCRIPTIONS: dict[int, str] = {
    400: "Invalid request: `param` names the field (code `invalid_value`, ...)",
    401: "Missing or invalid API key (code `invalid_api_key`)",
    403: "The API key lacks the scope this endpoint needs (code `insufficient_scope`)",
    404: "No such entity (code `not_found`, `model_not_found`, `tenant_not_found`)",
    409: "Stale `version`, duplicate id or concurrent write (code `version_conflict`)",
    503: "The registry database is busy (code `registry_busy`); retry after `Retry-After`",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    503: {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
}


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str
    type: str = Field(description="e.g. invalid_request_error, permission_error, api_error")
    param: str | None = Field(description="The request field the error is about, if any")
    code: str | None = Field(description="e.g. invalid_api_key, not_found, version_conflict")


class ErrorEnvelope(BaseModel):
    """Every error of the gateway, in the OpenAI shape (``router.errors``)."""

    model_config = ConfigDict(extra="forbid", title=ERROR_SCHEMA)

    error: ErrorDetail


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that may also answer these error statuses (404, 409)."""
    return {status: _error_response(status) for status in statuses}


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": _REF_PREFIX + ERROR_SCHEMA}}},
    }
    if status in _HEADERS:
        response["headers"] = _HEADERS[status]
    return response


def install_openapi(app: FastAPI, extra_schemas: dict[str, Any]) -> None:
    """Serve the rewritten document (built once, on first request); ``extra_schemas`` are
    components the routes refer to by ``$ref`` only (bodies the service validates itself)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = truthful(build(), extra_schemas)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def truthful(document: dict[str, Any], extra_schemas: dict[str, Any]) -> dict[str, Any]:
    """``document`` (as FastAPI built it) with the statuses and error schema the API uses."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(extra_schemas)
    schemas[ERROR_SCHEMA] = _error_schema()
    for operation in _operations(document):
        responses = operation.setdefault("responses", {})
        responses.pop("422", None)
        for status in _derived_statuses(operation):
            responses.setdefault(str(status), _error_response(status))
        operation["responses"] = dict(sorted(responses.items()))
    _share_vocabularies(schemas, schemas)
    _drop_unreferenced(schemas, document)
    return document


def _share_vocabularies(node: Any, schemas: dict[str, Any]) -> None:
    """Move every schema marked ``x-vocabulary`` into a component of that name; the field
    keeps its own title and default next to the ``$ref``."""
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in list(children):
        if isinstance(child, dict) and VOCABULARY_KEY in child:
            name = child.pop(VOCABULARY_KEY)
            own = {key: child.pop(key) for key in ("title", "default") if key in child}
            schemas.setdefault(name, dict(child))
            child.clear()
            child.update({"$ref": _REF_PREFIX + name, **own})
        else:
            _share_vocabularies(child, schemas)


def _error_schema() -> dict[str, Any]:
    schema = ErrorEnvelope.model_json_schema(ref_template=_REF_PREFIX + "{model}")
    detail = schema.pop("$defs")["ErrorDetail"]
    schema["properties"]["error"] = detail
    return schema


def _operations(document: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for item in document.get("paths", {}).values():
        for method in _METHODS:
            if method in item:
                yield item[method]


def _derived_statuses(operation: dict[str, Any]) -> list[int]:
    statuses = []
    if operation.get("parameters") or operation.get("requestBody"):
        statuses.append(400)
    if operation.get("security"):
        statuses.extend((401, 403, 503))
    return statuses


def _drop_unreferenced(schemas: dict[str, Any], document: dict[str, Any]) -> None:
    """Remove FastAPI's validation schemas and whatever no operation reaches any more."""
    for name in _FASTAPI_VALIDATION:
        schemas.pop(name, None)
    reached: set[str] = set()
    pending = _refs(document.get("paths", {}))
    while pending:
        name = pending.pop()
        if name in reached or name not in schemas:
            continue
        reached.add(name)
        pending |= _refs(schemas[name])
    for name in set(schemas) - reached:
        del schemas[name]


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {
            ref.removeprefix(_REF_PREFIX)
            for key, ref in node.items()
            if key == "$ref" and isinstance(ref, str)
        }
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        found = set()
        for value in node:
            found |= _refs(value)
        return found
    return set()
