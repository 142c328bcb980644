"""Issue 20, pure parts of the metrics: a batch's histogram added up per bucket equals one
``observe`` per value; an unknown model is folded into ``other``; the audit writer shows
each record to telemetry exactly once, also when a failed write keeps it for a retry."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from registry.audit_record import AuditRecord
from router.audit import AuditWriter
from router.metrics import LATENCY_BUCKETS_S, GatewayMetrics, model_label, observe_many
from tests.router.test_metrics import parse, value

# bucket boundaries themselves, between them, below the first and above the last
VALUES = [0.0, 0.005, 0.0051, 0.01, 0.3, 1.0, 119.9, 120.0, 500.0, 0.004]


def histogram() -> tuple[CollectorRegistry, Any]:
    registry = CollectorRegistry()
    metric = Histogram("h", "h", ("x",), buckets=LATENCY_BUCKETS_S, registry=registry)
    return registry, metric.labels("a")


def test_observe_many_equals_one_observe_per_value() -> None:
    one_by_one, child = histogram()
    for v in VALUES:
        child.observe(v)
    added_up, child = histogram()
    observe_many(child, VALUES)
    assert samples(added_up) == samples(one_by_one)


def samples(registry: CollectorRegistry) -> dict[Any, float]:
    """The registry's samples but the creation timestamps."""
    parsed = parse(generate_latest(registry).decode())
    return {key: v for key, v in parsed.items() if not key[0].endswith("_created")}


def test_a_model_the_registry_does_not_know_is_other() -> None:
    assert model_label("chat-default", {"chat-default"}) == "chat-default"
    assert model_label("Bearer sk-secret", {"chat-default"}) == "other"
    assert model_label(None, {"chat-default"}) == "none"


def record(n: int) -> AuditRecord:
    return AuditRecord(
        request_id=f"r{n}",
        created_at=datetime.now(UTC),
        status="ok",
        requested_model="chat",
        chosen_deployment="d",
        http_status=200,
        latency_ms=12.0,
        endpoint="chat/completions",
    )


class Observer:
    def __init__(self) -> None:
        self.metrics = GatewayMetrics()
        self.seen: list[str] = []
        self.writes: list[bool] = []

    def finished(self, records: Sequence[AuditRecord]) -> None:
        self.seen.extend(r.request_id for r in records)
        self.metrics.observe(records, {"chat"})

    def stored(self, seconds: float, *, ok: bool) -> None:
        self.writes.append(ok)
        self.metrics.stored(seconds, ok=ok)


def test_each_record_is_observed_once_even_when_its_write_is_retried() -> None:
    observer = Observer()
    failing = [True]

    def write(batch: list[Any], closing: bool) -> None:
        if failing[0]:
            raise OSError("database away")

    async def scenario() -> None:
        writer = AuditWriter(write, flush_s=3600, batch_max=1000, observer=observer)
        writer.record(record(1))
        writer.record(record(2))
        assert await writer.flush() == 0  # failed: kept
        writer.record(record(3))
        assert await writer.flush() == 0  # failed again, with a new one
        failing[0] = False
        assert await writer.flush() == 3

    asyncio.run(scenario())
    assert observer.seen == ["r1", "r2", "r3"]
    assert observer.writes == [False, False, True]
    samples = parse(generate_latest(observer.metrics.registry).decode())
    labels = {"operation": "chat", "model": "chat", "deployment": "d", "status": "ok"}
    assert value(samples, "provenance_router_requests_total", **labels, code="200") == 3
    assert value(samples, "provenance_router_audit_write_failures_total") == 2
