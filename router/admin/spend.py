"""Spend per key, tenant, route or deployment over a budget period, from the audit log.

    GET /admin/spend?period=day|month&group_by=key|tenant|route|deployment[&tenant=...]

Open to ``admin``, ``compliance`` and ``compliance_org`` keys; a ``compliance`` key reads its
own tenant's spend only (``Caller.readable_tenant``), as with every audit read. Tokens are those
the backends reported; cost uses each deployment's current prices (``registry.spend``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter

from registry.spend import GroupBy, deployment_prices, spend
from router.deps import AuditCaller, ContextDep
from router.limiter import period_bounds
from router.table import RoutingTable


def spend_router(current_table: Callable[[], RoutingTable]) -> APIRouter:
    """``current_table`` returns the gateway's live routing table (for the prices)."""
    router = APIRouter(prefix="/admin", tags=["spend"])

    @router.get("/spend", summary="Requests, tokens and cost in the current budget period")
    def get_spend(
        context: ContextDep,
        caller: AuditCaller,
        period: Literal["day", "month"] = "month",
        group_by: GroupBy = "key",
        tenant: str | None = None,
    ) -> dict[str, Any]:
        label, start, end = period_bounds(period, datetime.now(UTC))
        rows = spend(
            engine=context.engine,
            group_by=group_by,
            since=start,
            until=end,
            prices=deployment_prices(current_table().snapshot),
            tenant_id=caller.readable_tenant(tenant, param="tenant"),
        )
        return {
            "object": "spend",
            "period": period,
            "label": label,
            "since": start.isoformat(),
            "until": end.isoformat(),
            "group_by": group_by,
            "data": [row.to_dict(group_by) for row in rows],
        }

    return router
