"""Searches of the routing decision log for the admin console (``router.console``).

``search_decisions`` filters by what a reviewer asks about: tenant, route, deployment, verdict
(the decision's ``status``), request id, time window, and a rule that decided one of the
candidates. Candidates are JSON (stored once per verdict, ``DecisionEvaluation``), so the rule
filter reads the newest ``scan`` rows that match the other filters and keeps those whose
candidates name the rule: a bounded read, said so on the page. ``decision_counts`` counts
decisions by status since a moment (the console's overview).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.models import DecisionEvaluation, RoutingDecision
from registry.reads import _decision_out, _utc, table

RULE_SCAN_ROWS = 5000  # rows read at most to find decisions that a rule decided


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionFilter:
    """What to look for; ``None`` everywhere: the newest decisions."""

    tenant_id: str | None = None
    route: str | None = None
    deployment: str | None = None
    status: str | None = None
    rule: str | None = None
    request_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def search_decisions(
    *, session: Session, where: DecisionFilter, limit: int = 100
) -> list[dict[str, Any]]:
    """Decisions matching ``where``, newest first, at most ``limit``."""
    t, e = table(RoutingDecision), table(DecisionEvaluation)
    query = (
        select(t, e.c.candidates.label("evaluation_candidates"))
        .select_from(t.outerjoin(e, t.c.evaluation_id == e.c.id))
        .order_by(t.c.id.desc())
        .limit(limit if where.rule is None else RULE_SCAN_ROWS)
    )
    equal = {
        t.c.tenant_id: where.tenant_id,
        t.c.route: where.route,
        t.c.chosen_deployment: where.deployment,
        t.c.status: where.status,
        t.c.request_id: where.request_id,
    }
    for column, value in equal.items():
        if value is not None:
            query = query.where(column == value)
    if where.since is not None:
        query = query.where(t.c.created_at >= _utc(where.since))
    if where.until is not None:
        query = query.where(t.c.created_at < _utc(where.until))
    rows = [_decision_out(row) for row in session.connection().execute(query).mappings()]
    if where.rule is not None:
        rows = [row for row in rows if _decided_by(row, where.rule)]
    return rows[:limit]


def _decided_by(row: Mapping[str, Any], rule: str) -> bool:
    return any(rule in (c.get("rule_ids") or ()) for c in row.get("candidates") or ())


def decision_counts(
    *, session: Session, since: datetime, tenant_id: str | None = None
) -> dict[str, int]:
    """How many decisions of each status since ``since`` (of one tenant, or all)."""
    t = table(RoutingDecision)
    query = (
        select(t.c.status, func.count()).where(t.c.created_at >= _utc(since)).group_by(t.c.status)
    )
    if tenant_id is not None:
        query = query.where(t.c.tenant_id == tenant_id)
    return {str(s): int(n) for s, n in session.connection().execute(query).all()}
