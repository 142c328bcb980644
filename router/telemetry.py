"""A gateway process's metrics and traces, fed from one place: the audit writer's thread
(router.audit ``Observer``), which sees every finished request's record. The request path
itself only captures the client's ``traceparent``, and only when tracing is on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from registry.audit_record import AuditRecord
from router.metrics import GatewayMetrics
from router.table import RoutingTable

if TYPE_CHECKING:  # imported only when tracing is on (router.gateway)
    from router.tracing import RecordTracer

log = logging.getLogger("provenance_router.telemetry")


class Telemetry:
    """The audit writer's observer: counts each record and, when tracing is on, spans it.
    ``table`` gives the routing table now (for the names the registry knows and the facts
    of a deployment); a failure here is logged, never passed on to the writer."""

    def __init__(
        self,
        metrics: GatewayMetrics | None,
        tracer: RecordTracer | None,
        table: Callable[[], RoutingTable | None],
    ) -> None:
        self.metrics = metrics
        self.tracer = tracer
        self._table = table

    def finished(self, records: Sequence[AuditRecord]) -> None:
        table = self._table()
        try:
            if self.metrics is not None:
                self.metrics.observe(records, table.candidates if table is not None else ())
            if self.tracer is not None:
                self.tracer.export(records, table)
        except Exception:
            log.exception("metrics or traces of %d requests failed", len(records))

    def stored(self, seconds: float, *, ok: bool) -> None:
        if self.metrics is not None:
            self.metrics.stored(seconds, ok=ok)

    def shutdown(self) -> None:
        """Export the spans still buffered (at the gateway's stop, after the last flush)."""
        if self.tracer is not None:
            self.tracer.shutdown()
