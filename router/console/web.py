"""The console's plumbing: who is signed in, CSRF, forms, rendering, HTML errors.

``Console`` (in ``app.state.console``) holds the admin context (the same ``AdminContext`` as
the admin API: one write turn, one change log), the live routing table, the session signer and
the templates. Routes reach the signed-in user through ``UserDep`` (any console key) or
``AdminUserDep`` (scope ``admin``: every write); a write form is read with ``checked_form``,
which refuses (403) a CSRF token that is not the session's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, cast
from urllib.parse import parse_qsl, quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from registry.db import session_scope
from registry.service import key_snap_by_id
from registry.snapshot import KeySnap
from router.console.sessions import SESSION_COOKIE, Session, SessionSigner
from router.deps import AdminContext, Caller
from router.errors import AuthenticationFailed, PermissionDenied
from router.keys import usable_key
from router.table import RoutingTable

TEMPLATES = Path(__file__).parent / "templates"
CONSOLE_SCOPES = frozenset({"admin", "compliance", "compliance_org"})
MAX_FORM_BYTES = 1024 * 1024
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


class NotSignedIn(Exception):
    """No valid session: pages send the browser to the sign-in form."""


class CsrfRefused(PermissionDenied):
    def __init__(self) -> None:
        super().__init__("the form's CSRF token is missing or not this session's; reload the page")


@dataclass(frozen=True, slots=True)
class Console:
    context: AdminContext
    table: Callable[[], RoutingTable]
    sessions: SessionSigner
    templates: Environment


@dataclass(frozen=True, slots=True)
class User:
    caller: Caller
    session: Session
    csrf: str

    @property
    def can_write(self) -> bool:
        return "admin" in self.caller.scopes

    @property
    def tenant_scope(self) -> str | None:
        """The only tenant whose traffic this user reads; None: every tenant."""
        return self.caller.readable_tenant(None, param="tenant")


def make_templates() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def get_console(request: Request) -> Console:
    return cast(Console, request.app.state.console)


ConsoleDep = Annotated[Console, Depends(get_console)]


def console_caller(key: KeySnap | None) -> Caller | None:
    """The caller behind ``key`` if it may use the console now: usable as the admin API
    decides (``router.keys.usable_key``: not revoked, not expired, not a rotated key past its
    grace) and holding an admin or compliance scope; None otherwise."""
    try:
        usable = usable_key(key, time.time())
    except AuthenticationFailed:
        return None
    if usable.scopes.isdisjoint(CONSOLE_SCOPES):
        return None
    return Caller(key_id=usable.id, tenant=usable.tenant_id, scopes=frozenset(usable.scopes))


def _caller_of(console: Console, key_id: str) -> Caller | None:
    with session_scope(console.context.engine) as session:
        return console_caller(key_snap_by_id(session=session, key_id=key_id))


async def current_user(request: Request, console: ConsoleDep) -> User:
    session = console.sessions.check(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise NotSignedIn()
    caller = await run_in_threadpool(_caller_of, console, session.key_id)
    if caller is None:  # the key was disabled, deleted, expired or lost its scope: it ends
        raise NotSignedIn()
    return User(caller, session, console.sessions.csrf_token(session.nonce))


def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    if not user.can_write:
        raise PermissionDenied("this console action needs an API key with scope admin")
    return user


UserDep = Annotated[User, Depends(current_user)]
AdminUserDep = Annotated[User, Depends(admin_user)]


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the console's forms send nothing else)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PermissionDenied("the form is too large")
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


async def checked_form(request: Request, console: Console, user: User) -> dict[str, str]:
    form = await read_form(request)
    token = form.get("csrf") or request.headers.get("x-csrf-token")
    if not console.sessions.csrf_ok(user.session.nonce, token):
        raise CsrfRefused()
    return form


def render(
    request: Request,
    template: str,
    *,
    user: User | None,
    status: int = 200,
    **values: Any,
) -> HTMLResponse:
    console = get_console(request)
    html = console.templates.get_template(template).render(
        base=request.scope.get("root_path", ""),
        path=request.url.path,
        user=user,
        **values,
    )
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def redirect(request: Request, to: str) -> RedirectResponse:
    response = RedirectResponse(f"{request.scope.get('root_path', '')}{to}", status_code=303)
    response.headers.update(SECURITY_HEADERS)
    return response


def login_redirect(request: Request, _error: Exception) -> Response:
    if request.method != "GET":
        return render(request, "error.html", user=None, status=401, message="Sign in again.")
    wanted = quote(request.url.path.removeprefix(request.scope.get("root_path", "")) or "/")
    return redirect(request, f"/login?next={wanted}")
