"""Policy administration and the compliance officer's tools, under ``/admin/``.

    GET  /admin/policies                 every saved version (admin, compliance)
    GET  /admin/policies/{version}       one version with its source
    POST /admin/policies                 validate + save (optionally activate) a version (admin)
    POST /admin/policies/{v}/activate    atomic switch of the active version (admin)
    POST /admin/policies/validate        compile a draft, report the Cedar error text
    GET  /admin/policy-presets           the shipped presets
    POST /admin/explain                  every candidate for tenant + model + context, decided
    POST /admin/what-if                  a draft policy replayed against recorded decisions
                                         (a ``compliance`` key: its own tenant only)
    POST /admin/policy-tests             a policy test file run against a policy

``explain`` uses the live routing table's engine (the very one serving traffic); what-if and the
policy tests build an engine for the draft over the live registry snapshot. A policy is compiled
and validated against the Cedar schema before it is saved: an invalid one changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from registry.models import Classification
from registry.service import get_policy, list_decisions, list_policies
from registry.snapshot import PolicySnap
from registry.validation import INT32_MAX, Moment, Purpose, Region
from router.admin.openapi import errors
from router.deps import AdminCaller, AuditCaller, Caller, ContextDep, SessionDep
from router.errors import BadRequest, NotFound
from router.policy import (
    CompiledPolicy,
    PolicyEngine,
    PolicyError,
    RequestContext,
    UnknownModelOrRoute,
    UnknownTenant,
    compile_policy,
    explain,
    list_presets,
    run_policy_tests,
    tested_tenants,
    what_if,
)
from router.policy.lint import check_against_registry
from router.table import RoutingTable

DRAFT_VERSION = 0  # what-if and tests report a draft as policy version 0
PolicyVersion = Annotated[int, Path(ge=1, le=INT32_MAX)]  # an INTEGER column


class PolicyIn(BaseModel):
    name: str = Field("policy", min_length=1, max_length=200)
    format: Literal["yaml", "cedar"] = "yaml"
    source: str = Field(min_length=1)
    activate: bool = False


class DraftIn(BaseModel):
    format: Literal["yaml", "cedar"] = "yaml"
    source: str = Field(min_length=1)


class ExplainIn(BaseModel):
    tenant: str
    model: str = Field(description="A route name, model id or deployment id")
    action: Literal["infer", "embed"] = "infer"
    classification: Classification | None = None
    purpose: Purpose | None = None
    caller_region: Region | None = None


class WhatIfIn(DraftIn):
    last: int = Field(1000, ge=1, le=100_000, description="Replay the last N decisions")
    since: Moment | None = None
    until: Moment | None = None
    tenant: str | None = None


class PolicyTestsIn(BaseModel):
    tests: str = Field(min_length=1, description="The policy test file (YAML)")
    policy: DraftIn | None = Field(None, description="Default: the active policy")


def policy_router(current_table: Callable[[], RoutingTable]) -> APIRouter:
    """``current_table`` returns the gateway's live routing table."""
    router = APIRouter(prefix="/admin", tags=["policy"])

    @router.get("/policies", summary="Saved policy versions, newest first")
    def get_policies(session: SessionDep, _caller: AuditCaller) -> dict[str, Any]:
        return {"object": "list", "data": list_policies(session=session)}

    @router.get(
        "/policies/{version:int}",
        summary="One policy version with its source",
        responses=errors(404),
    )
    def get_one(
        version: PolicyVersion, session: SessionDep, _caller: AuditCaller
    ) -> dict[str, Any]:
        return get_policy(session=session, version=version)

    @router.post(
        "/policies",
        status_code=201,
        summary="Validate and save a policy version",
        responses=errors(409),
    )
    async def post_policy(
        body: PolicyIn, context: ContextDep, caller: AdminCaller
    ) -> dict[str, Any]:
        warnings = _checked(_compile(body.format, body.source), current_table())
        saved = await context.write(
            actor=caller.actor,
            operation=lambda w: w.save_policy(
                name=body.name, format=body.format, source=body.source, activate=body.activate
            ),
        )
        return {**saved, "warnings": warnings}

    @router.post(
        "/policies/{version:int}/activate",
        summary="Make a saved version the active one",
        responses=errors(404, 409),
    )
    async def activate(
        version: PolicyVersion, context: ContextDep, caller: AdminCaller
    ) -> dict[str, Any]:
        return await context.write(
            actor=caller.actor, operation=lambda w: w.activate_policy(version=version)
        )

    @router.post("/policies/validate", summary="Compile a draft policy without saving it")
    def validate(body: DraftIn, _caller: AuditCaller) -> dict[str, Any]:
        return validate_draft(body.format, body.source, current_table())

    @router.get("/policy-presets", summary="Presets a compliance team can start from")
    def presets(_caller: AuditCaller) -> dict[str, Any]:
        return {"object": "list", "data": [asdict(p) for p in list_presets()]}

    @router.post(
        "/explain",
        summary="Every candidate deployment, allowed or denied, and why",
        responses=errors(404),
    )
    def post_explain(body: ExplainIn, caller: AuditCaller) -> dict[str, Any]:
        caller.readable_tenant(body.tenant, param="tenant")
        return explain_request(current_table(), body)

    @router.post("/what-if", summary="Replay recorded decisions under a draft policy")
    def post_what_if(body: WhatIfIn, session: SessionDep, caller: AuditCaller) -> dict[str, Any]:
        return replay_draft(
            session=session,
            table=current_table(),
            draft=body,
            tenant=caller.readable_tenant(body.tenant, param="tenant"),
        )

    @router.post("/policy-tests", summary="Run a policy test file")
    def post_tests(body: PolicyTestsIn, caller: AuditCaller) -> dict[str, Any]:
        return run_tests(current_table(), body, caller)

    return router


def explain_request(table: RoutingTable, body: ExplainIn) -> dict[str, Any]:
    """Every candidate for ``body``'s tenant + model + context, decided by the live engine (the
    caller has checked that it may read that tenant)."""
    tenant = table.snapshot.tenants.get(body.tenant)
    try:
        context = RequestContext(
            classification=body.classification or "public",
            purpose=body.purpose,
            # live routing passes the tenant's region as caller_region: decide the same way
            caller_region=body.caller_region or (tenant.region if tenant else None),
        )
        result = explain(
            table.engine,
            table.snapshot,
            tenant_id=body.tenant,
            model_or_route=body.model,
            action=body.action,
            context=context,
        )
    except UnknownModelOrRoute as error:
        raise NotFound(str(error), param="model", code="model_not_found") from None
    except UnknownTenant as error:
        raise NotFound(str(error), param="tenant", code="tenant_not_found") from None
    except ValueError as error:  # an unknown classification label
        raise BadRequest(str(error), param="classification") from None
    return result.to_dict()


def run_tests(table: RoutingTable, body: PolicyTestsIn, caller: Caller) -> dict[str, Any]:
    """A policy test file run against the draft in ``body`` (default: the active policy). A
    compliance key may test only its own tenant, as with explain and what-if (403)."""
    try:
        for tenant in sorted(tested_tenants(body.tests)):
            caller.readable_tenant(tenant, param="tests")
    except PolicyError as error:
        raise BadRequest(str(error), param="tests") from None
    policy = table.snapshot.policy
    if body.policy is not None:
        _compile(body.policy.format, body.policy.source)
        policy = PolicySnap(DRAFT_VERSION, "draft", body.policy.format, body.policy.source)
    try:
        report = run_policy_tests(lambda: PolicyEngine.build(table.snapshot, policy), body.tests)
    except PolicyError as error:
        raise BadRequest(str(error), param="tests") from None
    return {
        "ok": report.ok,
        "passed": report.passed,
        "failed": report.failed,
        "results": [asdict(result) for result in report.results],
    }


def validate_draft(format: str, source: str, table: RoutingTable) -> dict[str, Any]:
    """A draft compiled and read against the live registry (400 when it is invalid)."""
    compiled = _compile(format, source)
    warnings = _checked(compiled, table)
    return {
        "valid": True,
        "rule_ids": list(compiled.rule_ids),
        "cedar": compiled.cedar_text,
        "warnings": warnings,
    }


def replay_draft(
    *, session: Session, table: RoutingTable, draft: WhatIfIn, tenant: str | None
) -> dict[str, Any]:
    """What-if: the last ``draft.last`` decisions (of ``tenant``, or all) replayed under the
    draft policy; the requests it would decide differently."""
    _compile(draft.format, draft.source)
    recorded = list_decisions(
        session=session,
        tenant_id=tenant,
        since=draft.since,
        until=draft.until,
        limit=draft.last,
    )
    policy = PolicySnap(DRAFT_VERSION, "draft", draft.format, draft.source)
    try:
        report = what_if(table.snapshot, policy, list(reversed(recorded)))
    except PolicyError as error:
        raise BadRequest(f"Cannot replay the recorded decisions: {error}") from None
    return report.to_dict()


def _compile(format: str, source: str) -> CompiledPolicy:
    try:
        return compile_policy(format, source)
    except PolicyError as error:
        raise BadRequest(
            f"Invalid policy: {error}", param="source", code="policy_invalid"
        ) from None


def _checked(compiled: CompiledPolicy, table: RoutingTable) -> list[str]:
    """The policy read against the live registry: errors refuse it (400), warnings are
    returned with the answer (see ``router.policy.lint``)."""
    findings = check_against_registry(compiled, table.snapshot)
    errors = [str(f) for f in findings if f.level == "error"]
    if errors:
        raise BadRequest(
            f"Invalid policy: {'; '.join(errors)}", param="source", code="policy_invalid"
        )
    return [str(f) for f in findings]
