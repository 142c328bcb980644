"""OpenTelemetry traces: one span per ``/v1`` request, built after the fact from its audit
record, in the audit writer's thread (the request path pays one branch, for the client's
``traceparent``, and only when tracing is on).

A span starts when the request arrived and ends when its record was made (the record's
``created_at`` minus and at its ``latency_ms``); its parent is the client's ``traceparent``
when it sent one. Attributes follow the OpenTelemetry GenAI semantic conventions, plus the
routing decision under ``provenance.*`` (docs/observability.md lists them). Never a prompt,
completion, key or tenant secret.

Off by default; :func:`record_tracer` builds the exporter from the ``OTEL_*`` settings
(router.settings) when they switch tracing on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from registry.audit_record import AuditRecord, clean_text
from router.metrics import NONE, decoded, operation_name
from router.settings import Settings
from router.table import RoutingTable

Attributes = dict[str, str | int | Sequence[str]]
_PROPAGATOR = TraceContextTextMapPropagator()


class RecordTracer:
    """Turns audit records into spans and hands them to a span processor."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("provenance-router")

    def export(self, records: Sequence[AuditRecord], table: RoutingTable | None) -> None:
        for record in records:
            self._span(record, table)

    def _span(self, record: AuditRecord, table: RoutingTable | None) -> None:
        end_ns = int(record.created_at.timestamp() * 1e9)
        start_ns = end_ns - int((record.latency_ms or 0.0) * 1e6)
        operation = operation_name(record.endpoint)
        parent = (
            _PROPAGATOR.extract({"traceparent": record.traceparent}) if record.traceparent else None
        )
        span = self._tracer.start_span(
            f"{operation} {_request_model(record, table)}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes=span_attributes(record, table),
            start_time=start_ns,
        )
        if record.status != "ok":
            span.set_status(Status(StatusCode.ERROR, record.error_code or record.status))
        span.end(end_time=end_ns)

    def force_flush(self) -> bool:
        return self.provider.force_flush()

    def shutdown(self) -> None:
        self.provider.shutdown()


def span_attributes(record: AuditRecord, table: RoutingTable | None) -> Attributes:
    """A request's span attributes: GenAI conventions and the provenance decision."""
    attributes: Attributes = {
        "gen_ai.operation.name": operation_name(record.endpoint),
        "provenance.request_id": record.request_id,
        "provenance.status": record.status,
        "provenance.policy_version": record.policy_version or 0,
        "provenance.registry_version": record.registry_version or 0,
    }
    if record.requested_model is not None:
        attributes["gen_ai.request.model"] = clean_text(record.requested_model)
    if record.http_status is not None:
        attributes["http.response.status_code"] = record.http_status
    if record.error_code is not None:
        attributes["error.type"] = record.error_code
    if record.prompt_tokens is not None:
        attributes["gen_ai.usage.input_tokens"] = record.prompt_tokens
    if record.completion_tokens is not None:
        attributes["gen_ai.usage.output_tokens"] = record.completion_tokens
    rules = deciding_rules(record)
    if rules:
        attributes["provenance.rule_ids"] = rules
    if record.chosen_deployment is not None and table is not None:
        attributes.update(deployment_attributes(record.chosen_deployment, table))
    return attributes


def deployment_attributes(deployment_id: str, table: RoutingTable) -> Attributes:
    """Who served it: the provider (the deployment's operator organization, else its adapter
    kind), the upstream model, and the provenance facts the policy saw."""
    attributes: Attributes = {"provenance.deployment": deployment_id}
    deployment = table.snapshot.deployments.get(deployment_id)
    if deployment is None:  # the registry changed since the request
        return attributes
    facts = table.engine.entities.deployments.get(deployment_id)
    attrs: dict[str, Any] = dict(facts.attrs) if facts is not None else {}
    attributes["gen_ai.provider.name"] = deployment.operator_id or deployment.adapter
    attributes["gen_ai.response.model"] = deployment.upstream_model or deployment.model_id
    attributes["provenance.model"] = deployment.model_id
    for fact in ("developer_country", "operator_country"):
        attributes[f"provenance.{fact}"] = str(attrs.get(fact, "unknown"))
    return attributes


def deciding_rules(record: AuditRecord) -> list[str]:
    """The rule ids that decided: the chosen deployment's, or every candidate's when none
    was chosen (a denial names the rules that denied)."""
    if record.evaluation is None:
        return []
    rules: list[str] = []
    for candidate in decoded(record.evaluation):
        if record.chosen_deployment in (None, candidate["deployment"]):
            rules.extend(r for r in candidate["rule_ids"] if r not in rules)
    return rules


def _request_model(record: AuditRecord, table: RoutingTable | None) -> str:
    """The span name's model: a name the registry knows, never free text."""
    model = record.requested_model
    if model is None:
        return NONE
    return model if table is not None and model in table.candidates else "other"


def record_tracer(settings: Settings, exporter: SpanExporter | None = None) -> RecordTracer | None:
    """The tracer the settings ask for (None: tracing off). ``exporter`` replaces the OTLP
    exporter (tests)."""
    if exporter is None:
        if not settings.tracing_enabled:
            return None
        exporter = _otlp_exporter(settings)
    provider = TracerProvider(resource=Resource({"service.name": settings.otel_service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return RecordTracer(provider)


def _otlp_exporter(settings: Settings) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    headers = settings.otel_exporter_otlp_headers
    return OTLPSpanExporter(
        endpoint=settings.otlp_traces_url,
        headers=_parse_headers(headers.get_secret_value()) if headers else None,
    )


def _parse_headers(text: str) -> dict[str, str]:
    """``OTEL_EXPORTER_OTLP_HEADERS``: ``key1=value1,key2=value2`` (values URL-encoded)."""
    pairs = (item.split("=", 1) for item in text.split(",") if "=" in item)
    return {unquote(k.strip()): unquote(v.strip()) for k, v in pairs}
