"""Limits and budgets of a tenant or an API key, as written (validated) and as served (frozen).

    limits:
      rpm: 600                 # requests per minute
      tpm: 200000              # tokens per minute (prompt + completion, as the backend reports)
      max_concurrent: 20       # requests in flight at once
      budget:
        period: month          # day | month (UTC calendar periods)
        soft_tokens: 8000000   # reported past this (header, log, metric)
        hard_tokens: 10000000  # refused past this (429 budget_exceeded)
        soft_cost_usd: 80      # the same in US dollars, from the deployments' prices
        hard_cost_usd: 100

Every field is optional; a missing one is no limit. The router enforces them
(``router.limiter``); the registry only stores and validates them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from annotated_types import Gt
from pydantic import BaseModel, ConfigDict, Strict, model_validator

from registry.snapshot import BudgetSnap, LimitsSnap
from registry.validation import Positive32, Positive64

Period = Literal["day", "month"]
Usd = Annotated[float, Strict(), Gt(0)]


class Budget(BaseModel):
    """Spend allowed over one calendar period (UTC): tokens, and cost where deployments have
    prices. A soft threshold is reported; a hard one refuses further requests."""

    model_config = ConfigDict(extra="forbid")

    period: Period = "month"
    soft_tokens: Positive64 | None = None
    hard_tokens: Positive64 | None = None
    soft_cost_usd: Usd | None = None
    hard_cost_usd: Usd | None = None

    @model_validator(mode="after")
    def _soft_below_hard(self) -> Budget:
        for soft, hard in (("soft_tokens", "hard_tokens"), ("soft_cost_usd", "hard_cost_usd")):
            low, high = getattr(self, soft), getattr(self, hard)
            if low is not None and high is not None and low > high:
                raise ValueError(f"{soft} ({low}) is above {hard} ({high})")
        return self


class Limits(BaseModel):
    """Rate limits and a budget; each applies on its own (a key's and its tenant's both do)."""

    model_config = ConfigDict(extra="forbid")

    rpm: Positive32 | None = None
    tpm: Positive64 | None = None
    max_concurrent: Positive32 | None = None
    budget: Budget | None = None


def limits_snap(stored: Mapping[str, Any] | None) -> LimitsSnap | None:
    """The served form of a stored ``limits`` column (None: no limit of any kind)."""
    if not stored:
        return None
    limits = Limits.model_validate(stored)
    budget = limits.budget
    return LimitsSnap(
        rpm=limits.rpm,
        tpm=limits.tpm,
        max_concurrent=limits.max_concurrent,
        budget=BudgetSnap(
            period=budget.period,
            soft_tokens=budget.soft_tokens,
            hard_tokens=budget.hard_tokens,
            soft_cost_usd=budget.soft_cost_usd,
            hard_cost_usd=budget.hard_cost_usd,
        )
        if budget is not None
        else None,
    )
