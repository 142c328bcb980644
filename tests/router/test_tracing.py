"""Issue 20: with ``OTEL_TRACES_EXPORTER=otlp`` and an endpoint, a real request through the
gateway (openai SDK, with a ``traceparent``) reaches an OTLP/HTTP receiver on loopback as one
span with the GenAI and ``provenance.*`` attributes, in the client's trace. Without those
settings, no exporter exists at all."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from router.settings import Settings
from router.tracing import record_tracer
from tests.fakes import FakeUpstream
from tests.router.conftest import RunningGateway, deployment, uid, wait_for

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Receiver:
    """An OTLP/HTTP traces endpoint: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.tokens: set[str | None] = set()  # the x-collector-token headers received
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.tokens.add(self.headers.get("x-collector-token"))
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        receiver.spans.extend(scope.spans)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


def attributes(span: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in span.attributes:
        value = item.value
        kind = value.WhichOneof("value")
        if kind == "array_value":
            values[item.key] = [v.string_value for v in value.array_value.values]
        else:
            values[item.key] = getattr(value, kind)
    return values


def span_of(gw: RunningGateway, receiver: Receiver, request_id: str) -> Any:
    """The span of ``request_id``, once the gateway's exporter has sent it."""
    tracer = gw.app.gateway.telemetry.tracer
    assert tracer is not None

    def find() -> Any:
        tracer.force_flush()
        found = [
            s for s in receiver.spans if attributes(s).get("provenance.request_id") == request_id
        ]
        return found[0] if found else None

    return wait_for(find, what=f"the span of {request_id} at the receiver")


def test_a_request_becomes_a_span_with_genai_and_provenance_attributes(
    gateway_factory: Callable[..., RunningGateway], receiver: Receiver
) -> None:
    gw = gateway_factory(
        otel_traces_exporter="otlp",
        otel_exporter_otlp_endpoint=receiver.url,
        otel_exporter_otlp_headers="x-collector-token=s3cret%20value",
    )
    with FakeUpstream() as up:
        dep, route = uid("traced"), uid("r-traced")
        with gw.write() as w:
            w.create("deployment", deployment(dep, up.base_url, upstream_model="alpha-7b"))
            w.create("route", {"name": route, "candidates": [dep]})
        raw = gw.openai().chat.completions.with_raw_response.create(
            model=route,
            messages=[{"role": "user", "content": "a secret prompt"}],
            extra_headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
        )
    request_id = raw.headers["x-request-id"]
    usage = raw.parse().usage
    assert usage is not None
    span = span_of(gw, receiver, request_id)
    values = attributes(span)
    assert span.name == f"chat {route}"
    assert span.trace_id.hex() == TRACE_ID and span.parent_span_id.hex() == PARENT_ID
    assert span.end_time_unix_nano > span.start_time_unix_nano
    assert values["gen_ai.operation.name"] == "chat"
    assert values["gen_ai.request.model"] == route
    assert values["gen_ai.response.model"] == "alpha-7b"
    assert values["gen_ai.provider.name"] == "openai"  # the adapter kind: no operator set
    assert values["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert values["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert values["provenance.deployment"] == dep
    assert values["provenance.model"] == "acme/alpha"
    assert values["provenance.developer_country"] == "US"
    assert values["provenance.operator_country"] == "unknown"
    assert values["provenance.policy_version"] == gw.policy_version
    assert values["provenance.status"] == "ok"
    assert values["http.response.status_code"] == 200
    assert "a secret prompt" not in str(span)
    assert "s3cret value" in receiver.tokens  # OTEL_EXPORTER_OTLP_HEADERS, URL-decoded
    assert gw.keys["apps"] not in str(span)


def test_a_denied_request_names_the_rules_that_denied(
    gateway_factory: Callable[..., RunningGateway], receiver: Receiver
) -> None:
    gw = gateway_factory(otel_traces_exporter="otlp", otel_exporter_otlp_endpoint=receiver.url)
    dep, route = uid("t") + "-denied", uid("r-denied")
    with gw.write() as w:
        w.create("deployment", deployment(dep, "http://127.0.0.1:9/v1"))
        w.create("route", {"name": route, "candidates": [dep]})
    with gw.http() as http:
        response = http.post("/v1/chat/completions", json={"model": route, "messages": []})
    assert response.status_code == 403
    request_id = response.headers["x-request-id"]
    values = attributes(span_of(gw, receiver, request_id))
    assert values["provenance.rule_ids"] == ["test-deny-denied-deployments"]
    assert values["provenance.status"] == "denied"
    assert values["error.type"] == "provenance_policy_denied"


def test_tracing_is_off_unless_the_otel_variables_switch_it_on() -> None:
    assert record_tracer(Settings(_env_file=None)) is None
    assert (
        record_tracer(Settings(_env_file=None, otel_exporter_otlp_endpoint="http://127.0.0.1:1"))
        is not None
    )
    off = Settings(
        _env_file=None, otel_exporter_otlp_endpoint="http://x", otel_traces_exporter="none"
    )
    assert record_tracer(off) is None
    assert (
        record_tracer(Settings(_env_file=None, otel_traces_exporter="otlp", otel_sdk_disabled=True))
        is None
    )
