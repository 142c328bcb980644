"""``BackendHealth``: per-deployment circuit breakers and smoothed latency, on an injected clock."""

from __future__ import annotations

import pytest

from router.health import BackendHealth

COOLDOWN_S = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def health(clock: Clock) -> BackendHealth:
    return BackendHealth(failures=3, cooldown_s=COOLDOWN_S, clock=clock)


def fail(health: BackendHealth, times: int, deployment: str = "d") -> None:
    for _ in range(times):
        health.record_failure(deployment)


def test_unknown_deployment_is_closed(health: BackendHealth) -> None:
    assert health.available("d") and not health.is_open("d")


def test_opens_after_threshold_consecutive_failures(health: BackendHealth) -> None:
    fail(health, 2)
    assert health.available("d") and not health.is_open("d")
    fail(health, 1)
    assert health.is_open("d")
    assert not health.available("d")
    assert health.available("other")  # circuits are per deployment


def test_success_resets_the_consecutive_count(health: BackendHealth) -> None:
    fail(health, 2)
    health.record_success("d", 0.1)
    fail(health, 2)
    assert health.available("d") and not health.is_open("d")
    fail(health, 1)
    assert not health.available("d")


def test_stays_open_for_the_cooldown(health: BackendHealth, clock: Clock) -> None:
    fail(health, 3)
    clock.advance(COOLDOWN_S - 0.001)
    assert not health.available("d")


def test_half_open_lets_exactly_one_probe_through(health: BackendHealth, clock: Clock) -> None:
    fail(health, 3)
    clock.advance(COOLDOWN_S)
    assert health.available("d")  # the probe
    assert not health.available("d")  # everyone else waits for its verdict
    assert not health.available("d")


def test_probe_success_closes(health: BackendHealth, clock: Clock) -> None:
    fail(health, 3)
    clock.advance(COOLDOWN_S)
    assert health.available("d")
    health.record_success("d", 0.05)
    assert not health.is_open("d")
    assert all(health.available("d") for _ in range(5))
    fail(health, 2)  # a fresh count: two failures do not reopen it
    assert health.available("d")


def test_probe_failure_reopens_for_another_cooldown(health: BackendHealth, clock: Clock) -> None:
    fail(health, 3)
    clock.advance(COOLDOWN_S)
    assert health.available("d")
    clock.advance(1.0)
    fail(health, 1)
    clock.advance(COOLDOWN_S - 0.5)
    assert not health.available("d")  # the cool-down restarted at the probe's failure
    clock.advance(1.0)
    assert health.available("d")


def test_abandoned_probe_does_not_wedge_the_circuit(health: BackendHealth, clock: Clock) -> None:
    fail(health, 3)
    clock.advance(COOLDOWN_S)
    assert health.available("d")  # a probe that never reports back (client went away)
    clock.advance(COOLDOWN_S)
    assert health.available("d")  # another probe after one more cool-down


def test_non_reporting_is_not_success(health: BackendHealth, clock: Clock) -> None:
    fail(health, 3)
    clock.advance(COOLDOWN_S)
    health.available("d")
    assert health.is_open("d")


def test_latency_is_smoothed(clock: Clock) -> None:
    health = BackendHealth(failures=3, cooldown_s=1.0, clock=clock, latency_alpha=0.5)
    assert health.latency_s("d") == 0.0  # never measured: tried first by least-latency
    health.record_success("d", 1.0)
    assert health.latency_s("d") == 1.0
    health.record_success("d", 3.0)
    assert health.latency_s("d") == pytest.approx(2.0)
    health.record_success("d", 0.0)
    assert health.latency_s("d") == pytest.approx(1.0)
    assert health.latency_s("other") == 0.0


def test_failures_do_not_change_latency(health: BackendHealth) -> None:
    health.record_success("d", 0.2)
    fail(health, 2)
    assert health.latency_s("d") == pytest.approx(0.2)
