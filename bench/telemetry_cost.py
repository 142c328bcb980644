"""Per-request cost of metrics and traces (router.telemetry), timed with ``timeit``.

Metrics and spans are derived from the audit records in the audit writer's thread, a batch
at a time; the request path itself only pays for tracing when it is on (the client's
``traceparent``). Figures, in microseconds per request:

    metrics            GatewayMetrics.observe over a batch of typical records (200 OK, one
                       attempt, tokens, a cached evaluation; 1 in 10 denied, 1 in 20 failed
                       upstream), divided by the batch size: what each request costs the
                       writer's thread (it shares the GIL with the event loop)
    metrics_multiproc  the same in prometheus_client's multiprocess mode (serve --workers),
                       measured in a child process with PROMETHEUS_MULTIPROC_DIR set
    tracing_off        the request path's check with tracing off (one attribute test)
    traceparent        the request path's header scan with tracing on
    tracing_on         RecordTracer.export per record (span built, attributes, ended, queued
                       to the batch processor; export itself runs in the SDK's thread)

Each figure is the median of 7 ``timeit`` repeats.

    .venv/bin/python bench/telemetry_cost.py [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from registry.audit_record import AuditRecord, Evaluation  # noqa: E402

BATCH = 500
ROUTE, DEPLOYMENT = "chat-default", "llama-3-70b-eu-west-1"
HEADERS = [
    (b"host", b"gateway.internal:8000"),
    (b"accept", b"application/json"),
    (b"content-type", b"application/json"),
    (b"user-agent", b"OpenAI/Python 2.54.0"),
    (b"authorization", b"Bearer pr-0123456789abcdef"),
    (b"content-length", b"512"),
    (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
]


def records() -> list[AuditRecord]:
    """A batch as a busy gateway's writer sees it."""
    allowed = Evaluation.of(
        [
            {"deployment": DEPLOYMENT, "allowed": True, "rule_ids": ["eu-only"], "reasons": []},
            {"deployment": "qwen-cn", "allowed": False, "rule_ids": ["no-cn"], "reasons": []},
        ]
    )
    base = AuditRecord(
        request_id="req_54152d9f4c6d485a000000000001",
        created_at=datetime.now(UTC),
        status="ok",
        tenant_id="product-x",
        key_id="product-x-key",
        requested_model=ROUTE,
        route=ROUTE,
        action="infer",
        evaluation=allowed,
        chosen_deployment=DEPLOYMENT,
        attempts=((DEPLOYMENT, "ok", 41.2),),
        policy_version=12,
        registry_version=4711,
        http_status=200,
        latency_ms=43.7,
        prompt_tokens=25,
        completion_tokens=120,
        total_tokens=145,
        endpoint="chat/completions",
        traceparent=HEADERS[-1][1].decode(),
    )
    denied = base._replace(status="denied", http_status=403, chosen_deployment=None, attempts=())
    failed = base._replace(
        status="error",
        http_status=502,
        chosen_deployment=None,
        attempts=((DEPLOYMENT, "http_503", 3.0),),
    )
    return [denied if i % 10 == 0 else failed if i % 20 == 1 else base for i in range(BATCH)]


def table() -> Any:
    """What the tracer reads of a routing table (a stand-in: no database needed)."""
    from registry.snapshot import DeploymentSnap

    deployment = DeploymentSnap(
        id=DEPLOYMENT, model_id="meta/llama-3-70b", upstream_model="llama-3-70b", operator_id="acme"
    )
    facts = SimpleNamespace(attrs={"developer_country": "US", "operator_country": "DE"})
    return SimpleNamespace(
        candidates={ROUTE: ()},
        snapshot=SimpleNamespace(deployments={DEPLOYMENT: deployment}),
        engine=SimpleNamespace(entities=SimpleNamespace(deployments={DEPLOYMENT: facts})),
    )


def per_request_us(fn: Any, per_call: int, number: int, repeat: int = 7) -> float:
    times = timeit.repeat(fn, number=number, repeat=repeat)
    return round(statistics.median(times) / number / per_call * 1e6, 3)


def metrics_us() -> float:
    from router.metrics import GatewayMetrics

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    metrics = GatewayMetrics(Path(directory) if directory else None)
    batch, known = records(), {ROUTE}
    return per_request_us(lambda: metrics.observe(batch, known), BATCH, number=20)


def multiproc_metrics_us() -> float:
    """metrics_us() in a child process whose prometheus_client runs in multiprocess mode."""
    with tempfile.TemporaryDirectory() as directory:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
        child = subprocess.run(
            [sys.executable, __file__, "--metrics-only"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    return float(child.stdout)


def tracing_us(batch: Sequence[AuditRecord]) -> float:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    from router.tracing import RecordTracer

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=1_000_000))
    tracer, routing = RecordTracer(provider), table()
    try:
        return per_request_us(lambda: tracer.export(batch, routing), len(batch), number=4)
    finally:
        provider.shutdown()


def measure() -> dict[str, float]:
    from router.openai.serving import traceparent

    gateway = SimpleNamespace(tracing=False)

    def tracing_off() -> None:
        if gateway.tracing:
            traceparent(HEADERS)

    return {
        "metrics_us": metrics_us(),
        "metrics_multiproc_us": multiproc_metrics_us(),
        "tracing_off_us": per_request_us(tracing_off, 1, number=200_000),
        "traceparent_us": per_request_us(lambda: traceparent(HEADERS), 1, number=200_000),
        "tracing_on_us": tracing_us(records()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--metrics-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.metrics_only:
        print(metrics_us())
        return
    result = measure()
    if args.json:
        print(json.dumps(result))
        return
    for name, value in result.items():
        print(f"{name:>22}  {value}")


if __name__ == "__main__":
    main()
