"""Read-only audit endpoints: registry changes, routing decisions, the registry version.

Open to ``admin``, ``compliance`` and ``compliance_org`` keys: a compliance officer proves where
requests went and who changed what, without being able to change anything. A ``compliance`` key
reads its own tenant's decisions only (another ``tenant_id`` is 403) and, of the registry
changes, the organisation-wide facts plus its own tenant and keys (``Caller.readable_tenant``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from registry.service import list_changes, list_decisions, registry_version
from registry.validation import INT32_MAX, Moment
from router.deps import AuditCaller, SessionDep

router = APIRouter(prefix="/admin", tags=["audit"])
Limit = Annotated[int, Query(ge=1, le=1000)]
Version = Annotated[int, Query(ge=0, le=INT32_MAX)]  # an INTEGER column


@router.get("/version", summary="The current registry version")
def get_version(session: SessionDep, _caller: AuditCaller) -> dict[str, int]:
    return {"version": registry_version(session=session)}


@router.get("/changes", summary="Registry changes, newest first")
def get_changes(
    session: SessionDep,
    caller: AuditCaller,
    kind: str | None = None,
    entity_id: str | None = None,
    actor: str | None = None,
    since_version: Version | None = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    changes = list_changes(
        session=session,
        kind=kind,
        entity_id=entity_id,
        actor=actor,
        since_version=since_version,
        visible_to_tenant=caller.readable_tenant(None, param="tenant_id"),
        limit=limit,
    )
    return {"object": "list", "data": changes}


@router.get("/decisions", summary="Routing decisions, newest first")
def get_decisions(
    session: SessionDep,
    caller: AuditCaller,
    tenant_id: str | None = None,
    since: Moment | None = None,
    until: Moment | None = None,
    status: str | None = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    decisions = list_decisions(
        session=session,
        tenant_id=caller.readable_tenant(tenant_id, param="tenant_id"),
        since=since,
        until=until,
        status=status,
        limit=limit,
    )
    return {"object": "list", "data": decisions}
