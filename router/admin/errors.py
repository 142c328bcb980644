"""Every admin API error in the OpenAI envelope, using the classes of ``router.errors``.

RegistryError                 -> GatewayError
├── ValidationFailed          -> BadRequest 400 (param = the field)
├── NotFoundError             -> NotFound 404
├── ConflictError             -> Conflict 409
└── BusyError                 -> RegistryBusy 503 (with Retry-After)
RequestValidationError        -> BadRequest 400 (param = the field, message names it)
HTTPException 404/405/...     -> NotFound / MethodNotAllowed (with Allow) / the same status
anything else                 -> GatewayError 500 (no internals in the message)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.routing import Match

from registry.service import (
    BusyError,
    ConflictError,
    NotFoundError,
    RegistryError,
    ValidationFailed,
)
from router.errors import (
    AuthenticationFailed,
    BadRequest,
    Conflict,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    RegistryBusy,
)

_LOCATIONS = ("body", "query", "path", "header")
METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(RegistryError, _registry_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


def from_registry_error(error: RegistryError) -> GatewayError:
    if isinstance(error, ValidationFailed):
        return BadRequest(error.message, param=error.field, code="invalid_value")
    if isinstance(error, NotFoundError):
        return NotFound(error.message)
    if isinstance(error, ConflictError):
        return Conflict(error.message)
    if isinstance(error, BusyError):
        return RegistryBusy(error.message)
    return GatewayError(error.message)


def from_request_validation(errors: Sequence[Any]) -> BadRequest:
    """The first error, naming its field (``version: Field required``)."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    location = [str(part) for part in first.get("loc", ())]
    field_path = location[1:] if location and location[0] in _LOCATIONS else location
    param = ".".join(field_path) or None
    message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    if first.get("type") == "json_invalid":
        param, message = None, "request body is not valid JSON"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return BadRequest(f"{param or 'request'}: {message}{more}", param=param, code="invalid_value")


def render(error: GatewayError) -> Response:
    headers = None
    if isinstance(error, AuthenticationFailed):
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(error, RegistryBusy):
        headers = {"Retry-After": str(error.retry_after_s)}
    elif isinstance(error, MethodNotAllowed):
        headers = {"Allow": ", ".join(error.allow)}
    return Response(
        error.body(), status_code=error.status, media_type="application/json", headers=headers
    )


async def _gateway_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return render(exc)


async def _registry_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RegistryError)
    return render(from_registry_error(exc))


async def _request_validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return render(from_request_validation(exc.errors()))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return render(NotFound(f"no such endpoint: {request.method} {request.url.path}"))
    if exc.status_code == 405:
        allowed = allowed_methods(request)
        message = f"{request.method} is not allowed on {request.url.path}; use {', '.join(allowed)}"
        return render(MethodNotAllowed(message, allow=allowed))
    error = GatewayError(str(exc.detail))
    response = render(error)
    response.status_code = exc.status_code
    return response


def allowed_methods(request: Request) -> tuple[str, ...]:
    """Every method some route serves on this path (RFC 9110 ``Allow``). Starlette's own 405
    names only the first matching route's, and a path has one route per method here; routes
    sit in included routers, so each method is asked of every route (``BaseRoute.matches``)."""
    allowed = []
    for method in METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.routes):
            allowed.append(method)
    return tuple(allowed)


async def _unexpected_error(_request: Request, _exc: Exception) -> Response:
    # Starlette re-raises after this response, so the server logs the traceback once.
    return render(GatewayError("internal error", code="internal_error"))
