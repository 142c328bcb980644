"""``GET /admin/profile/{model-or-deployment}``: the provenance profile (``registry.profile``).

Read-only and organisation-wide facts (models, deployments, organizations, licenses), so open
to ``admin``, ``compliance`` and ``compliance_org`` keys alike."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path

from registry.profile import ProfileSubjectNotFound, build_profile
from registry.service import load_snapshot
from router.admin.openapi import errors
from router.deps import AuditCaller, SessionDep
from router.errors import NotFound

router = APIRouter(prefix="/admin", tags=["audit"])
Subject = Annotated[str, Path(description="A deployment id or a model id (org/name)")]


@router.get(
    "/profile/{subject:path}",
    summary="The provenance profile of a model or deployment",
    responses=errors(404),
)
def get_profile(subject: Subject, session: SessionDep, _caller: AuditCaller) -> dict[str, Any]:
    snapshot = load_snapshot(session=session)
    try:
        profile = build_profile(snapshot, subject, today=datetime.now(UTC).date())
    except ProfileSubjectNotFound as error:
        raise NotFound(str(error), param="subject") from None
    return profile.to_dict()
