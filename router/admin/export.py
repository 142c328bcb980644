"""``GET /admin/export/cyclonedx[?tenant=T]``: the registry, or what tenant T may use, as a
CycloneDX 1.6 ML-BOM (``router.bom``).

Open to ``admin``, ``compliance`` and ``compliance_org`` keys; a ``compliance`` key exports only
what its own tenant may use (``Caller.readable_tenant``: no tenant asked means its own, another
tenant is 403). Read from the stored registry and its active policy, at one version."""

from __future__ import annotations

from fastapi import APIRouter, Response

from registry.service import load_snapshot
from router.admin.openapi import errors
from router.bom import cyclonedx_bom
from router.deps import AuditCaller, SessionDep
from router.errors import NotFound
from router.policy import UnknownTenant

router = APIRouter(prefix="/admin/export", tags=["audit"])
MEDIA_TYPE = "application/vnd.cyclonedx+json; version=1.6"


@router.get(
    "/cyclonedx",
    summary="The registry, or what one tenant may use, as a CycloneDX 1.6 ML-BOM",
    responses={200: {"content": {"application/vnd.cyclonedx+json": {}}}, **errors(403, 404)},
)
def get_cyclonedx(session: SessionDep, caller: AuditCaller, tenant: str | None = None) -> Response:
    scope = caller.readable_tenant(tenant, param="tenant")
    snapshot = load_snapshot(session=session)
    try:
        body = cyclonedx_bom(snapshot, tenant=scope)
    except UnknownTenant as error:
        raise NotFound(str(error), param="tenant", code="tenant_not_found") from None
    return Response(body, media_type=MEDIA_TYPE)
