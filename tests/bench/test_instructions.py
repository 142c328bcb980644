"""bench/instructions.py's workloads run and succeed (without valgrind, which only counts
them): the in-process gateway answers every request 200 (the child asserts it), audit rows
are stored, receipts are signed. No timing or count is asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import instructions


@pytest.mark.parametrize("what", ["request_c1", "request_c16", "audit_row", "receipt_b16"])
def test_each_workload_runs(tmp_path: Path, what: str) -> None:
    database = instructions.seed(tmp_path)
    run = [sys.executable, instructions.__file__, "--child", what, str(database), "64"]

    result = subprocess.run(
        run, env=instructions.environment(tmp_path), capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr[-2000:]
