"""``bench/exposure_report.py`` runs end to end on a small log, and SQLite answers the report's
scan from its day index (migration 0006) without a sort. No timing assertion: on shared CI
machines timings mean nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_exposure_benchmark_runs_and_uses_the_day_index(tmp_path: Path) -> None:
    database = tmp_path / "exposure.db"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "exposure_report.py"),
            "--database-url",
            f"sqlite:///{database}",
            "--rows",
            "2000",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:]

    result = json.loads(run.stdout)
    whole, one_tenant = result["reports"]
    assert whole["requests"] == 2000
    assert 0 < one_tenant["requests"] < 2000
    plan = " ".join(whole["plan"])
    assert "COVERING INDEX ix_routing_decisions_exposure_day" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
