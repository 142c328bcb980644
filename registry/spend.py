"""Spend from the audit log: requests, tokens and cost per key, tenant, route or deployment.

The audit log is the record of what was spent: ``GET /admin/spend`` reads it, and a gateway
starts its budget counters from it (``router.limiter``), so a restart does not reset a budget.
Tokens are those the backends reported (rows without usage count as requests only); cost is
each deployment's current price per million tokens (``input_cost_per_mtok_usd``,
``output_cost_per_mtok_usd``; no price: no cost).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Engine, and_, func, select
from sqlalchemy.sql import ColumnElement

from registry.models import RoutingDecision
from registry.reads import table
from registry.snapshot import RegistrySnapshot

GroupBy = Literal["key", "tenant", "route", "deployment"]
Prices = Mapping[str, tuple[float | None, float | None]]  # deployment -> (input, output)
COLUMNS: Mapping[str, str] = {
    "key": "key_id",
    "tenant": "tenant_id",
    "route": "route",
    "deployment": "chosen_deployment",
}


def deployment_prices(snapshot: RegistrySnapshot) -> dict[str, tuple[float | None, float | None]]:
    return {
        d.id: (d.input_cost_per_mtok_usd, d.output_cost_per_mtok_usd)
        for d in snapshot.deployments.values()
    }


@dataclass(slots=True)
class SpendRow:
    group: str | None  # the key, tenant, route or deployment id (None: not recorded)
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    micro_usd: int = 0

    def to_dict(self, group_by: str) -> dict[str, Any]:
        return {
            group_by: self.group,
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": round(self.micro_usd / 1_000_000, 6),
        }


def spend(
    *,
    engine: Engine,
    group_by: GroupBy,
    since: datetime,
    until: datetime | None = None,
    prices: Prices,
    tenant_id: str | None = None,
    key_id: str | None = None,
) -> list[SpendRow]:
    """Spend of served requests (those with a chosen deployment) in ``[since, until)``, one
    row per group, largest token count first."""
    t = table(RoutingDecision)
    group = t.c[COLUMNS[group_by]]
    conditions: list[ColumnElement[bool]] = [
        t.c.created_at >= since,
        t.c.chosen_deployment.is_not(None),
    ]
    if until is not None:
        conditions.append(t.c.created_at < until)
    if tenant_id is not None:
        conditions.append(t.c.tenant_id == tenant_id)
    if key_id is not None:
        conditions.append(t.c.key_id == key_id)
    query = (
        select(
            group,
            t.c.chosen_deployment,
            func.count(),
            func.sum(t.c.prompt_tokens),
            func.sum(t.c.completion_tokens),
            func.sum(t.c.total_tokens),
        )
        .where(and_(*conditions))
        .group_by(group, t.c.chosen_deployment)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    totals: dict[str | None, SpendRow] = {}
    for name, deployment, requests, prompt, completion, total in rows:
        row = totals.get(name) or totals.setdefault(name, SpendRow(name))
        prompt, completion = int(prompt or 0), int(completion or 0)
        row.requests += int(requests)
        row.prompt_tokens += prompt
        row.completion_tokens += completion
        row.total_tokens += int(total or 0) or prompt + completion
        price_in, price_out = prices.get(deployment, (None, None))
        row.micro_usd += round(prompt * (price_in or 0.0) + completion * (price_out or 0.0))
    return sorted(totals.values(), key=lambda r: (-r.total_tokens, r.group or ""))
