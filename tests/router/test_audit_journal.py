"""Strict mode's journal directory, shared by the workers of ``serve --workers N``: each
process has its own files (named by its chain id), and a process replaying dead journals at
start never takes a live sibling's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from router import audit_journal
from router.audit_journal import Journal, dead_journals


def test_live_journals_are_never_dead(tmp_path: Path) -> None:
    one, two = Journal(tmp_path, "chain-one"), Journal(tmp_path, "chain-two")
    assert list(dead_journals(tmp_path)) == []
    one.close(clean=True)
    two.close(clean=False)  # left for a replay, as a killed process leaves it
    assert [dead.chain_id for dead in dead_journals(tmp_path)] == ["chain-two"]


def test_a_sibling_replaying_while_a_journal_is_created_never_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Old code created ``<chain>.lock`` and locked it afterwards: a sibling scanning in
    between took it as a dead journal and removed it, so the live journal had no lock file
    (never replayed after a kill -9). The scan now runs exactly in that moment."""
    real_flock = audit_journal.fcntl.flock
    found: list[str] = []

    def flock_after_a_scan(fd: int, operation: int) -> Any:
        monkeypatch.setattr(audit_journal.fcntl, "flock", real_flock)
        for dead in dead_journals(tmp_path):  # what a worker starting now would replay
            with dead:
                found.append(dead.chain_id)
                dead.remove()
        return real_flock(fd, operation)

    monkeypatch.setattr(audit_journal.fcntl, "flock", flock_after_a_scan)
    journal = Journal(tmp_path, "live")
    assert found == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.00000000.jsonl", "live.lock"]
    assert list(dead_journals(tmp_path)) == []
    journal.close(clean=True)
    assert list(tmp_path.iterdir()) == []
