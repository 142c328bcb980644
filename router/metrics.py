"""Prometheus metrics (``/metrics``), derived from the audit records, not from the hot path.

Every ``/v1`` request already ends in one :class:`~registry.audit_record.AuditRecord`; the
audit writer hands each new batch of them to :meth:`GatewayMetrics.observe` in its worker
thread, so a request pays nothing for metrics and counters lag by at most one audit flush
(``audit_flush_s``). Identical label sets in a batch are counted once (one ``inc(n)``).

Labels are bounded: ``model`` is a name the registry knows (a route or model id) or ``other``
(clients may send any string), ``deployment`` and ``rule`` are registry and policy ids,
``operation``/``status``/``code``/``kind`` come from small fixed sets. No tenant, key, prompt or
free text ever becomes a label.

``serve --workers N``: the supervisor gives the workers one directory
(``PROMETHEUS_MULTIPROC_DIR``), prometheus_client's multiprocess mode keeps each process's
values in files there, and a scrape (served by any worker) adds them up. Gauges say how they
combine across live workers (``multiprocess_mode``).
"""

from __future__ import annotations

import hmac
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Container, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import (
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import Counter as PromCounter
from prometheus_client.multiprocess import MultiProcessCollector

from registry.audit_record import AuditRecord, Evaluation
from router.errors import INCORRECT_API_KEY, MISSING_API_KEY, AuthenticationFailed

PREFIX = "provenance_router"
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
OTHER = "other"  # a requested model the registry does not know
NONE = "none"  # no model, deployment or code (e.g. a request refused before routing)
# gen_ai.operation.name per /v1 endpoint (router.openai.protocol.OPERATIONS, plus listings)
OPERATION_NAMES = {
    "chat/completions": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "models": "models",
}
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
WRITE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
_EVALUATIONS_MAX = 4096  # decoded evaluations kept (one per distinct verdict set)

RequestLabels = tuple[str, str, str, str]  # operation, model, deployment, status
RawLabels = tuple[str | None, str | None, str | None, str]  # endpoint, model, deployment, status


def operation_name(endpoint: str | None) -> str:
    return OPERATION_NAMES.get(endpoint or "", "unknown")


def model_label(requested: str | None, known: Container[str]) -> str:
    """The requested model as a label: a name the registry knows, else ``other``."""
    if requested is None:
        return NONE
    return requested if requested in known else OTHER


def decoded(evaluation: Evaluation) -> list[dict[str, Any]]:
    """An evaluation's candidates: ``{"deployment", "allowed", "rule_ids", "reasons"}``."""
    candidates: list[dict[str, Any]] = orjson.loads(orjson.dumps(evaluation.encoded))
    return candidates


def verdicts(evaluation: Evaluation) -> tuple[tuple[str, str], ...]:
    """(rule id, verdict) of every candidate in an evaluation; ``default`` for a candidate
    no rule decided (Cedar's deny by default)."""
    pairs: list[tuple[str, str]] = []
    for candidate in decoded(evaluation):
        verdict = "allow" if candidate["allowed"] else "deny"
        pairs.extend((rule, verdict) for rule in candidate["rule_ids"] or ("default",))
    return tuple(pairs)


@dataclass(frozen=True, slots=True)
class GatewayState:
    """What the gauges show, read from the gateway by its refresh task."""

    circuits: dict[str, bool]  # deployment id -> circuit open
    audit_queue: int
    registry_version: int | None
    policy_version: int | None
    snapshot_age_s: float | None


class GatewayMetrics:
    """This process's metrics, in a registry of its own (several gateways can share a test
    process); in multiprocess mode their values live in ``multiproc_dir``."""

    def __init__(self, multiproc_dir: Path | None = None) -> None:
        self.multiproc_dir = multiproc_dir
        self.registry = registry = CollectorRegistry(auto_describe=True)
        request_labels = ("operation", "model", "deployment", "status")
        self.requests = PromCounter(
            f"{PREFIX}_requests",
            "Requests served, by operation, requested model, deployment, outcome, HTTP status",
            (*request_labels, "code"),
            registry=registry,
        )
        self.latency = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time from a request's arrival to its audit record (the response's last byte)",
            request_labels,
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.tokens = PromCounter(
            f"{PREFIX}_tokens",
            "Tokens reported by backends, by requested model, deployment and direction",
            ("model", "deployment", "direction"),
            registry=registry,
        )
        self.decisions = PromCounter(
            f"{PREFIX}_policy_decisions",
            "Policy verdicts on candidate deployments, by deciding rule id",
            ("rule", "verdict"),
            registry=registry,
        )
        self.upstream_errors = PromCounter(
            f"{PREFIX}_upstream_errors",
            "Failed attempts to call a deployment, by kind (connect_error, timeout, http_503...)",
            ("deployment", "kind"),
            registry=registry,
        )
        self.budget_soft = PromCounter(
            f"{PREFIX}_budget_soft_exceeded",
            "Budgets past their soft threshold (once per key or tenant, period and process)",
            ("subject",),  # key or tenant: never its id
            registry=registry,
        )
        self.audit_write = Histogram(
            f"{PREFIX}_audit_write_seconds",
            "Time to store one batch of audit records",
            buckets=WRITE_BUCKETS_S,
            registry=registry,
        )
        self.audit_write_failures = PromCounter(
            f"{PREFIX}_audit_write_failures",
            "Audit batches the database refused (kept and retried)",
            registry=registry,
        )
        self.circuit_open = Gauge(
            f"{PREFIX}_circuit_open",
            "1 when a deployment's circuit breaker is open in any live worker",
            ("deployment",),
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.audit_queue = Gauge(
            f"{PREFIX}_audit_queue_depth",
            "Audit records waiting to be stored (all live workers)",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.registry_version = Gauge(
            f"{PREFIX}_snapshot_registry_version",
            "Registry version served (the lowest among live workers)",
            multiprocess_mode="livemin",
            registry=registry,
        )
        self.policy_version = Gauge(
            f"{PREFIX}_snapshot_policy_version",
            "Policy version served (the lowest among live workers)",
            multiprocess_mode="livemin",
            registry=registry,
        )
        self.snapshot_age = Gauge(
            f"{PREFIX}_snapshot_age_seconds",
            "Seconds since the served snapshot was last confirmed current (the oldest worker)",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self._children: dict[tuple[str, ...], Any] = {}
        self._verdicts: dict[str, Counter[tuple[str, str]]] = {}

    # --- per batch of audit records (the audit writer's thread) ------------------------------

    def observe(self, records: Sequence[AuditRecord], known_models: Container[str]) -> None:
        """Count a batch of finished requests: first by their raw values (cheap tuples),
        then once per distinct label set."""
        requests: Counter[tuple[RawLabels, int | None]] = Counter()
        latencies: defaultdict[RawLabels, list[float]] = defaultdict(list)
        tokens: Counter[tuple[str | None, str | None, str]] = Counter()
        evaluations: Counter[str] = Counter()
        errors: Counter[tuple[str, str]] = Counter()
        if len(self._verdicts) >= _EVALUATIONS_MAX:  # bounded (a batch adds at most its size)
            self._verdicts.clear()
        for record in records:
            raw = (record.endpoint, record.requested_model, record.chosen_deployment, record.status)
            requests[raw, record.http_status] += 1
            if record.latency_ms is not None:
                latencies[raw].append(record.latency_ms / 1000)
            if record.prompt_tokens:
                tokens[raw[1], raw[2], "input"] += record.prompt_tokens
            if record.completion_tokens:
                tokens[raw[1], raw[2], "output"] += record.completion_tokens
            if record.evaluation is not None:
                evaluations[self._remember(record.evaluation)] += 1
            for deployment, outcome, _ in record.attempts:
                if outcome != "ok":
                    errors[deployment, outcome] += 1
        for (raw, status), count in requests.items():
            labels = _labels(raw, known_models)
            self.requests.labels(*labels, str(status or NONE)).inc(count)
        for raw, seconds in latencies.items():
            observe_many(self._latency(_labels(raw, known_models)), seconds)
        for (model, served_by, direction), count in tokens.items():
            model_name = model_label(model, known_models)
            self.tokens.labels(model_name, served_by or NONE, direction).inc(count)
        for (deployment, kind), count in errors.items():
            self.upstream_errors.labels(deployment, kind).inc(count)
        for evaluation_id, count in evaluations.items():
            for (rule, verdict), times in self._verdicts[evaluation_id].items():
                self.decisions.labels(rule, verdict).inc(times * count)

    def _latency(self, labels: RequestLabels) -> Any:
        """The histogram child of these labels (``labels()`` costs a lock and a tuple)."""
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self.latency.labels(*labels)
        return child

    def _remember(self, evaluation: Evaluation) -> str:
        """The evaluation's id, its verdict counts decoded once per distinct evaluation."""
        if evaluation.id not in self._verdicts:
            self._verdicts[evaluation.id] = Counter(verdicts(evaluation))
        return evaluation.id

    def stored(self, seconds: float, *, ok: bool) -> None:
        """One audit batch write took ``seconds`` (failed when not ``ok``)."""
        self.audit_write.observe(seconds)
        if not ok:
            self.audit_write_failures.inc()

    # --- gauges (the gateway's refresh task, and each scrape) --------------------------------

    def refresh(self, state: GatewayState) -> None:
        for deployment, is_open in state.circuits.items():
            self.circuit_open.labels(deployment).set(1 if is_open else 0)
        self.audit_queue.set(state.audit_queue)
        if state.registry_version is not None:
            self.registry_version.set(state.registry_version)
        if state.policy_version is not None:
            self.policy_version.set(state.policy_version)
        if state.snapshot_age_s is not None:
            self.snapshot_age.set(state.snapshot_age_s)

    # --- scrape -----------------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition: this process's registry, or every worker's values."""
        if self.multiproc_dir is None:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        MultiProcessCollector(combined, path=str(self.multiproc_dir))  # type: ignore[no-untyped-call]
        return generate_latest(combined)


def scrape(
    metrics: GatewayMetrics, state: GatewayState, token: str | None, authorization: bytes | None
) -> tuple[int, bytes, bytes]:
    """(status, content type, body) of a ``GET /metrics``: this process's gauges refreshed,
    then every value; a 401 in the OpenAI envelope when a token is set and not presented."""
    if token is not None and not _presented(token, authorization):
        message = MISSING_API_KEY if not authorization else INCORRECT_API_KEY
        return 401, b"application/json", AuthenticationFailed(message).body()
    metrics.refresh(state)
    return 200, CONTENT_TYPE, metrics.render()


def _presented(token: str, authorization: bytes | None) -> bool:
    scheme, _, presented = (authorization or b"").strip().partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(
        presented.strip(), token.encode("utf-8")
    )


def observe_many(histogram: Any, values: Sequence[float]) -> None:
    """``histogram.observe`` for each value, added up per bucket first: one increment per
    bucket and one of the sum instead of a lock, a bucket search and two increments per
    value (measured 40x cheaper, bench/telemetry_cost.py). This uses the pinned
    prometheus_client's child layout (``_upper_bounds``, ``_buckets``, ``_sum``, unchanged
    since 2015) and falls back to ``observe`` if a version lacks it."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets, total = getattr(histogram, "_buckets", None), getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None:
        for value in values:
            histogram.observe(value)
        return
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect_left(bounds, value)] += 1  # the first bucket whose le >= value
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)
    total.inc(sum(values))


def _labels(raw: RawLabels, known_models: Container[str]) -> RequestLabels:
    endpoint, model, deployment, status = raw
    return operation_name(endpoint), model_label(model, known_models), deployment or NONE, status
