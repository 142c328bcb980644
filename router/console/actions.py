"""The console's forms (POST): sign-in and sign-out, review decisions, policy drafts.

Every write goes through the admin API's own path: ``AdminContext.write`` (one write turn with
the API, the registry's ``Writer``, its change log) and the policy service functions of
``router.admin.policies``. Every form carries the session's CSRF token (``checked_form``); the
sign-in form the token of its short-lived ``login`` cookie.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from registry.db import session_scope
from registry.keys import hash_key
from registry.service import find_key_snap
from registry.snapshot import KeySnap
from registry.validation import INT32_MAX
from router.admin.policies import (
    DraftIn,
    PolicyTestsIn,
    WhatIfIn,
    replay_draft,
    run_tests,
    validate_draft,
)
from router.console import views
from router.console.sessions import LOGIN_COOKIE, LOGIN_TTL_S, SESSION_COOKIE, new_nonce
from router.console.web import (
    AdminUserDep,
    ConsoleDep,
    UserDep,
    checked_form,
    console_caller,
    read_form,
    redirect,
    render,
)
from router.errors import BadRequest, GatewayError

router = APIRouter()
REVIEW_STATUS = {"approve": "approved", "block": "blocked"}
NOTE_MAX = 2000


def _safe_next(target: str | None) -> str:
    """Where to go after sign-in: a path of this console, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, console: ConsoleDep, next: str = "/") -> HTMLResponse:
    nonce = new_nonce()
    response = render(
        request,
        "login.html",
        user=None,
        csrf=console.sessions.csrf_token(nonce),
        next=_safe_next(next),
    )
    _set_cookie(request, response, LOGIN_COOKIE, nonce, LOGIN_TTL_S)
    return response


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, console: ConsoleDep) -> Response:
    form = await read_form(request)
    if not console.sessions.csrf_ok(request.cookies.get(LOGIN_COOKIE), form.get("csrf")):
        return _login_again(request, console, "The sign-in form expired; try again.", 403)
    key = await run_in_threadpool(_find_key, console, form.get("key", "").strip())
    caller = console_caller(key)
    if caller is None:
        message = "That key is unknown, disabled, expired, or has no admin or compliance scope."
        return _login_again(request, console, message, 401)
    token, _ = console.sessions.issue(caller.key_id)
    response = redirect(request, _safe_next(form.get("next")))
    _set_cookie(request, response, SESSION_COOKIE, token, int(console.sessions.ttl_s))
    response.delete_cookie(LOGIN_COOKIE, path=_cookie_path(request))
    return response


def _find_key(console: Any, raw: str) -> KeySnap | None:
    if not raw:
        return None
    with session_scope(console.context.engine) as session:
        return find_key_snap(session=session, key_hash=hash_key(raw))


def _login_again(request: Request, console: Any, message: str, status: int) -> HTMLResponse:
    nonce = new_nonce()
    response = render(
        request,
        "login.html",
        user=None,
        status=status,
        error=message,
        csrf=console.sessions.csrf_token(nonce),
        next="/",
    )
    _set_cookie(request, response, LOGIN_COOKIE, nonce, LOGIN_TTL_S)
    return response


@router.post("/logout")
async def logout(request: Request, console: ConsoleDep, user: UserDep) -> Response:
    await checked_form(request, console, user)
    console.sessions.revoke(user.session)
    response = redirect(request, "/login")
    response.delete_cookie(SESSION_COOKIE, path=_cookie_path(request))
    return response


@router.post("/review/{kind}/{entity_id:path}")
async def decide_review(
    request: Request,
    kind: Literal["model", "deployment"],
    entity_id: str,
    console: ConsoleDep,
    user: AdminUserDep,
) -> Response:
    """Approve or block one model or deployment; the note goes into the change log."""
    form = await checked_form(request, console, user)
    status = REVIEW_STATUS.get(form.get("decision", ""))
    if status is None:
        raise BadRequest("decision: approve or block", param="decision")
    note = form.get("note", "").strip()[:NOTE_MAX] or None
    version = _version(form.get("version"))
    context = console.context
    await context.write(
        actor=user.caller.actor,
        operation=lambda w: w.update(
            kind, entity_id, {"review_status": status}, expected_version=version, note=note
        ),
        check=lambda: context.check_version(kind, entity_id, version),
    )
    return redirect(request, "/review")


def _version(text: str | None) -> int | None:
    if not text:
        return None
    if not text.isdigit() or int(text) > INT32_MAX:
        raise BadRequest("version: a whole number (the version the page showed)", param="version")
    return int(text)


@router.post("/policies/validate")
async def validate(request: Request, console: ConsoleDep, user: UserDep) -> JSONResponse:
    """The editor's check as you type: valid (with the Cedar it compiles to) or the error."""
    form = await checked_form(request, console, user)
    try:
        draft = DraftIn(format=form.get("format", "yaml"), source=form.get("source", ""))
        result = await run_in_threadpool(
            validate_draft, draft.format, draft.source, console.table()
        )
    except (ValidationError, GatewayError) as error:
        return JSONResponse({"valid": False, "error": _message(error)})
    return JSONResponse(result)


def _message(error: Exception) -> str:
    if isinstance(error, GatewayError):
        return error.message
    return (
        "; ".join(str(e["msg"]) for e in error.errors())
        if isinstance(error, ValidationError)
        else str(error)
    )


def _draft(form: dict[str, str]) -> WhatIfIn:
    try:
        return WhatIfIn(
            format=form.get("format", "yaml"),
            source=form.get("source", ""),
            last=int(form.get("last") or 1000),
        )
    except (ValidationError, ValueError) as error:
        raise BadRequest(f"Invalid draft: {error}", param="source") from None


@router.post("/policies/what-if", response_class=HTMLResponse)
async def what_if(request: Request, console: ConsoleDep, user: UserDep) -> HTMLResponse:
    """The draft replayed against recorded traffic (the user's tenant only, for compliance)."""
    form = await checked_form(request, console, user)
    draft = _draft(form)
    table = console.table()
    report = await run_in_threadpool(_replay, console, table, draft, user.tenant_scope)
    data = await run_in_threadpool(views.policies, console.context.engine, table.snapshot)
    return render(
        request,
        "policies.html",
        user=user,
        draft=draft.source,
        draft_format=draft.format,
        what_if=report,
        **data,
    )


@router.post("/policies/tests", response_class=HTMLResponse)
async def policy_tests(request: Request, console: ConsoleDep, user: UserDep) -> HTMLResponse:
    """A policy test file run against the draft (a read: compliance keys may run it)."""
    form = await checked_form(request, console, user)
    draft = _draft(form)
    try:
        body = PolicyTestsIn(tests=form.get("tests", ""), policy=draft)
    except ValidationError as error:
        raise BadRequest(f"Invalid tests: {_message(error)}", param="tests") from None
    table = console.table()
    report = await run_in_threadpool(run_tests, table, body, user.caller)
    data = await run_in_threadpool(views.policies, console.context.engine, table.snapshot)
    return render(
        request,
        "policies.html",
        user=user,
        draft=draft.source,
        draft_format=draft.format,
        tests=body.tests,
        test_report=report,
        **data,
    )


def _replay(console: Any, table: Any, draft: WhatIfIn, tenant: str | None) -> dict[str, Any]:
    with session_scope(console.context.engine) as session:
        return replay_draft(session=session, table=table, draft=draft, tenant=tenant)


@router.post("/policies/preview", response_class=HTMLResponse)
async def preview(request: Request, console: ConsoleDep, user: AdminUserDep) -> HTMLResponse:
    """Step one of activation: the diff against the active policy, the what-if, a confirm."""
    form = await checked_form(request, console, user)
    draft = _draft(form)
    table = console.table()
    checked = await run_in_threadpool(validate_draft, draft.format, draft.source, table)
    report = await run_in_threadpool(_replay, console, table, draft, None)
    active = table.snapshot.policy
    return render(
        request,
        "activate.html",
        user=user,
        draft=draft,
        name=form.get("name", "").strip() or "console",
        diff=views.source_diff(active.source if active else "", draft.source),
        active=active,
        warnings=checked["warnings"],
        what_if=report,
    )


@router.post("/policies/activate")
async def activate(request: Request, console: ConsoleDep, user: AdminUserDep) -> Response:
    """Step two: save the draft as a new version and make it the active one."""
    form = await checked_form(request, console, user)
    if form.get("confirm") != "yes":
        raise BadRequest("confirm: tick the confirmation to activate", param="confirm")
    draft = _draft(form)
    await run_in_threadpool(validate_draft, draft.format, draft.source, console.table())
    name = form.get("name", "").strip()[:200] or "console"
    await console.context.write(
        actor=user.caller.actor,
        operation=lambda w: w.save_policy(
            name=name, format=draft.format, source=draft.source, activate=True
        ),
    )
    return redirect(request, "/policies")


def _cookie_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")) or "/"


def _set_cookie(request: Request, response: Response, name: str, value: str, ttl: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=ttl,
        path=_cookie_path(request),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
