"""``router.routing`` without a server: ``order`` strategies, ``plan`` over a real policy engine,
``attempt_in_order`` (transient vs non-transient, bounded attempts, deadline), and a hypothesis
property over random candidates, policies and failure scripts: only allowed deployments are ever
called, at most ``max_attempts`` times, and a success ends the calls.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tenacity import wait_none

from adapters.base import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamResponse,
    UpstreamTimeout,
)
from registry.snapshot import (
    DeploymentSnap,
    ModelSnap,
    PolicySnap,
    RegistrySnapshot,
    RouteSnap,
    TenantSnap,
)
from router.errors import (
    GatewayError,
    NoBackendAvailable,
    NotFound,
    PolicyDenied,
    RateLimited,
    UpstreamFailed,
    UpstreamTimedOut,
)
from router.health import BackendHealth
from router.policy.engine import PolicyEngine, RequestContext
from router.routing import (
    AttemptLog,
    Plan,
    attempt_in_order,
    not_served,
    order,
    plan,
    policy_denied,
)
from router.table import RoutingTable, build_table

MODEL = "acme/m"
CONTEXT = RequestContext(classification="internal")
OK = UpstreamResponse(status=200, content_type="application/json", body=b"{}")
Call = Callable[[DeploymentSnap, float], Awaitable[UpstreamResponse]]


def dep(dep_id: str, **fields: object) -> DeploymentSnap:
    return DeploymentSnap(id=dep_id, model_id=MODEL, **fields)  # type: ignore[arg-type]


def deps(n: int, **fields: object) -> list[DeploymentSnap]:
    return [dep(f"d{i}", **fields) for i in range(n)]


def health(failures: int = 3, cooldown_s: float = 60.0) -> BackendHealth:
    return BackendHealth(failures=failures, cooldown_s=cooldown_s)


def failure(outcome: str, dep_id: str) -> UpstreamError:
    if outcome == "connect":
        return UpstreamConnectError("refused", deployment_id=dep_id)
    if outcome == "timeout":
        return UpstreamTimeout("slow", deployment_id=dep_id)
    return UpstreamHTTPError(outcome, status=int(outcome), body=b"{}", deployment_id=dep_id)


class ScriptedBackends:
    """``call`` for attempt_in_order: each deployment answers per its script, then "ok"."""

    def __init__(self, scripts: dict[str, list[str]] | None = None) -> None:
        self.scripts = {k: list(v) for k, v in (scripts or {}).items()}
        self.calls: list[str] = []
        self.timeouts: list[float] = []

    async def __call__(self, deployment: DeploymentSnap, timeout_s: float) -> UpstreamResponse:
        self.calls.append(deployment.id)
        self.timeouts.append(timeout_s)
        script = self.scripts.get(deployment.id, [])
        outcome = script.pop(0) if script else "ok"
        if outcome == "ok":
            return OK
        raise failure(outcome, deployment.id)


def attempt(
    candidates: Sequence[DeploymentSnap],
    call: Call,
    *,
    backends_health: BackendHealth | None = None,
    max_attempts: int = 3,
    deadline_s: float = 30.0,
    log: AttemptLog | None = None,
) -> tuple[DeploymentSnap, UpstreamResponse]:
    return asyncio.run(
        attempt_in_order(
            candidates,
            call,
            health=backends_health or health(),
            log=log or AttemptLog(),
            max_attempts=max_attempts,
            deadline_s=deadline_s,
        )
    )


# --- order ----------------------------------------------------------------------------------


def test_priority_keeps_the_configured_order() -> None:
    candidates = [dep("c"), dep("a"), dep("b")]
    assert order(candidates, "priority", health(), random.Random(1)) == candidates


def test_weighted_first_pick_follows_the_weights() -> None:
    candidates = [dep("a", weight=6), dep("b", weight=3), dep("c", weight=1)]
    rng = random.Random(7)
    firsts = Counter(order(candidates, "weighted", health(), rng)[0].id for _ in range(6000))
    assert firsts["a"] / 6000 == pytest.approx(0.6, abs=0.03)
    assert firsts["b"] / 6000 == pytest.approx(0.3, abs=0.03)
    assert firsts["c"] / 6000 == pytest.approx(0.1, abs=0.03)


def test_weighted_order_is_a_permutation() -> None:
    candidates = [dep(f"d{i}", weight=i + 1) for i in range(5)]
    for seed in range(50):
        ordered = order(candidates, "weighted", health(), random.Random(seed))
        assert sorted(d.id for d in ordered) == sorted(d.id for d in candidates)


def test_weight_zero_never_goes_before_a_weighted_deployment() -> None:
    candidates = [dep("drained", weight=0), dep("live", weight=1), dep("spare", weight=0)]
    rng = random.Random(3)
    for _ in range(500):
        ordered = [d.id for d in order(candidates, "weighted", health(), rng)]
        assert ordered[0] == "live"
        assert sorted(ordered[1:]) == ["drained", "spare"]


def test_least_latency_sorts_by_observed_latency_unmeasured_first() -> None:
    observed = health()
    observed.record_success("slow", 0.9)
    observed.record_success("fast", 0.1)
    candidates = [dep("slow"), dep("fast"), dep("new")]
    ordered = order(candidates, "least-latency", observed, random.Random(1))
    assert [d.id for d in ordered] == ["new", "fast", "slow"]


# --- plan (real policy engine) ----------------------------------------------------------------


def table_of(
    deployments: Sequence[DeploymentSnap],
    *,
    denied: Sequence[str] = (),
    strategy: str = "priority",
) -> RoutingTable:
    """A routing table with route ``r`` over ``deployments`` and a policy denying ``denied``."""
    rules = f"rules:\n  - id: deny-listed\n    deny: {{deployment: {list(denied)}}}\n"
    snapshot = RegistrySnapshot(
        version=1,
        orgs={},
        licenses={},
        models={MODEL: ModelSnap(id=MODEL, review_status="approved")},
        deployments={d.id: d for d in deployments},
        routes={"r": RouteSnap("r", strategy, tuple(d.id for d in deployments))},  # type: ignore[arg-type]
        tenants={"t": TenantSnap(id="t")},
        keys_by_hash={},
        policy=PolicySnap(1, "p", "yaml", rules if denied else "rules: []\n"),
    )
    engine = PolicyEngine.build(snapshot, snapshot.policy)
    return build_table(snapshot, engine, local_urls={}, secret=lambda _: None)


def plan_for(table: RoutingTable, *, model: str = "r", tenant_id: str = "t") -> Plan:
    return plan(
        table,
        model=model,
        tenant_id=tenant_id,
        action="infer",
        context=CONTEXT,
        health=health(),
        rng=random.Random(1),
    )


def test_plan_keeps_only_allowed_deployments_in_order() -> None:
    table = table_of(deps(4), denied=["d1", "d2"])
    routed = plan_for(table)
    assert [d.id for d in routed.ordered] == ["d0", "d3"]
    verdicts = {d.deployment_id: (d.allowed, d.rule_ids) for d in routed.decisions}
    assert verdicts["d1"] == (False, ("deny-listed",))
    assert verdicts["d0"][0] and verdicts["d3"][0]


def test_plan_unknown_name_is_model_not_found() -> None:
    with pytest.raises(NotFound) as caught:
        plan_for(table_of(deps(1)), model="nope")
    assert caught.value.error_code == "model_not_found" and caught.value.status == 404


def test_plan_all_disabled_is_no_backend_and_keeps_every_verdict() -> None:
    """Disabled deployments are decided like any other (``baseline-disabled`` denies them), so
    the audit row and explain list the same candidates; the client sees 503, not a denial."""
    table = table_of(deps(2, enabled=False))
    routed = plan_for(table)
    assert routed.ordered == ()
    assert [(d.deployment_id, d.allowed) for d in routed.decisions] == [
        ("d0", False),
        ("d1", False),
    ]
    assert isinstance(not_served(table, "r", routed.decisions), NoBackendAvailable)


def test_plan_all_denied_keeps_every_verdict_for_the_audit() -> None:
    table = table_of(deps(2), denied=["d0", "d1"])
    routed = plan_for(table)
    assert routed.ordered == ()
    assert [(d.deployment_id, d.allowed, d.rule_ids) for d in routed.decisions] == [
        ("d0", False, ("deny-listed",)),
        ("d1", False, ("deny-listed",)),
    ]
    denied = policy_denied("r", routed.decisions, table.policy_version)
    assert isinstance(denied, PolicyDenied) and denied.status == 403
    assert denied.rule_ids == ("deny-listed",) and "deny-listed" in denied.message


def test_plan_unknown_tenant_fails_closed() -> None:
    routed = plan_for(table_of(deps(2)), tenant_id="stranger")
    assert routed.ordered == () and not any(d.allowed for d in routed.decisions)


def test_plan_model_id_resolves_by_priority() -> None:
    table = table_of([dep("late", priority=50), dep("early", priority=5)])
    assert [d.id for d in plan_for(table, model=MODEL).ordered] == ["early", "late"]


# --- attempt_in_order ---------------------------------------------------------------------------


def test_transient_failures_move_on_to_the_next_candidate() -> None:
    backends = ScriptedBackends({"d0": ["connect"], "d1": ["timeout"], "d2": ["ok"]})
    log = AttemptLog()
    chosen, response = attempt(deps(3), backends, log=log)
    assert chosen.id == "d2" and response is OK
    assert [(a.deployment_id, a.outcome) for a in log.attempts] == [
        ("d0", "connect_error"),
        ("d1", "timeout"),
        ("d2", "ok"),
    ]


@pytest.mark.parametrize("status", ["429", "500", "502", "503", "504"])
def test_retryable_statuses(status: str) -> None:
    backends = ScriptedBackends({"d0": [status]})
    chosen, _ = attempt(deps(2), backends)
    assert chosen.id == "d1" and backends.calls == ["d0", "d1"]


@pytest.mark.parametrize("status", ["400", "401", "403", "404", "413", "422"])
def test_non_transient_error_is_raised_at_once(status: str) -> None:
    backends = ScriptedBackends({"d0": [status]})
    observed = health(failures=1)
    with pytest.raises(UpstreamHTTPError) as caught:
        attempt(deps(3), backends, backends_health=observed)
    assert caught.value.status == int(status)
    assert backends.calls == ["d0"]
    assert not observed.is_open("d0")  # the backend is fine; the request was not


def test_attempts_are_bounded() -> None:
    backends = ScriptedBackends({f"d{i}": ["500"] for i in range(5)})
    log = AttemptLog()
    with pytest.raises(UpstreamFailed) as caught:
        attempt(deps(5), backends, max_attempts=3, log=log)
    assert backends.calls == ["d0", "d1", "d2"]
    assert len(log.attempts) == 3
    assert "d2: http_500" in caught.value.message and "d3" not in caught.value.message


def test_each_candidate_is_tried_at_most_once() -> None:
    backends = ScriptedBackends({"d0": ["500"], "d1": ["500"]})
    with pytest.raises(UpstreamFailed):
        attempt(deps(2), backends, max_attempts=5)
    assert backends.calls == ["d0", "d1"]


@pytest.mark.parametrize(
    ("scripts", "expected"),
    [
        (["429", "429"], RateLimited),
        (["500", "timeout"], UpstreamTimedOut),
        (["timeout", "connect"], UpstreamFailed),
        (["429", "503"], UpstreamFailed),
    ],
)
def test_exhaustion_maps_the_last_failure(scripts: list[str], expected: type[GatewayError]) -> None:
    backends = ScriptedBackends({"d0": [scripts[0]], "d1": [scripts[1]]})
    with pytest.raises(expected):
        attempt(deps(2), backends)


def test_open_circuits_are_skipped_without_a_call() -> None:
    observed = health(failures=1)
    observed.record_failure("d0")
    backends = ScriptedBackends()
    log = AttemptLog()
    chosen, _ = attempt(deps(2), backends, backends_health=observed, log=log)
    assert chosen.id == "d1" and backends.calls == ["d1"]
    assert [(a.deployment_id, a.outcome) for a in log.attempts] == [
        ("d0", "circuit_open"),
        ("d1", "ok"),
    ]


def test_every_circuit_open_is_no_backend_available() -> None:
    observed = health(failures=1)
    for d in deps(2):
        observed.record_failure(d.id)
    backends = ScriptedBackends()
    with pytest.raises(NoBackendAvailable) as caught:
        attempt(deps(2), backends, backends_health=observed)
    assert backends.calls == [] and "circuit_open" in caught.value.message


def test_outcomes_feed_the_circuit_breaker() -> None:
    observed = health(failures=2)
    backends = ScriptedBackends({"d0": ["500", "500"]})
    attempt(deps(2), backends, backends_health=observed)
    assert not observed.is_open("d0")
    attempt(deps(2), backends, backends_health=observed)
    assert observed.is_open("d0")
    assert observed.latency_s("d1") > 0


def test_deadline_bounds_the_attempt_timeout_and_stops_retrying() -> None:
    calls: list[float] = []

    async def hanging(deployment: DeploymentSnap, timeout_s: float) -> UpstreamResponse:
        calls.append(timeout_s)
        await asyncio.sleep(timeout_s)  # a backend that never answers within the timeout
        raise UpstreamTimeout("no answer", deployment_id=deployment.id)

    started = time.monotonic()
    with pytest.raises(UpstreamTimedOut):
        attempt(deps(5, timeout_s=60.0), hanging, max_attempts=5, deadline_s=0.2)
    elapsed = time.monotonic() - started
    assert len(calls) == 1 and 0 < calls[0] <= 0.2  # the deployment's 60 s cut to the deadline
    assert elapsed < 1.0


def test_per_attempt_timeout_is_the_deployments_when_the_deadline_is_far() -> None:
    backends = ScriptedBackends({"d0": ["500"]})
    attempt([dep("d0", timeout_s=2.5), dep("d1", timeout_s=7.0)], backends, deadline_s=100.0)
    assert backends.timeouts == [2.5, 7.0]


# --- property: only allowed deployments are ever called ------------------------------------------

OUTCOMES = ["ok", "ok", "500", "503", "429", "connect", "timeout", "400"]


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, object]:
    n = draw(st.integers(min_value=1, max_value=6))
    ids = [f"d{i}" for i in range(n)]
    return {
        "ids": ids,
        "denied": draw(st.lists(st.booleans(), min_size=n, max_size=n)),
        "enabled": draw(
            st.lists(st.sampled_from([True, True, True, False]), min_size=n, max_size=n)
        ),
        "weights": draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)),
        "scripts": {i: draw(st.lists(st.sampled_from(OUTCOMES), max_size=4)) for i in ids},
        "strategy": draw(st.sampled_from(["priority", "weighted", "least-latency"])),
        "requests": draw(st.integers(min_value=1, max_value=4)),
        "max_attempts": draw(st.integers(min_value=1, max_value=4)),
        "breaker": draw(st.integers(min_value=1, max_value=3)),
        "seed": draw(st.integers(0, 2**16)),
    }


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_only_allowed_deployments_are_ever_called(scenario: dict[str, object]) -> None:
    ids: list[str] = scenario["ids"]  # type: ignore[assignment]
    denied_flags: list[bool] = scenario["denied"]  # type: ignore[assignment]
    enabled_flags: list[bool] = scenario["enabled"]  # type: ignore[assignment]
    weights: list[int] = scenario["weights"]  # type: ignore[assignment]
    max_attempts: int = scenario["max_attempts"]  # type: ignore[assignment]
    deployments = [
        dep(i, enabled=e, weight=w) for i, e, w in zip(ids, enabled_flags, weights, strict=True)
    ]
    denied = [i for i, flag in zip(ids, denied_flags, strict=True) if flag]
    table = table_of(deployments, denied=denied, strategy=scenario["strategy"])  # type: ignore[arg-type]
    allowed = {
        d.id for d, flag in zip(deployments, denied_flags, strict=True) if d.enabled and not flag
    }
    backends = ScriptedBackends(scenario["scripts"])  # type: ignore[arg-type]
    observed = health(failures=scenario["breaker"])  # type: ignore[arg-type]
    rng = random.Random(scenario["seed"])  # type: ignore[arg-type]

    async def one_request() -> None:
        before = len(backends.calls)
        try:
            routed = plan(
                table,
                model="r",
                tenant_id="t",
                action="infer",
                context=CONTEXT,
                health=observed,
                rng=rng,
            )
        except NoBackendAvailable:
            assert not any(enabled_flags)
            return
        assert {d.id for d in routed.ordered} == allowed
        assert {d.deployment_id for d in routed.decisions if d.allowed} == allowed
        try:
            chosen, _ = await attempt_in_order(
                routed.ordered,
                backends,
                health=observed,
                log=AttemptLog(),
                max_attempts=max_attempts,
                deadline_s=60.0,
            )
        except (GatewayError, UpstreamHTTPError):
            chosen = None
        made = backends.calls[before:]
        assert set(made) <= allowed
        assert len(made) <= max_attempts
        assert len(made) == len(set(made))  # no candidate twice in one request
        if chosen is not None:
            assert made and made[-1] == chosen.id  # a success stops further calls
        if scenario["strategy"] == "priority":
            ordered = [d.id for d in routed.ordered]
            assert made == sorted(made, key=ordered.index)

    async def run() -> None:
        for _ in range(scenario["requests"]):  # type: ignore[attr-defined]
            await one_request()

    # the jittered backoff between attempts is irrelevant to the property; skip the waiting
    with mock.patch("router.routing.wait_exponential_jitter", lambda **_: wait_none()):
        asyncio.run(run())
    assert set(backends.calls) <= allowed


class EndlessStream:
    """An upstream stream that never ends by itself; records whether it was released."""

    def __init__(self) -> None:
        self.closed = False

    def __aiter__(self) -> EndlessStream:
        return self

    async def __anext__(self) -> bytes:
        await asyncio.sleep(0)
        return b'data: {"choices": []}\n\n'

    async def aclose(self) -> None:
        self.closed = True


def test_a_stream_whose_client_side_fails_releases_its_upstream() -> None:
    """Sending to the client can fail or be cancelled (a broken socket, shutdown): the upstream
    stream must still be released, or its connection stays taken and the model keeps
    generating for nobody."""
    from adapters.base import UpstreamResponse
    from router.audit import AuditWriter
    from router.departure import Departure
    from router.openai.serving import Exchange, _relay_stream

    async def scenario() -> EndlessStream:
        chunks = EndlessStream()
        response = UpstreamResponse(status=200, content_type="text/event-stream", chunks=chunks)
        audit = AuditWriter(lambda records, closing: None, flush_s=3600, batch_max=1000)
        exchange = Exchange("req-1", 0.0, table_of(deps(1)), None, audit)
        sent = 0

        async def send(message: dict[str, object]) -> None:
            nonlocal sent
            sent += 1
            if sent > 3:
                raise OSError("the client's socket broke")

        async def receive() -> dict[str, object]:
            await asyncio.Event().wait()  # the client never says it left
            return {}

        departure = Departure(receive)
        departure.relaying(response)
        with pytest.raises(OSError, match="socket broke"):
            await _relay_stream(exchange, response, send, departure)
        return chunks

    assert asyncio.run(scenario()).closed
