"""Batched audit log of routing decisions.

A request only appends its finished record to an in-memory buffer: no I/O and no row building
on the request path. Every ``flush_s`` seconds, or as soon as ``batch_max`` records wait, a
worker thread turns the buffer into rows and writes them with one bulk INSERT; the event loop
only hands the list over.

Nothing is lost quietly:
- a failed write keeps the records for the next flush (the database may be briefly away);
- a batch that keeps failing is retried row by row, so one bad row cannot block the log: rows
  that fail while others succeed are logged in full (they never hold prompt content) and
  dropped; when every row fails the database is down and all are kept;
- the buffer is bounded (``max_buffered``): past it the oldest records are logged and dropped;
- shutdown flushes what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

log = logging.getLogger("provenance_router.audit")

Row = Mapping[str, Any]


class Auditable(Protocol):
    def audit_row(self) -> Row: ...


class AuditWriter:
    def __init__(
        self,
        write: Callable[[Sequence[Row]], None],
        *,
        flush_s: float,
        batch_max: int,
        max_buffered: int = 200_000,
        isolate_after: int = 3,
    ) -> None:
        self._write = write  # blocking bulk insert; runs in a worker thread
        self._flush_s = flush_s
        self._batch_max = batch_max
        self._max_buffered = max_buffered
        self._isolate_after = isolate_after  # consecutive failed flushes before row by row
        self._pending: list[Auditable | Row] = []
        self._failures = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def record(self, item: Auditable | Row) -> None:
        """Queue a finished request (anything with ``audit_row()``) or a ready row."""
        self._pending.append(item)
        if len(self._pending) >= self._batch_max:
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
            batch, self._pending = self._pending, []
            if not batch:
                return 0
            written, kept = await asyncio.to_thread(self._build_and_write, batch)
            self._pending[:0] = kept
            self._bound()
            return written

    def _build_and_write(self, batch: list[Auditable | Row]) -> tuple[int, list[Row]]:
        rows: list[Row] = []
        for item in batch:
            if isinstance(item, Mapping):
                rows.append(item)
                continue
            try:
                rows.append(item.audit_row())
            except Exception:  # a bug in building one row must not stop the log
                log.exception("audit record %r could not be turned into a row, dropped", item)
        return self._write_rows(rows)

    def _write_rows(self, rows: list[Row]) -> tuple[int, list[Row]]:
        """Blocking: (rows written, rows to keep for the next flush)."""
        try:
            self._write(rows)
        except Exception:
            self._failures += 1
            log.exception("audit write of %d rows failed (attempt %d)", len(rows), self._failures)
            if self._failures < self._isolate_after:
                return 0, rows
            return self._write_one_by_one(rows)
        self._failures = 0
        return len(rows), []

    def _write_one_by_one(self, rows: list[Row]) -> tuple[int, list[Row]]:
        failed: list[Row] = []
        for row in rows:
            try:
                self._write([row])
            except Exception:
                failed.append(row)
        if len(failed) == len(rows):
            return 0, rows  # nothing goes in: the database is away, keep everything
        for row in failed:
            log.error("audit row rejected by the database, dropped: %r", dict(row))
        self._failures = 0
        return len(rows) - len(failed), []

    def _bound(self) -> None:
        excess = len(self._pending) - self._max_buffered
        if excess > 0:
            log.error("audit buffer full: dropping the %d oldest records", excess)
            del self._pending[:excess]

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._flush_s)
            self._wake.clear()
            await self.flush()
