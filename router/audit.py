"""The audit writer: the only code that encodes, chains, signs and stores routing decisions.

The request path hands over a finished :class:`~registry.audit_record.AuditRecord` (plain
values) with :meth:`AuditWriter.record`; that appends it to an in-memory list and, in
``strict`` mode, to the journal (:mod:`router.audit_journal`). Every ``flush_s`` seconds, or
as soon as ``batch_max`` records wait, a flush hands the list to a worker thread, which
sanitizes, chains and stores it (:class:`ChainedStore`) in one transaction.

Durability (docs/audit.md):
- ``default``: a record is in the database at most ``flush_s`` + one flush after its
  response; a ``kill -9`` loses what was still buffered (at most that window's records).
- ``strict``: before the last byte of a response, its record is in the journal, a file the
  kernel holds once ``write(2)`` returns, so a killed process cannot lose it; a request also
  journals a "started" record before it calls a backend. The next start stores whatever a
  dead process journaled but had not stored (requests that never finished as
  ``interrupted``), continuing that process's chain.

Nothing is lost quietly:
- at most one flush runs at a time; ``stop()`` lets a running flush finish, then flushes the
  rest (and writes the chain's ``close`` checkpoint);
- a failed write keeps the records for the next flush (the database may be briefly away);
  rows the database refuses for their content are stored escaped and flagged, in the same
  flush (registry.audit_store), never dropped and never holding the others back;
- the buffer is bounded (``max_buffered``): past it the oldest records are dropped with an
  error naming their count (in strict mode they stay in the journal for the next start);
- records that cannot be stored at stop are logged with their count.

Metrics and traces (router.telemetry) are derived from the records here too, off the event
loop: each flush first shows its new records to the ``observer`` (once each, also when the
write then fails and they are retried), then reports how long the write took.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine

from registry.audit_archive import write_archive
from registry.audit_record import AuditRecord, ChainHead
from registry.audit_store import (
    Sign,
    boundaries,
    chain_head,
    prune,
    store_records,
    stored_request_ids,
)
from router.audit_journal import Journal, dead_journals
from router.signing import Signer

log = logging.getLogger("provenance_router.audit")

Write = Callable[[list[Any], bool], None]  # (records, closing) -> None; raises on failure


class Observer(Protocol):
    """What the writer tells telemetry (called in its worker thread; must not raise)."""

    def finished(self, records: Sequence[AuditRecord]) -> None: ...

    def stored(self, seconds: float, *, ok: bool) -> None: ...


class AuditWriter:
    def __init__(
        self,
        write: Write,
        *,
        flush_s: float,
        batch_max: int,
        max_buffered: int = 200_000,
        journal: Journal | None = None,
        observer: Observer | None = None,
    ) -> None:
        self._write = write  # blocking; runs in a worker thread
        self._observer = observer
        self._flush_s = flush_s
        self._batch_max = batch_max
        self._max_buffered = max_buffered
        self.journal = journal  # strict mode's write-ahead file, or None
        self._pending: list[AuditRecord] = []
        self._observed = 0  # leading pending records a failed flush kept (observed already)
        self._retired: list[Path] = []  # journal segments whose records are being stored
        self._dropped = False  # records left memory unstored: the journal must stay whole
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.write_failing = False  # the last write failed (its records wait for the next)

    @property
    def healthy(self) -> bool:
        """Running, and not dropping records: a database briefly away is no failure yet (the
        records wait in the buffer), a full buffer is."""
        running = self._task is not None and not self._task.done()
        return running and len(self._pending) < self._max_buffered

    @property
    def pending(self) -> int:
        """Records waiting to be stored (/readyz, the audit queue gauge)."""
        return len(self._pending)

    def begin(self, record: AuditRecord) -> None:
        """Strict mode: journal that a request is about to call a backend."""
        if self.journal is not None:
            self.journal.started(record)

    def record(self, record: AuditRecord) -> None:
        """Queue a finished request's record; in strict mode, journal it before returning
        (an error writing the journal propagates: the response must not complete)."""
        self._pending.append(record)
        if len(self._pending) >= self._batch_max:
            self._wake.set()
        if self.journal is not None:
            self.journal.finished(record)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-writer")

    async def stop(self) -> None:
        """Let a running flush finish (never cancelled mid-write), then store the rest."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.flush(closing=True)
        if self._pending:
            where = "kept in the journal for the next start" if self.journal else "lost"
            log.error("%d audit records could not be stored at stop: %s", len(self._pending), where)
        if self.journal is not None:
            self.journal.close(clean=not self._pending and not self._dropped)

    async def flush(self, *, closing: bool = False) -> int:
        """Store everything buffered so far; returns the number of records stored."""
        async with self._lock:
            batch, self._pending = self._pending, []
            if self.journal is not None:
                self._retired.extend(self.journal.rotate())
            if not batch and not closing:
                return 0
            retired, self._retired = self._retired, []
            fresh, self._observed = batch[self._observed :], 0
            try:
                await asyncio.to_thread(self._store, batch, closing, retired, fresh)
            except Exception:
                log.exception("audit write of %d records failed; kept for the next try", len(batch))
                self._pending[:0] = batch
                self._retired[:0] = retired
                self._observed = len(batch)
                self._bound()
                self.write_failing = True
                return 0
            self.write_failing = False
            return len(batch)

    def _store(
        self,
        batch: list[AuditRecord],
        closing: bool,
        retired: list[Path],
        fresh: list[AuditRecord],
    ) -> None:
        if self._observer is not None and fresh:
            self._observer.finished(fresh)
        started = time.perf_counter()
        try:
            self._write(batch, closing)
        except Exception:
            self._report_write(started, ok=False)
            raise
        self._report_write(started, ok=True)
        if self.journal is not None and not self._dropped:
            self.journal.delete(retired)

    def _report_write(self, started: float, *, ok: bool) -> None:
        if self._observer is not None:
            self._observer.stored(time.perf_counter() - started, ok=ok)

    def _bound(self) -> None:
        excess = len(self._pending) - self._max_buffered
        if excess > 0:
            # strict: from now on no journal segment is deleted, so the next start stores them
            where = "kept in the journal for the next start" if self.journal else "lost"
            log.error("audit buffer full: dropped the %d oldest records (%s)", excess, where)
            del self._pending[:excess]
            self._observed = max(0, self._observed - excess)
            self._dropped = True

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._flush_s)
            self._wake.clear()
            if not self._stopping:
                await self.flush()


class ChainedStore:
    """The writer's ``write``: appends batches to this process's chain in the database and
    signs a checkpoint of its head every ``checkpoint_every`` rows or ``checkpoint_s``
    seconds, and at a graceful stop."""

    def __init__(
        self, engine: Engine, *, chain_id: str, checkpoint_every: int, checkpoint_s: float
    ) -> None:
        self.engine = engine
        self.head = ChainHead(chain_id)
        self.signer: Signer | None = None
        self._every = checkpoint_every
        self._interval_s = checkpoint_s
        self._signed_seq = 0
        self._signed_at = time.monotonic()

    def __call__(self, batch: list[AuditRecord], closing: bool) -> None:
        if not batch and (not closing or self.head.seq == self._signed_seq):
            return
        kind = "close" if closing else ("periodic" if self._due(len(batch)) else None)
        stored = store_records(
            engine=self.engine, head=self.head, records=batch, checkpoint=kind, sign=self.sign
        )
        self.head = stored.head
        if kind is not None:
            self._signed_seq, self._signed_at = self.head.seq, time.monotonic()
        if stored.sanitized:
            log.warning("%d audit records stored with escaped or cut values", stored.sanitized)

    def _due(self, count: int) -> bool:
        unsigned = self.head.seq + count - self._signed_seq
        return unsigned >= self._every or time.monotonic() - self._signed_at >= self._interval_s

    @property
    def sign(self) -> Sign | None:
        signer = self.signer
        if signer is None:
            return None
        return lambda message: (signer.key_id, signer.sign(message))


def replay_journals(directory: Path, engine: Engine, sign: Sign | None) -> int:
    """Store what dead processes journaled but never stored (strict mode), each continuing
    its own chain; requests that started and never finished are stored as ``interrupted``.
    Journals of live processes (their lock is held) are left alone. Returns records stored."""
    total = 0
    for dead in dead_journals(directory):
        with dead:
            records = dead.records()
            ids = [r.request_id for r in records]
            stored = stored_request_ids(engine, dead.chain_id, ids)
            missing = [r for r in records if r.request_id not in stored]
            if missing:
                head = chain_head(engine, dead.chain_id)
                store_records(
                    engine=engine, head=head, records=missing, checkpoint="replay", sign=sign
                )
            dead.remove()
            total += len(missing)
            log.warning(
                "audit journal of %s: %d of %d records were not stored; stored them now",
                dead.chain_id,
                len(missing),
                len(records),
            )
    return total


def store_batch(store: ChainedStore) -> Write:
    """The writer's write function for a chained store (typed for :class:`AuditWriter`)."""

    def write(batch: Sequence[AuditRecord], closing: bool) -> None:
        store(list(batch), closing)

    return write


def enforce_retention(
    engine: Engine, *, days: int, archive_dir: Path | None, sign: Sign | None
) -> tuple[int, Path | None]:
    """Prune the records older than ``days`` (archiving them first into ``archive_dir``);
    returns (records deleted, archive written)."""
    before = datetime.now(UTC) - timedelta(days=days)
    marks = boundaries(engine=engine, before=before, sign=sign)
    archive = None
    if archive_dir is not None:
        archive_dir.mkdir(parents=True, exist_ok=True)
        archive = archive_dir / f"audit-before-{before:%Y%m%dT%H%M%SZ}.jsonl"
        if write_archive(engine=engine, before=before, path=archive, boundaries=marks) == 0:
            archive.unlink()
            return 0, None
    rows = prune(engine=engine, before=before, marks=marks).rows
    return rows, archive
