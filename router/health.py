"""Per-deployment health seen by this gateway process: circuit breakers and latency.

A circuit opens after ``failures`` consecutive transient failures and skips the deployment for
``cooldown_s``. After the cool-down one request is let through (half-open) and the cool-down
restarts, so an abandoned probe (client gone) cannot wedge the circuit: success closes it,
failure keeps it open. State is per process on purpose: each replica judges the backends it
can reach.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Circuit:
    failures: int = 0
    open_until: float = 0.0


class BackendHealth:
    def __init__(
        self,
        *,
        failures: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
        latency_alpha: float = 0.2,
    ) -> None:
        self._threshold = failures
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._alpha = latency_alpha
        self._circuits: dict[str, _Circuit] = {}
        self._latency_s: dict[str, float] = {}

    def available(self, deployment_id: str) -> bool:
        """May a request be sent now? Claims the half-open probe when the cool-down is over."""
        circuit = self._circuits.get(deployment_id)
        if circuit is None or circuit.failures < self._threshold:
            return True
        now = self._clock()
        if now < circuit.open_until:
            return False
        circuit.open_until = now + self._cooldown_s
        return True

    def is_open(self, deployment_id: str) -> bool:
        circuit = self._circuits.get(deployment_id)
        return circuit is not None and circuit.failures >= self._threshold

    def open_circuits(self) -> int:
        """How many deployments this process currently skips (for ``/readyz``)."""
        return sum(1 for circuit in self._circuits.values() if circuit.failures >= self._threshold)

    def record_success(self, deployment_id: str, latency_s: float) -> None:
        self._circuits.pop(deployment_id, None)
        previous = self._latency_s.get(deployment_id)
        self._latency_s[deployment_id] = (
            latency_s if previous is None else previous + self._alpha * (latency_s - previous)
        )

    def record_failure(self, deployment_id: str) -> None:
        circuit = self._circuits.setdefault(deployment_id, _Circuit())
        circuit.failures += 1
        if circuit.failures >= self._threshold:
            circuit.open_until = self._clock() + self._cooldown_s

    def latency_s(self, deployment_id: str) -> float:
        """Smoothed latency; 0 for a deployment never measured, so it gets tried."""
        return self._latency_s.get(deployment_id, 0.0)
