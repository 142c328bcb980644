"""Issue 20, pure parts of the metrics: a batch's histogram added up per bucket equals one
``observe`` per value; an unknown model is folded into ``other``; the audit writer shows
each record to telemetry exactly once, also when a failed write keeps it for a retry."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
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


MULTIPROCESS_CHECK = """
import sys
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from router.metrics import LATENCY_BUCKETS_S, observe_many

values = [float(v) for v in sys.argv[2].split(",")]
for name, many in (("one", False), ("many", True)):
    child = Histogram(name, name, buckets=LATENCY_BUCKETS_S, registry=None)
    if many:
        observe_many(child, values)
    else:
        for v in values:
            child.observe(v)
combined = CollectorRegistry()
MultiProcessCollector(combined, path=sys.argv[1])
print(generate_latest(combined).decode())
"""


def test_observe_many_in_multiprocess_mode(tmp_path: Path) -> None:
    """The same in prometheus_client's multiprocess mode (serve --workers), which must be
    chosen before prometheus_client is imported: in a child process."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    argv = [sys.executable, "-c", MULTIPROCESS_CHECK, str(tmp_path), ",".join(map(str, VALUES))]
    child = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    parsed = parse(child.stdout)
    one = {(n[3:], labels): v for (n, labels), v in parsed.items() if n.startswith("one")}
    many = {(n[4:], labels): v for (n, labels), v in parsed.items() if n.startswith("many")}
    assert one == many and one[("_count", frozenset())] == len(VALUES)
