"""The benchmark harness's own logic (bench/harness): the verdicts on the targets of record,
and a peer that fails (Portkey's gateway answering ``TypeError: immutable`` on Node 20) being
recorded in its cells instead of ending the run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from bench.harness.analysis import analyse, row
from bench.harness.checks import check_all
from bench.harness.cli import parse_args
from bench.harness.load import Load
from bench.harness.measure import failed_cell, measure
from bench.harness.procs import free_port, wait_ready
from bench.harness.report import render
from bench.harness.targets import Bench, Target
from bench.harness.verdicts import targets_verdict

IMMUTABLE = "HTTP 500: TypeError: immutable"


def measured(target: str, scenario: str, conc: int, rps: float, p99_ms: float) -> dict[str, Any]:
    return {
        "target": target,
        "scenario": scenario,
        "kind": "stream" if scenario == "stream" else "chat",
        "conc": conc,
        "rep": 0,
        "rps": rps,
        "p50_us": 1000,
        "p99_us": int(p99_ms * 1000),
        "requests": int(rps * 10),
        "errors": 0,
        "server_cpu_pct": None if target == "direct" else 99.0,
        "mock_cpu_pct": 20.0,
        "cpu0_busy_pct": 100.0,
        "generator": "wrk",
    }


def failed(target: str, scenario: str, conc: int) -> dict[str, Any]:
    cell = failed_cell(IMMUTABLE, "wrk")
    cell.update(target=target, scenario=scenario, kind=scenario, conc=conc, rep=0)
    return cell


def synthetic_run() -> dict[str, Any]:
    """One part as results-<part>.json holds it: the gateway at 80 % of raw-http1 for
    non-stream c=16, 50 % at c=64, 75 % for stream c=16; p99 at c=1 twice the passthrough's;
    Portkey measured for non-stream and failed on every stream cell."""
    results = []
    for scenario, conc, gateway, raw, p99 in (
        ("chat", 1, 2000.0, 3000.0, 4.0),
        ("chat", 16, 8000.0, 10000.0, 3.0),
        ("chat", 64, 5000.0, 10000.0, 9.0),
        ("stream", 16, 7500.0, 10000.0, 5.0),
    ):
        results.append(measured("direct", scenario, conc, 20000.0, 1.0))
        results.append(measured("gateway", scenario, conc, gateway, p99))
        results.append(measured("raw-http1", scenario, conc, raw, 2.0))
        results.append(measured("litellm", scenario, conc, 100.0, 50.0))
        if scenario == "stream":
            results.append(failed("portkey", scenario, conc))
        else:
            results.append(measured("portkey", scenario, conc, 500.0, 20.0))
    config = {"duration": 10, "warmup": 2, "reps": 3, "chunks": 20, "smoke": False}
    meta = {
        "part": "nonstream",
        "started": "2026-12-02 12:00:00",
        "config": config,
        "startup_s": {"gateway": 0.5},
        "rss_idle_mb": {"gateway": 120.0},
    }
    micro = {
        "part": "micro",
        "started": "2026-12-02 12:10:00",
        "config": config,
        "startup_s": {},
        "rss_idle_mb": {},
        "policy_micro": {
            "setup": "74 deployments",
            "summary": {"cached_decide_us": 1.6, "uncached_per_candidate_us": 139.0},
        },
    }
    soak = {
        "part": "soak",
        "started": "2026-12-02 12:20:00",
        "config": config,
        "startup_s": {},
        "rss_idle_mb": {},
        "soak": {
            "requests": 2_000_000,
            "seconds": 1800.0,
            "errors": 0,
            "rss_start_mb": 85.0,
            "rss_end_mb": 86.0,
            "rss_max_mb": 86.5,
            "growth_mb_per_100k": 0.01,
        },
    }
    parts = [{"meta": meta, "results": results}, {"meta": micro, "results": []}]
    return analyse([*parts, {"meta": soak, "results": []}])


def by_name(verdicts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {v["target"]: v for v in verdicts}


def test_verdicts_state_met_or_missed_with_the_figure() -> None:
    verdicts = by_name(targets_verdict(synthetic_run()))

    share = "share of its own passthrough (raw-http1), "
    assert verdicts[share + "non-stream c=16"]["verdict"] == "MET"
    assert verdicts[share + "non-stream c=16"]["value"] == pytest.approx(80.0)
    assert verdicts[share + "non-stream c=64"]["verdict"] == "MISSED"
    assert verdicts[share + "non-stream c=64"]["value"] == pytest.approx(50.0)
    assert verdicts[share + "stream c=16"]["verdict"] == "MET"
    p99 = verdicts["p99 vs its own passthrough (raw-http1), non-stream c=1"]
    assert (p99["verdict"], p99["value"]) == ("MISSED", pytest.approx(2.0))
    litellm = verdicts["throughput vs LiteLLM proxy, non-stream c=16"]
    assert (litellm["verdict"], litellm["value"]) == ("MET", pytest.approx(80.0))
    assert verdicts["start to ready (no bundled model)"]["verdict"] == "MET"
    assert verdicts["idle RSS"]["verdict"] == "MISSED"
    assert verdicts["cached policy decision"]["verdict"] == "MET"
    assert verdicts["uncached policy decision, per candidate"]["verdict"] == "MISSED"
    assert verdicts["RSS growth over soak (per 100k requests)"]["verdict"] == "MET"
    per_chunk = "added p50 per streamed chunk, stream c=1 (whole added p50 / 20 chunks)"
    assert verdicts[per_chunk]["verdict"] == "not measured"  # no stream c=1 cell in this run
    portkey = verdicts["throughput vs Portkey's gateway, non-stream c=16"]
    assert (portkey["verdict"], portkey["value"]) == ("info", pytest.approx(16.0))


def test_a_failed_portkey_stream_cell_renders_as_failed(tmp_path: Path) -> None:
    a = synthetic_run()

    cell = row(a, "stream", 16, "portkey")
    assert cell is not None and cell["failed"] == IMMUTABLE and cell["rps"] is None
    verdicts = by_name(targets_verdict(a))
    stream = verdicts["throughput vs Portkey's gateway, stream c=16"]
    assert stream["verdict"] == f"not measured (portkey failed: {IMMUTABLE})"
    table = render(a, str(tmp_path))
    assert f"| stream | 16 | portkey | failed: {IMMUTABLE} |" in table
    assert "| throughput vs Portkey's gateway, stream c=16 | 18 |" in table
    assert "| decide(), cached | 1.60 |" in table
    assert "Soak: 2,000,000 requests in 1800 s" in table


FAILING_PEER = """
import http.server, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        print("tryTargetsRecursively error:  immutable undefined TypeError: immutable", flush=True)
        body = b'{"status":"failure","message":"Something went wrong"}'
        self.send_response(500)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def bench_with_failing_peer(tmp_path: Path, name: str) -> Bench:
    """A Bench whose only target is a real server that fails every request the way Portkey's
    gateway does on Node 20 (500, and the error in its log)."""
    short = ["--duration", "0.2", "--warmup", "0", "--reps", "1", "--generator", "python"]
    args = parse_args(["--out", str(tmp_path), *short, "--targets", name])
    bench = Bench(args, "stream")
    script = tmp_path / "failing_peer.py"
    script.write_text(FAILING_PEER)
    port = free_port()
    proc = bench.runner.start(name, [sys.executable, str(script), str(port)], None)
    base = f"http://127.0.0.1:{port}"
    wait_ready(bench.runner, proc, base + "/", timeout=30)
    bench.targets[name] = Target(name, proc, base, bench.key)
    return bench


def test_a_peer_failing_its_check_is_recorded_per_cell_not_fatal(tmp_path: Path) -> None:
    bench = bench_with_failing_peer(tmp_path, "portkey")
    try:
        check_all(bench)
        measure(bench, Load(str(tmp_path), "python"), [("stream", "stream", 16)])
    finally:
        bench.runner.stop_all()

    assert bench.meta["checks"]["portkey/stream"]["error"] == IMMUTABLE
    [cell] = bench.results
    assert (cell["target"], cell["scenario"], cell["conc"]) == ("portkey", "stream", 16)
    assert cell["failed"] == IMMUTABLE
    assert cell["requests"] == 0


def test_the_gateway_failing_its_check_stops_the_run(tmp_path: Path) -> None:
    bench = bench_with_failing_peer(tmp_path, "gateway")
    bench.meta["gateway_seed"] = {"decisions": {"mock": {}, "mock-slow": {}, "mock-embed": {}}}
    try:
        with pytest.raises(RuntimeError, match="check failed for gateway/chat"):
            check_all(bench)
    finally:
        bench.runner.stop_all()


def test_the_workers_part_is_in_the_report(tmp_path: Path) -> None:
    runs = [
        {"workers": 1, "rep": 0, "requests_per_worker": [9000]},
        {"workers": 2, "rep": 0, "requests_per_worker": [8000, 7000]},
    ]
    summary = {
        "1": {"rps_median": 1000.0, "p50_ms_median": 20.0, "p99_ms_median": 40.0},
        "2": {"rps_median": 1500.0, "p50_ms_median": 15.0, "p99_ms_median": 30.0},
    }
    config = {"duration": 8, "warmup": 2, "reps": 1, "chunks": 20, "smoke": False}
    meta = {
        "part": "workers",
        "started": "2026-12-02 12:00:00",
        "config": config,
        "startup_s": {},
        "rss_idle_mb": {},
        "workers": {"cpus": 2, "conc": 32, "runs": runs, "summary": summary},
    }
    a = analyse([{"meta": meta, "results": []}])

    scaling = by_name(targets_verdict(a))["serve --workers 2 / --workers 1, non-stream (unpinned)"]
    assert (scaling["verdict"], scaling["value"]) == ("info", pytest.approx(1.5))
    table = render(a, str(tmp_path))
    assert "| 2 | 1,500 | 15.00 | 30.00 | 8,000/7,000 |" in table


def test_a_peer_that_cannot_start_is_recorded_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine without node (nor npm): Portkey's cells say why, the others are measured."""
    monkeypatch.setenv("PATH", str(tmp_path))
    short = ["--duration", "0.2", "--warmup", "0", "--reps", "1", "--generator", "python"]
    bench = Bench(parse_args(["--out", str(tmp_path), *short, "--targets", "direct,portkey"]), "x")
    try:
        bench.start_targets()
        check_all(bench)
        measure(bench, Load(str(tmp_path), "python"), [("chat", "chat", 4)])
    finally:
        bench.runner.stop_all()

    direct, portkey = bench.results
    assert direct["target"] == "direct" and direct["requests"] > 0 and "failed" not in direct
    assert portkey["target"] == "portkey"
    assert portkey["failed"].startswith("did not start: FileNotFoundError")
