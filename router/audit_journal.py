"""Strict mode's write-ahead journal: one append-only file set per gateway process.

    <dir>/<chain_id>.lock              held (flock) while the process lives; it appears
                                       already locked (created under another name), so a
                                       process replaying dead journals never takes a live one
    <dir>/<chain_id>.<segment>.jsonl   lines ``S{record}`` (started) and ``F{record}`` (final)

Each line is one ``write(2)`` of an open file: once it returns, the kernel holds the bytes,
so killing the process (``kill -9``, OOM) cannot lose them; it is not an ``fsync`` (a host
crash can, until the writer has stored the record in the database: see docs/audit.md).

When the writer takes a batch it rotates to a new segment, copying the "started" lines of
requests still running; once the batch is stored, the older segments are deleted. So a
segment on disk always holds every record not yet known to be stored, and a dead process's
segments are all a restart needs (:func:`dead_journals`; ``router.audit.replay_journals``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import orjson

from registry.audit_record import AuditRecord, decode, encode

log = logging.getLogger("provenance_router.audit")

STARTED, FINAL = b"S", b"F"


def _line(kind: bytes, record: AuditRecord) -> bytes:
    return kind + encode(record) + b"\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Journal:
    def __init__(self, directory: Path, chain_id: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.chain_id = chain_id
        self._lock = _locked_lock_file(directory, chain_id)
        self._segment = 0
        self._fd = self._open(self._segment)
        self._size = 0
        self._running: dict[str, bytes] = {}  # request id -> its "started" line

    def _path(self, segment: int) -> Path:
        return self.directory / f"{self.chain_id}.{segment:08d}.jsonl"

    def _open(self, segment: int) -> int:
        flags = os.O_CREAT | os.O_WRONLY | os.O_APPEND
        return os.open(self._path(segment), flags, 0o600)

    def started(self, record: AuditRecord) -> None:
        line = _line(STARTED, record)
        self._running[record.request_id] = line
        self._append(line)

    def finished(self, record: AuditRecord) -> None:
        self._running.pop(record.request_id, None)
        self._append(_line(FINAL, record))

    def _append(self, line: bytes) -> None:
        _write_all(self._fd, line)
        self._size += len(line)

    def rotate(self) -> list[Path]:
        """Start a new segment; returns the one closed (its records go into the batch being
        taken, except the started lines of running requests, copied to the new one)."""
        if self._size == 0:
            return []
        os.close(self._fd)
        closed = self._path(self._segment)
        self._segment += 1
        self._fd = self._open(self._segment)
        self._size = 0
        for line in self._running.values():
            self._append(line)
        return [closed]

    def delete(self, paths: list[Path]) -> None:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def close(self, *, clean: bool) -> None:
        """At stop: everything stored (``clean``) removes the journal; otherwise it stays for
        the next start to replay."""
        os.close(self._fd)
        if clean and not self._running:
            self.delete([self._path(self._segment), self.directory / f"{self.chain_id}.lock"])
        os.close(self._lock)


def _locked_lock_file(directory: Path, chain_id: str) -> int:
    """Create ``<chain_id>.lock`` already locked: it is locked under a name no one looks at,
    then renamed. Created and then locked under its own name, a process replaying at start
    (another worker of ``serve --workers``) could take it in between for a dead journal's and
    remove it, leaving this live journal without a lock file, so never replayed if its process
    were killed."""
    staged = directory / f"{chain_id}.lock-new"
    lock = os.open(staged, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(staged, directory / f"{chain_id}.lock")
    except BaseException:
        os.close(lock)
        staged.unlink(missing_ok=True)
        raise
    return lock


class DeadJournal:
    """The journal of a process that is gone, locked by us while we replay it."""

    def __init__(self, directory: Path, chain_id: str, lock: int) -> None:
        self.directory = directory
        self.chain_id = chain_id
        self._lock = lock

    def __enter__(self) -> DeadJournal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.close(self._lock)

    def segments(self) -> list[Path]:
        return sorted(self.directory.glob(f"{self.chain_id}.*.jsonl"))

    def records(self) -> list[AuditRecord]:
        """Every request journaled, in order: its final record, or for one that never
        finished, its started record marked ``interrupted``."""
        found: dict[str, AuditRecord] = {}
        finals: set[str] = set()
        for path in self.segments():
            for number, line in enumerate(path.read_bytes().splitlines(), 1):
                try:
                    record = decode(line[1:])
                except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
                    log.error("audit journal %s line %d is unreadable, skipped", path, number)
                    continue
                if line[:1] == FINAL:
                    found[record.request_id] = record
                    finals.add(record.request_id)
                elif record.request_id not in finals:
                    found[record.request_id] = record
        return list(found.values())

    def remove(self) -> None:
        for path in [*self.segments(), self.directory / f"{self.chain_id}.lock"]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def dead_journals(directory: Path) -> Iterator[DeadJournal]:
    """The journals in ``directory`` whose process is gone (their lock can be taken)."""
    if not directory.is_dir():
        return
    for lock_path in sorted(directory.glob("*.lock")):
        try:
            lock = os.open(lock_path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            continue
        yield DeadJournal(directory, lock_path.stem, lock)
