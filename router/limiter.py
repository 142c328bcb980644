"""Limits and budgets of API keys and tenants on the ``/v1`` path (docs/keys.md).

    admit(key)          before any backend call: budgets, tokens per minute, requests per
                        minute, concurrent requests; a 429 (``LimitExceeded``/``BudgetExceeded``)
                        or an :class:`Admission` with the response's ``x-ratelimit-*`` headers
    settle(admission)   once the response's usage is known: tokens per minute and spend
    release(admission)  when the request ends: its concurrency leases

A key's limits and its tenant's both apply; each is checked on its own. The counters
(``router.counters``) live in this process or in Redis; when Redis does not answer, the
request is allowed with a warning (``limits_redis_failure=open``) or refused with 503
``limits_unavailable`` (``closed``).

Tokens per minute and budgets count what a response used, so they are checked before a request
(is the window or budget already spent?) and charged after it: one request may overshoot a
limit by its own size, never twice. A backend that reports no usage is charged an estimate:
``ceil(bytes / 4)`` of the request body (prompt) and of the response body (completion).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from registry.snapshot import DeploymentSnap, KeySnap, LimitsSnap, RegistrySnapshot
from router.counters import Counters, CountersUnavailable, Spend, Window
from router.errors import BudgetExceeded, LimitExceeded, LimitsUnavailable

log = logging.getLogger("provenance_router")

BUDGET_HEADER = b"x-provenance-budget"
CONCURRENCY_RETRY_S = 1  # a request in flight usually ends within a second or so
BYTES_PER_TOKEN = 4  # the estimate when a backend reports no usage

SubjectKind = Literal["key", "tenant"]
Headers = list[tuple[bytes, bytes]]
# (kind, id, since) -> the spend the audit log holds for that subject since that time
SpendSource = Callable[[SubjectKind, str, datetime], Spend]


@dataclass(frozen=True, slots=True)
class Subject:
    """A key or a tenant whose limits apply to a request."""

    kind: SubjectKind
    id: str
    limits: LimitsSnap

    def name(self, counter: str) -> str:
        return f"{self.kind}:{self.id}:{counter}"


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Admission:
    """What ``admit`` granted a request: leases to release, counters to charge, headers."""

    lease: str  # the request's id: its concurrency leases are named by it
    headers: Headers = field(default_factory=list)
    leases: list[str] = field(default_factory=list)
    tpm: list[tuple[str, int]] = field(default_factory=list)  # (counter, limit) to charge
    budgets: list[tuple[str, float]] = field(default_factory=list)  # (counter, period end)


def subjects(snapshot: RegistrySnapshot, key: KeySnap) -> tuple[Subject, ...]:
    """The key and its tenant, those of them that have limits (usually none: no work)."""
    found: list[Subject] = []
    if key.limits is not None:
        found.append(Subject("key", key.id, key.limits))
    tenant = snapshot.tenants.get(key.tenant_id)
    if tenant is not None and tenant.limits is not None:
        found.append(Subject("tenant", tenant.id, tenant.limits))
    return tuple(found)


def usage_of(reported: Mapping[str, int], request_bytes: int, response_bytes: int) -> Usage:
    """The usage the backend reported, or the documented estimate when it reported none."""
    prompt = reported.get("prompt_tokens")
    total = reported.get("total_tokens")
    if prompt is None and total is None:
        return Usage(
            math.ceil(request_bytes / BYTES_PER_TOKEN),
            math.ceil(response_bytes / BYTES_PER_TOKEN),
            estimated=True,
        )
    completion = reported.get("completion_tokens")
    if prompt is None:  # a total alone: all of it prompt (as embeddings count)
        prompt = max(0, (total or 0) - (completion or 0))
    if completion is None:
        completion = max(0, (total or 0) - prompt)
    return Usage(prompt, completion)


def micro_usd(usage: Usage, deployment: DeploymentSnap | None) -> int:
    """The cost of ``usage`` on ``deployment`` in millionths of a dollar: a price per million
    tokens is a price in micro-dollars per token. No price: no cost."""
    if deployment is None:
        return 0
    cost = usage.prompt_tokens * (deployment.input_cost_per_mtok_usd or 0.0)
    cost += usage.completion_tokens * (deployment.output_cost_per_mtok_usd or 0.0)
    return round(cost)


def period_bounds(period: Literal["day", "month"], now: datetime) -> tuple[str, datetime, datetime]:
    """(label, start, end) of the UTC calendar period that contains ``now``."""
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m-%d"), start, start + timedelta(days=1)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start.strftime("%Y-%m"), start, end


def duration(seconds: float) -> str:
    """A duration as OpenAI's ``x-ratelimit-reset-*`` headers write it: ``20ms``, ``1s``,
    ``6m0s``, ``1h2m3s``."""
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    minutes, secs = divmod(math.ceil(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def rate_headers(requests: Window | None, tokens: Window | None) -> Headers:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` of the tightest windows."""
    headers: Headers = []
    for unit, window in (("requests", requests), ("tokens", tokens)):
        if window is not None:
            headers += [
                (f"x-ratelimit-limit-{unit}".encode(), str(window.limit).encode()),
                (f"x-ratelimit-remaining-{unit}".encode(), str(window.remaining).encode()),
                (f"x-ratelimit-reset-{unit}".encode(), duration(window.reset_s).encode()),
            ]
    return headers


def _tightest(current: Window | None, window: Window) -> Window:
    return window if current is None or window.remaining < current.remaining else current


class Limiter:
    """Admits, charges and releases requests against their subjects' limits (one per app)."""

    def __init__(
        self,
        counters: Counters,
        *,
        fail_closed: bool,
        spend_source: SpendSource,
        on_soft_budget: Callable[[SubjectKind], None] | None = None,
    ) -> None:
        self.counters = counters
        self.fail_closed = fail_closed
        self._spend_source = spend_source
        self._on_soft_budget = on_soft_budget
        self._seeded: dict[str, asyncio.Task[None]] = {}
        self._warned: set[str] = set()  # soft budgets already logged (counter names)
        self._failing = False
        self._periods: dict[str, tuple[str, datetime, datetime]] = {}

    async def admit(self, found: tuple[Subject, ...], request_id: str) -> Admission | None:
        """Check every limit of ``found`` (raising a 429 past one); None when Redis is down
        and the limits fail open."""
        try:
            admission = await self._admit(found, Admission(request_id))
        except CountersUnavailable as error:
            self._unavailable(error)
            return None
        self._failing = False
        return admission

    async def settle(
        self, admission: Admission, usage: Usage, deployment: DeploymentSnap | None
    ) -> None:
        """Charge a served request's tokens to its windows and budgets."""
        if usage.total <= 0:
            return
        spend = Spend(usage.total, micro_usd(usage, deployment))
        try:
            await self.counters.charge(admission.tpm, admission.budgets, spend)
        except CountersUnavailable as error:
            log.warning("limits: usage of request %s not counted: %s", admission.lease, error)

    async def release(self, admission: Admission) -> None:
        try:
            await self.counters.release_all(admission.leases, admission.lease)
        except CountersUnavailable as error:  # the leases expire on their own (their TTL)
            log.warning("limits: leases of request %s not released: %s", admission.lease, error)

    async def close(self) -> None:
        for task in self._seeded.values():
            task.cancel()
        await self.counters.close()

    # -- the checks, in order: budgets, tokens per minute, requests per minute, in flight ----

    async def _admit(self, found: tuple[Subject, ...], admission: Admission) -> Admission:
        """Three steps, each one batch of counter operations (one round trip in Redis)."""
        budgeted = [s for s in found if s.limits.budget is not None]
        periods = [await self._budget_counter(s) for s in budgeted]
        metered = [(s, s.name("tpm"), s.limits.tpm) for s in found if s.limits.tpm is not None]
        spent, windows = await self.counters.look(
            [name for name, _ in periods], [(name, limit) for _, name, limit in metered]
        )
        for subject, (name, end), spend in zip(budgeted, periods, spent, strict=True):
            self._check_budget(subject, name, end, spend, admission)
        tokens: Window | None = None
        for (subject, name, limit), window in zip(metered, windows, strict=True):
            if window.used >= window.limit:
                raise _exceeded(subject, "tpm", "tokens per minute", window, None)
            admission.tpm.append((name, limit))
            tokens = _tightest(tokens, window)
        admission.headers += rate_headers(await self._hit_rpm(found, tokens), tokens)
        await self._acquire(found, admission)
        return admission

    async def _hit_rpm(self, found: tuple[Subject, ...], tokens: Window | None) -> Window | None:
        limited = [s for s in found if s.limits.rpm is not None]
        hits = [(s.name("rpm"), s.limits.rpm) for s in limited if s.limits.rpm is not None]
        requests: Window | None = None
        for subject, window in zip(limited, await self.counters.hit_all(hits), strict=True):
            if window.over:
                raise _exceeded(subject, "rpm", "requests per minute", window, tokens)
            requests = _tightest(requests, window)
        return requests

    async def _acquire(self, found: tuple[Subject, ...], admission: Admission) -> None:
        for subject in found:
            limit = subject.limits.max_concurrent
            if limit is None:
                continue
            name = subject.name("inflight")
            if not await self.counters.acquire(name, limit, admission.lease):
                await self.release(admission)
                raise LimitExceeded(
                    f"Too many concurrent requests for {subject.kind} {subject.id}: "
                    f"limit {limit}. Please retry when one has finished.",
                    limit=f"{subject.kind}:max_concurrent",
                    headers=(
                        *admission.headers,
                        (b"retry-after", str(CONCURRENCY_RETRY_S).encode()),
                    ),
                )
            admission.leases.append(name)

    def _period(self, period: Literal["day", "month"]) -> tuple[str, datetime, datetime]:
        """The current period's bounds, computed once per period (not per request)."""
        bounds = self._periods.get(period)
        if bounds is None or time.time() >= bounds[2].timestamp():
            bounds = self._periods[period] = period_bounds(period, datetime.now(UTC))
        return bounds

    async def _budget_counter(self, subject: Subject) -> tuple[str, datetime]:
        """The subject's spend counter of the current period (seeded), and the period's end."""
        assert subject.limits.budget is not None
        label, start, end = self._period(subject.limits.budget.period)
        name = subject.name(f"spend:{label}")
        await self._seed(subject, name, start, end.timestamp())
        return name, end

    def _check_budget(
        self, subject: Subject, name: str, end: datetime, spent: Spend, admission: Admission
    ) -> None:
        budget = subject.limits.budget
        assert budget is not None
        hard = _over(spent, budget.hard_tokens, budget.hard_cost_usd)
        if hard is not None:
            retry_s = max(1, math.ceil(end.timestamp() - time.time()))
            raise BudgetExceeded(
                f"The {budget.period}ly budget of {subject.kind} {subject.id} is spent "
                f"({hard}). It renews at {end.isoformat()}.",
                limit=f"{subject.kind}:budget",
                headers=((b"retry-after", str(retry_s).encode()),),
            )
        if _over(spent, budget.soft_tokens, budget.soft_cost_usd) is not None:
            admission.headers.append((BUDGET_HEADER, b"soft-exceeded"))
            self._soft_exceeded(subject, name, spent)
        admission.budgets.append((name, end.timestamp()))

    def _soft_exceeded(self, subject: Subject, name: str, spent: Spend) -> None:
        """Log (and count) a soft budget once per period and process."""
        if name in self._warned:
            return
        self._warned.add(name)
        log.warning(
            "limits: %s %s passed its soft budget (%d tokens, %.4f USD in %s)",
            subject.kind,
            subject.id,
            spent.tokens,
            spent.cost_usd,
            name.rsplit(":", 1)[-1],
        )
        if self._on_soft_budget is not None:
            self._on_soft_budget(subject.kind)

    async def _seed(self, subject: Subject, name: str, start: datetime, end: float) -> None:
        """Once per counter: start it from the audit log (requests served before this process
        started, or by other replicas before Redis kept the count)."""
        task = self._seeded.get(name)
        if task is not None and task.done() and task.exception() is None:
            return  # the usual case: seeded long ago
        if task is None:
            task = self._seeded[name] = asyncio.ensure_future(
                self._load_seed(subject, name, start, end)
            )
        try:
            await asyncio.shield(task)
        except Exception:
            if self._seeded.get(name) is task:
                del self._seeded[name]  # try again with the next request
            raise

    async def _load_seed(self, subject: Subject, name: str, start: datetime, end: float) -> None:
        spent = await asyncio.to_thread(self._spend_source, subject.kind, subject.id, start)
        await self.counters.seed_spend(name, spent, end)

    def _unavailable(self, error: CountersUnavailable) -> None:
        if not self._failing:  # once per outage
            log.warning(
                "limits: counters unavailable (%s); %s",
                error,
                "refusing requests" if self.fail_closed else "allowing requests unchecked",
            )
        self._failing = True
        if self.fail_closed:
            raise LimitsUnavailable(
                "The gateway cannot check this key's limits right now (its counter store "
                "does not answer). Retry later."
            ) from error


def _over(spent: Spend, tokens: int | None, cost_usd: float | None) -> str | None:
    """What of a threshold ``spent`` reached, or None."""
    if tokens is not None and spent.tokens >= tokens:
        return f"{spent.tokens} of {tokens} tokens"
    if cost_usd is not None and spent.cost_usd >= cost_usd:
        return f"{spent.cost_usd:.4f} of {cost_usd:g} USD"
    return None


def _exceeded(
    subject: Subject, limit: str, what: str, window: Window, tokens: Window | None
) -> LimitExceeded:
    """OpenAI's wording: "Rate limit reached for requests per minute (rpm) ..."."""
    retry_s = max(1, math.ceil(window.reset_s))
    requests = window if limit == "rpm" else None
    headers = rate_headers(requests, window if limit == "tpm" else tokens)
    return LimitExceeded(
        f"Rate limit reached for {what} ({limit}) of {subject.kind} {subject.id}: "
        f"Limit {window.limit}, Used {window.used}. Please try again in {duration(retry_s)}.",
        limit=f"{subject.kind}:{limit}",
        headers=(*headers, (b"retry-after", str(retry_s).encode())),
    )
