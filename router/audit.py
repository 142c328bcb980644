"""Batched audit log of routing decisions.

A request only appends its RoutingDecision to an in-memory buffer (no I/O on the request path);
a background task writes the buffer with one bulk INSERT every ``flush_s`` seconds or as soon as
``batch_max`` rows wait. A failed write keeps the rows for the next flush, so nothing is lost
while the database is briefly away; shutdown flushes what is left. Never holds prompt or
completion content.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

log = logging.getLogger("provenance_router.audit")

Row = Mapping[str, Any]


class AuditWriter:
    def __init__(
        self,
        write: Callable[[Sequence[Row]], None],
        *,
        flush_s: float,
        batch_max: int,
    ) -> None:
        self._write = write  # blocking bulk insert; run in a worker thread
        self._flush_s = flush_s
        self._batch_max = batch_max
        self._rows: list[Row] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def record(self, row: Row) -> None:
        self._rows.append(row)
        if len(self._rows) >= self._batch_max:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()

    async def flush(self) -> int:
        """Write everything buffered so far; returns the number of rows written."""
        async with self._lock:
            rows, self._rows = self._rows, []
            if not rows:
                return 0
            try:
                await asyncio.to_thread(self._write, rows)
            except Exception:
                log.exception("audit write of %d rows failed; keeping them for retry", len(rows))
                self._rows[:0] = rows
                return 0
            return len(rows)

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._flush_s)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()
