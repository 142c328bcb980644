"""Reports over the audit log, under ``/admin/reports/``.

    GET /admin/reports/exposure   the provenance exposure report (JSON, CSV or HTML)

Open to ``admin``, ``compliance`` and ``compliance_org`` keys; a ``compliance`` key reads its
own tenant's traffic only (``Caller.readable_tenant``), as with every audit read. Switching
readiness is decided by the live routing table's engine, the one serving traffic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from registry.validation import Moment
from router.deps import AuditCaller, ContextDep
from router.exposure import build_report, render_csv, window
from router.exposure_html import render_html
from router.table import RoutingTable

Format = Literal["json", "csv", "html"]
MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "html": "text/html; charset=utf-8",
}
DOCUMENTED: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {}, "text/html": {}}}}


def reports_router(current_table: Callable[[], RoutingTable]) -> APIRouter:
    """``current_table`` returns the gateway's live routing table."""
    router = APIRouter(prefix="/admin/reports", tags=["reports"])

    @router.get(
        "/exposure",
        summary="Share of requests and tokens by provenance fact, and switching readiness",
        responses=DOCUMENTED,
    )
    def get_exposure(
        context: ContextDep,
        caller: AuditCaller,
        since: Annotated[Moment | None, Query(description="Default: until minus 7 days")] = None,
        until: Annotated[Moment | None, Query(description="Default: now")] = None,
        tenant: str | None = None,
        route: str | None = None,
        format: Format = "json",
    ) -> Any:
        start, end = window(since, until)
        table = current_table()
        report = build_report(
            context.engine,
            table.snapshot,
            table.engine,
            since=start,
            until=end,
            tenant=caller.readable_tenant(tenant, param="tenant"),
            route=route,
        )
        if format == "json":
            return report.to_dict()
        body = render_csv(report) if format == "csv" else render_html(report)
        return Response(body, media_type=MEDIA_TYPES[format])

    return router
