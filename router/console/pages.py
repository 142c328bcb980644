"""The console's pages (GET): overview, registry, review queue, decisions, policies, exposure.

Thin routes: each calls one function of ``router.console.views`` (or the exposure report) and
renders one template. A ``compliance`` key reads only its own tenant's traffic, as in the
admin API (``Caller.readable_tenant``); registry pages are organisation-wide facts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from registry.decision_reads import DecisionFilter
from registry.validation import INT32_MAX
from router.admin.policies import ExplainIn, explain_request
from router.console import views
from router.console.web import ConsoleDep, UserDep, render
from router.errors import BadRequest, NotFound
from router.exposure import build_report, window
from router.exposure_html import render_sections

router = APIRouter()
Text = Annotated[str, Query(max_length=200)]


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request, console: ConsoleDep, user: UserDep) -> HTMLResponse:
    table = console.table()
    data = await run_in_threadpool(
        views.overview, console.context.engine, table.snapshot, user.tenant_scope
    )
    return render(request, "overview.html", user=user, **data)


@router.get("/models", response_class=HTMLResponse)
def models(
    request: Request,
    console: ConsoleDep,
    user: UserDep,
    q: Text = "",
    status: Text = "",
    country: Text = "",
) -> HTMLResponse:
    found = views.find_models(console.table().snapshot, q=q, status=status, country=country)
    filters = {"q": q, "status": status, "country": country}
    return render(request, "models.html", user=user, models=found, filters=filters)


@router.get("/models/{model_id:path}", response_class=HTMLResponse)
def model(request: Request, model_id: str, console: ConsoleDep, user: UserDep) -> HTMLResponse:
    detail = views.model_detail(console.table().snapshot, model_id)
    if detail is None:
        raise NotFound(f"no model is called {model_id!r}")
    return render(request, "model.html", user=user, **detail)


@router.get("/deployments", response_class=HTMLResponse)
def deployments(
    request: Request,
    console: ConsoleDep,
    user: UserDep,
    q: Text = "",
    hosting: Text = "",
    country: Text = "",
) -> HTMLResponse:
    snapshot = console.table().snapshot
    rows = views.deployments(snapshot, q=q, hosting=hosting, country=country)
    filters = {"q": q, "hosting": hosting, "country": country}
    return render(request, "deployments.html", user=user, deployments=rows, filters=filters)


@router.get("/organizations", response_class=HTMLResponse)
def organizations(
    request: Request, console: ConsoleDep, user: UserDep, q: Text = ""
) -> HTMLResponse:
    rows = views.organizations(console.table().snapshot, q=q)
    return render(request, "organizations.html", user=user, organizations=rows, filters={"q": q})


@router.get("/review", response_class=HTMLResponse)
def review(request: Request, console: ConsoleDep, user: UserDep) -> HTMLResponse:
    engine = console.context.engine
    return render(
        request,
        "review.html",
        user=user,
        queue=views.review_queue(engine, console.table().snapshot),
        history=views.review_history(engine, user.tenant_scope),
    )


@router.get("/decisions", response_class=HTMLResponse)
def decisions(
    request: Request,
    console: ConsoleDep,
    user: UserDep,
    tenant: Text = "",
    route: Text = "",
    deployment: Text = "",
    verdict: Text = "",
    rule: Text = "",
    request_id: Text = "",
    since: Text = "",
    until: Text = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> HTMLResponse:
    where = DecisionFilter(
        tenant_id=user.caller.readable_tenant(tenant or None, param="tenant"),
        route=route or None,
        deployment=deployment or None,
        status=verdict or None,
        rule=rule or None,
        request_id=request_id.strip() or None,
        since=_moment(since, "since"),
        until=_moment(until, "until"),
    )
    rows = views.decisions(console.context.engine, where, limit)
    filters = {
        "limit": str(limit),
        "tenant": tenant,
        "route": route,
        "deployment": deployment,
        "verdict": verdict,
        "rule": rule,
        "request_id": request_id,
        "since": since,
        "until": until,
    }
    return render(request, "decisions.html", user=user, decisions=rows, filters=filters)


@router.get("/decisions/{request_id}", response_class=HTMLResponse)
def decision(request: Request, request_id: str, console: ConsoleDep, user: UserDep) -> HTMLResponse:
    where = DecisionFilter(
        request_id=request_id, tenant_id=user.caller.readable_tenant(None, param="tenant")
    )
    rows = views.decisions(console.context.engine, where, limit=20)
    if not rows:
        raise NotFound(f"no decision you may read has request id {request_id!r}")
    return render(request, "decision.html", user=user, rows=rows, request_id=request_id)


@router.get("/policies", response_class=HTMLResponse)
def policies(
    request: Request,
    console: ConsoleDep,
    user: UserDep,
    load: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
) -> HTMLResponse:
    """The active policy, the saved versions and the editor, holding the active policy or
    the saved version ``load`` (to roll back to it: what-if, then activate it again)."""
    data = views.policies(console.context.engine, console.table().snapshot)
    draft = views.draft_of(data, load)
    if draft is None:
        raise NotFound(f"no policy version {load}")
    return render(
        request, "policies.html", user=user, draft=draft[1], draft_format=draft[0], **data
    )


@router.get("/explain", response_class=HTMLResponse)
def explain(
    request: Request,
    console: ConsoleDep,
    user: UserDep,
    tenant: Text,
    model: Text,
    classification: Text = "",
) -> HTMLResponse:
    """Every candidate for a tenant + model + classification, decided by the live engine."""
    user.caller.readable_tenant(tenant, param="tenant")
    try:
        body = ExplainIn.model_validate(
            {"tenant": tenant, "model": model, "classification": classification or None}
        )
    except ValidationError as error:
        message = f"classification: {error.errors()[0]['msg']}"
        raise BadRequest(message, param="classification") from None
    result = explain_request(console.table(), body)
    return render(request, "explain.html", user=user, result=result)


@router.get("/receipt", response_class=HTMLResponse)
def receipt(
    request: Request, console: ConsoleDep, user: UserDep, receipt: str = ""
) -> HTMLResponse:
    """A receipt checked against the gateway's public keys, and the audit row it names."""
    verdict = views.check_receipt(
        console.context.engine,
        console.context.settings.signing_key_dir,
        console.sessions.signer(),
        receipt[:8192],
        user.tenant_scope,
    )
    return render(request, "receipt.html", user=user, receipt=receipt, **verdict)


@router.get("/exposure", response_class=HTMLResponse)
def exposure(
    request: Request,
    console: ConsoleDep,
    user: UserDep,
    since: Text = "",
    until: Text = "",
    tenant: Text = "",
    route: Text = "",
) -> HTMLResponse:
    start, end = window(_moment(since, "since"), _moment(until, "until"))
    table = console.table()
    report = build_report(
        console.context.engine,
        table.snapshot,
        table.engine,
        since=start,
        until=end,
        tenant=user.caller.readable_tenant(tenant or None, param="tenant"),
        route=route or None,
    )
    filters = {"tenant": tenant, "route": route, "since": since, "until": until}
    return render(
        request, "exposure.html", user=user, report=render_sections(report), filters=filters
    )


def _moment(text: str, name: str) -> datetime | None:
    """A form's date-time field (ISO 8601; empty: not given); without a zone it is UTC."""
    if not text.strip():
        return None
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadRequest(f"{name}: not a date and time (ISO 8601)", param=name) from None
