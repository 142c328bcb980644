"""From a requested model to a started upstream response.

    resolve name (candidate_deployments, the one resolver) -> policy on every candidate
    (eligible_deployments, the only evaluation path) -> order by strategy -> try in order,
    skipping open circuits

Only deployments the policy allowed are ever in the try order, so no attempt, retry or fallback
can reach a denied one. A transient failure before the first byte reached the client (connect
error, timeout, 429, 5xx) moves on to the next allowed candidate, with a short jittered backoff
(tenacity), at most ``max_attempts`` attempts and within ``deadline_s``. Once a response has
started, nothing here runs again for that request.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from adapters.base import (
    UpstreamError,
    UpstreamHTTPError,
    UpstreamPoolTimeout,
    UpstreamResponse,
    UpstreamResponseTooLarge,
    UpstreamTimeout,
)
from registry.snapshot import DeploymentSnap, KeySnap, Strategy
from router.errors import (
    GatewayError,
    GatewaySaturated,
    KeyNotAllowed,
    NoBackendAvailable,
    NotFound,
    PolicyDenied,
    RateLimited,
    UpstreamFailed,
    UpstreamTimedOut,
)
from router.health import BackendHealth
from router.policy import CandidateDecision, RequestContext, eligible_deployments
from router.table import Candidates, Filtered, FilterKey, RoutingTable


@dataclass(frozen=True, slots=True)
class Plan:
    """The allowed deployments in try order, and every candidate's decision for the audit."""

    ordered: tuple[DeploymentSnap, ...]
    decisions: tuple[CandidateDecision, ...]


@dataclass(slots=True)
class Attempt:
    deployment_id: str
    outcome: str  # "ok", "connect_error", "timeout", "http_503", "circuit_open", "cancelled"
    latency_ms: float = 0.0


@dataclass(slots=True)
class AttemptLog:
    """The attempts of one request. ``last_error`` is what :func:`exhausted` reports; clear it
    (:meth:`release`) when the request is done: its traceback holds the frames that hold this
    log, a reference cycle that would keep the request's body alive until a full collection."""

    attempts: list[Attempt] = field(default_factory=list)
    last_error: UpstreamError | None = None
    errors: list[UpstreamError] = field(default_factory=list)

    def release(self) -> None:
        """Drop the failures and their tracebacks (which hold the request's frames)."""
        for error in self.errors:
            error.__traceback__ = None
        self.errors.clear()
        self.last_error = None


def plan(
    table: RoutingTable,
    *,
    model: str,
    tenant_id: str,
    action: str,
    context: RequestContext,
    health: BackendHealth,
    rng: random.Random,
    key: KeySnap | None = None,
) -> Plan:
    """Decide which deployments may serve this request and in which order to try them; with
    ``key`` (of ``tenant_id``), within its allow-list.

    Raises KeyNotAllowed for a name outside the key's allow-list, NotFound for an unknown
    name. When no candidate is allowed, ``ordered`` is empty and the caller raises
    ``not_served`` after recording ``decisions``: the audit row of a refusal must name them."""
    if key is None:
        allowed, decisions = allowed_deployments(
            table, model=model, tenant_id=tenant_id, action=action, context=context
        )
    else:
        allowed, decisions = allowed_for_key(
            table, key, model=model, action=action, context=context
        )
    strategy = table.candidates[model].strategy
    return Plan(tuple(order(allowed, strategy, health, rng)), decisions)


def allowed_deployments(
    table: RoutingTable, *, model: str, tenant_id: str, action: str, context: RequestContext
) -> Filtered:
    """The deployments of ``model`` the policy allows for this request, and every candidate's
    decision; cached on the table. Routing and the model listing both ask here.

    Raises NotFound for an unknown name."""
    resolved = table.candidates.get(model)
    if resolved is None:
        raise NotFound(
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    key = (model, tenant_id, action, context)
    return table.filtered.get(key, lambda: policy_filter(table, resolved, key))


def allowed_for_key(
    table: RoutingTable, key: KeySnap, *, model: str, action: str, context: RequestContext
) -> Filtered:
    """:func:`allowed_deployments` for the key's tenant, narrowed by the key's allow-list:
    the one place an allow-list is applied (routing and the model listing ask here). It only
    removes deployments, so a key never reaches one its tenant's policy denies.

    Raises KeyNotAllowed (before any policy evaluation) when the allow-list refuses
    ``model``, NotFound for an unknown name."""
    refusal = key_refusal(table, key, model)
    if refusal is not None:
        raise KeyNotAllowed(refusal, param="model")
    filtered = allowed_deployments(
        table, model=model, tenant_id=key.tenant_id, action=action, context=context
    )
    models = key.allowed_models
    if models is None:
        return filtered
    memo_key = ((model, key.tenant_id, action, context), models)
    return table.narrowed.get(memo_key, lambda: _narrow(table, filtered, models))


def key_refusal(table: RoutingTable, key: KeySnap, name: str) -> str | None:
    """Why ``key``'s allow-list refuses ``name`` as a request's ``model``; None if it does not.

    - ``allowed_routes``: the route names the key may send (None: any route);
    - ``allowed_models``: the model ids the key may send, and the only models a route may
      serve it with (None: any model).
    A model id sent directly needs ``allowed_models`` to list it once either list is set: a
    key limited to some routes cannot step around them by naming a model."""
    if not key.restricted:
        return None
    routes, models = key.allowed_routes, key.allowed_models
    if name in table.snapshot.routes:
        if routes is not None and name not in routes:
            return f"This API key may not use route `{name}` (its allow-list: {_listed(key)})."
        served = table.candidates[name].deployments if name in table.candidates else ()
        if models is not None and served and not any(d.model_id in models for d in served):
            return (
                f"Route `{name}` serves no model this API key may use "
                f"(its allow-list: {_listed(key)})."
            )
        return None
    if models is None or name not in models:
        return f"This API key may not use model `{name}` (its allow-list: {_listed(key)})."
    return None


def _listed(key: KeySnap) -> str:
    parts = [
        f"{what} {', '.join(sorted(names)) or 'none'}"
        for what, names in (("routes", key.allowed_routes), ("models", key.allowed_models))
        if names is not None
    ]
    return "; ".join(parts)


def _narrow(table: RoutingTable, filtered: Filtered, models: frozenset[str]) -> Filtered:
    """Only the deployments (and decisions) of ``models``: the audit row names only the
    candidates this key could have been served by."""
    allowed, decisions = filtered
    deployments = table.snapshot.deployments
    return (
        tuple(d for d in allowed if d.model_id in models),
        tuple(d for d in decisions if deployments[d.deployment_id].model_id in models),
    )


def policy_filter(table: RoutingTable, resolved: Candidates, key: FilterKey) -> Filtered:
    """The candidates the policy allows, and every candidate's decision (disabled ones too:
    ``baseline-disabled`` denies them, as explain shows).

    Depends only on the table (one registry and policy version) and the key, so the result is
    cached on the table: the same decisions, from the same engine, request after request."""
    _, tenant_id, action, context = key
    candidates = resolved.deployments
    decisions = eligible_deployments(
        table.engine, tenant_id=tenant_id, action=action, context=context, candidates=candidates
    )
    allowed = [d for d, decision in zip(candidates, decisions, strict=True) if decision.allowed]
    return tuple(allowed), tuple(decisions)


def not_served(
    table: RoutingTable, model: str, decisions: Sequence[CandidateDecision]
) -> GatewayError:
    """The client's error when no candidate is allowed: nothing deployed or enabled is the
    operator's state (503); otherwise the policy refused (403, saying why)."""
    deployments = table.candidates[model].deployments
    if not any(d.enabled for d in deployments):
        return NoBackendAvailable(f"No deployment of `{model}` is enabled.")
    return policy_denied(model, decisions, table.policy_version)


MAX_REASONS = 5  # in a denial's message; the audit log and explain have every one


def policy_denied(
    model: str, decisions: Sequence[CandidateDecision], policy_version: int
) -> PolicyDenied:
    """A denial that says why: each deciding rule with what it saw (the words explain uses).

    The caller may not see the deployments it was refused, so their ids are left out of the
    reasons; rule ids and the facts that decided are what the tenant's own request revealed."""
    rule_ids = tuple(dict.fromkeys(r for d in decisions for r in d.rule_ids))
    rules = ", ".join(rule_ids) if rule_ids else "none (no rule permits it: default deny)"
    reasons = list(dict.fromkeys(_without_ids(d) for d in decisions if not d.allowed))
    shown = "; ".join(reasons[:MAX_REASONS])
    more = f" (and {len(reasons) - MAX_REASONS} more)" if len(reasons) > MAX_REASONS else ""
    return PolicyDenied(
        f"Provenance policy v{policy_version} denies every deployment of `{model}` "
        f"for this request. Deciding rules: {rules}. Why: {shown}{more}.",
        rule_ids=rule_ids,
    )


def _without_ids(decision: CandidateDecision) -> str:
    text = "; ".join(decision.reasons)
    return text.replace(decision.deployment_id, "a deployment")


def order(
    deployments: Sequence[DeploymentSnap],
    strategy: Strategy,
    health: BackendHealth,
    rng: random.Random,
) -> list[DeploymentSnap]:
    """``priority`` keeps the configured order; ``weighted`` draws a weighted random order
    (Efraimidis-Spirakis keys); ``least-latency`` sorts by smoothed observed latency."""
    if strategy == "weighted":
        return sorted(
            # weight 0 = drained: only a fallback, after every weighted deployment
            deployments,
            key=lambda d: rng.random() ** (1.0 / d.weight) if d.weight > 0 else -1.0,
            reverse=True,
        )
    if strategy == "least-latency":
        return sorted(deployments, key=lambda d: health.latency_s(d.id))
    return list(deployments)


def _is_transient(error: BaseException) -> bool:
    return isinstance(error, UpstreamError) and error.transient


async def attempt_in_order(
    candidates: Sequence[DeploymentSnap],
    call: Callable[[DeploymentSnap, float], Awaitable[UpstreamResponse]],
    *,
    health: BackendHealth,
    log: AttemptLog,
    max_attempts: int,
    deadline_s: float,
) -> tuple[DeploymentSnap, UpstreamResponse]:
    """Call each candidate in turn until one starts a response.

    ``call(deployment, timeout_s)`` must raise UpstreamError before any byte is relayed.
    A non-transient upstream error (e.g. 400) is raised at once: another backend would say the
    same. So is a pool timeout (the gateway's own saturation: no circuit counts it, and the
    request already spent its pool wait; a saturated gateway sheds load rather than adding
    attempts). When every attempt failed, the last failure is mapped to the client's status."""
    started = time.monotonic()
    untried = list(reversed(candidates))

    async def attempt_next() -> tuple[DeploymentSnap, UpstreamResponse] | None:
        deployment = _next_available(untried, health, log)
        if deployment is None:
            return None
        timeout_s = min(deployment.timeout_s, deadline_s - (time.monotonic() - started))
        return deployment, await _call_once(deployment, call, timeout_s, health, log)

    try:  # the first attempt runs without tenacity: ~16 us saved on the common path
        served = await attempt_next()
    except UpstreamError as error:
        if not error.transient:
            raise
        time_left = deadline_s - (time.monotonic() - started)
        served = await _fall_back(attempt_next, max_attempts - 1, time_left)
    if served is None:
        raise exhausted(log)
    return served


async def _fall_back(
    attempt_next: Callable[[], Awaitable[tuple[DeploymentSnap, UpstreamResponse] | None]],
    attempts_left: int,
    time_left_s: float,
) -> tuple[DeploymentSnap, UpstreamResponse] | None:
    """After a transient failure: the next candidates, with jittered backoff between them."""
    if attempts_left < 1 or time_left_s <= 0:
        return None
    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts_left) | stop_after_delay(time_left_s),
        # jitter's default is 1 s, which would make nearly every wait the 0.25 s maximum
        wait=wait_exponential_jitter(multiplier=0.01, max=0.25, jitter=0.01),
        retry=retry_if_exception(_is_transient),
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await attempt_next()
    except UpstreamError as error:
        if not error.transient:
            raise
    return None


def _next_available(
    untried: list[DeploymentSnap], health: BackendHealth, log: AttemptLog
) -> DeploymentSnap | None:
    """Pop the next candidate whose circuit lets a request through (checked only when it is
    its turn: a half-open circuit is claimed only by the attempt that will use it)."""
    while untried:
        deployment = untried.pop()
        if health.available(deployment.id):
            return deployment
        log.attempts.append(Attempt(deployment.id, "circuit_open"))
    return None


async def _call_once(
    deployment: DeploymentSnap,
    call: Callable[[DeploymentSnap, float], Awaitable[UpstreamResponse]],
    timeout_s: float,
    health: BackendHealth,
    log: AttemptLog,
) -> UpstreamResponse:
    started = time.monotonic()
    try:
        response = await call(deployment, max(timeout_s, 0.001))
    except asyncio.CancelledError:  # e.g. the client left: not the backend's failure
        log.attempts.append(
            Attempt(deployment.id, "cancelled", (time.monotonic() - started) * 1000)
        )
        raise
    except UpstreamError as error:
        elapsed_ms = (time.monotonic() - started) * 1000
        log.attempts.append(Attempt(deployment.id, outcome_of(error), elapsed_ms))
        log.last_error = error
        log.errors.append(error)
        if error.transient:
            health.record_failure(deployment.id)
        raise
    elapsed = time.monotonic() - started
    log.attempts.append(Attempt(deployment.id, "ok", elapsed * 1000))
    health.record_success(deployment.id, elapsed)
    return response


def outcome_of(error: UpstreamError) -> str:
    """The attempt's outcome as the audit row and the client's message name it."""
    if isinstance(error, UpstreamHTTPError):
        return f"http_{error.status}"
    if isinstance(error, UpstreamTimeout):
        return "timeout" if error.phase == "read" else f"{error.phase}_timeout"
    if isinstance(error, UpstreamPoolTimeout):
        return "pool_timeout"
    if isinstance(error, UpstreamResponseTooLarge):
        return "response_too_large"
    return "connect_error"


def final_failure(error: UpstreamError) -> GatewayError:
    """The client's error for a non-transient failure that is not a backend's HTTP verdict."""
    if isinstance(error, UpstreamPoolTimeout):
        return GatewaySaturated(
            "The gateway has no free connection to the backend right now; retry later."
        )
    if isinstance(error, UpstreamResponseTooLarge):
        return UpstreamFailed(
            "The backend's response exceeded the gateway's size limits.",
            code="upstream_response_too_large",
        )
    return UpstreamFailed(f"The backend failed ({outcome_of(error)}).")


def exhausted(log: AttemptLog) -> GatewayError:
    """The client's error once no candidate could start a response."""
    error = log.last_error
    tried = ", ".join(f"{a.deployment_id}: {a.outcome}" for a in log.attempts)
    if error is None:
        return NoBackendAvailable(f"No allowed deployment is available right now ({tried}).")
    if isinstance(error, UpstreamHTTPError) and error.status == 429:
        return RateLimited(f"Every allowed deployment is rate limited ({tried}).")
    if isinstance(error, UpstreamTimeout):
        return UpstreamTimedOut(f"Every allowed deployment timed out ({tried}).")
    return UpstreamFailed(f"Every allowed deployment failed ({tried}).")
