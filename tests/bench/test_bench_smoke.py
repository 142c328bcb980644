"""The benchmark harness's smoke mode (``bench/run.py --smoke``) against the real gateway and the
mock backend: every cell produced requests and none failed.

Deliberately no timing assertion: this runs on shared CI machines, where timings mean nothing.
The smoke uses the harness's pure-Python load generator, so it needs nothing installed by hand
(no wrk, no LiteLLM)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_smoke_runs_without_errors(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    data = json.loads((out / "results-smoke.json").read_text())
    results = data["results"]
    assert {r["target"] for r in results} == {"direct", "gateway"}
    assert {r["scenario"] for r in results} == {"chat", "stream", "delay50", "embeddings"}
    for cell in results:
        assert cell["requests"] > 0, cell
        assert cell["errors"] == 0, cell

    # The benchmark tenant is allowed and served by an allowed deployment, with provenance.
    checks = data["meta"]["checks"]
    for kind in ("chat", "stream", "slow", "embed"):
        assert checks[f"gateway/{kind}"]["status"] == 200
        assert checks[f"gateway/{kind}"]["headers"]["x-provenance-deployment"]
    assert checks["gateway/bad-key"]["status"] == 401
