"""The admin console: server-rendered pages at ``/console`` (docs/console.md).

``build_console_app`` returns a small FastAPI app that the admin app mounts at ``/console``;
the gateway's dispatcher sends it nothing from ``/v1`` (that path is decided first and never
reaches the admin app). Pages are Jinja2 templates with the project's own CSS and a little of
its own JavaScript (the policy editor's check as you type), served from this package: no CDN,
no Node toolchain, so it works on an air-gapped host.

    web.py          sessions, CSRF, forms, rendering, errors (the plumbing)
    sessions.py     signed session cookies and CSRF tokens
    pages.py        the pages (GET)            actions.py   the forms (POST)
    views.py        what each page shows       lineage_svg.py  the lineage graph
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from registry.service import RegistryError
from router.admin.errors import from_registry_error
from router.console import actions, pages
from router.console.sessions import SessionSigner
from router.console.web import Console, NotSignedIn, login_redirect, make_templates, render
from router.deps import AdminContext
from router.errors import GatewayError
from router.signing import Signer
from router.table import RoutingTable

__all__ = ["build_console_app", "mount_console"]

STATIC = Path(__file__).parent / "static"


def build_console_app(
    context: AdminContext,
    current_table: Callable[[], RoutingTable],
    current_signer: Callable[[], Signer | None],
) -> FastAPI:
    """The console; ``context`` is the admin API's own (one write turn, one change log)."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.console = Console(
        context=context,
        table=current_table,
        sessions=SessionSigner(current_signer, ttl_s=context.settings.console_session_ttl_s),
        templates=make_templates(),
    )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(actions.router)
    app.include_router(pages.router)
    app.add_exception_handler(NotSignedIn, login_redirect)
    app.add_exception_handler(GatewayError, _error_page)
    app.add_exception_handler(RegistryError, _error_page)
    app.add_exception_handler(RequestValidationError, _error_page)
    app.add_exception_handler(HTTPException, _error_page)
    return app


def mount_console(
    admin: FastAPI,
    current_table: Callable[[], RoutingTable],
    current_signer: Callable[[], Signer | None],
) -> None:
    """Serve the console under ``/console`` of the admin app (``/console`` itself redirects)."""
    context = admin.state.admin
    admin.mount("/console", build_console_app(context, current_table, current_signer))
    admin.add_api_route("/console", _to_console, include_in_schema=False)


def _to_console() -> Response:
    return RedirectResponse("/console/", status_code=307)


async def _error_page(request: Request, error: Exception) -> Response:
    """Errors as a page with the right status (the admin API's statuses, rendered)."""
    if isinstance(error, RegistryError):
        error = from_registry_error(error)
    if isinstance(error, GatewayError):
        status, message = error.status, error.message
    elif isinstance(error, HTTPException):
        status, message = error.status_code, str(error.detail)
    else:
        status, message = 400, "; ".join(_field_errors(error))
    return render(request, "error.html", user=None, status=status, message=message)


def _field_errors(error: Exception) -> list[str]:
    if isinstance(error, RequestValidationError):
        return [f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in error.errors()]
    return [str(error)]
