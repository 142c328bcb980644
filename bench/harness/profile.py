"""The profile part: py-spy of the servers under load, summarised by bench/pyspy_summary.py."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import threading
import time
from typing import Any

from bench.harness.checks import check_all
from bench.harness.config import CLIENT_CPU, HERE, PY, log
from bench.harness.load import Load
from bench.harness.procs import cpu_s, pinnable
from bench.harness.targets import Bench, Target
from bench.harness.tools import machine, setup_tools, tool, versions

# (target, kind, concurrency): the gateway's profiles, then the same loads on the passthroughs
PLAN = [
    ("gateway", "chat", 16),
    ("gateway", "stream", 16),
    ("gateway", "embed", 16),
    ("gateway", "chat", 1),
    ("raw-asgi", "chat", 16),
    ("raw-asgi", "stream", 16),
    ("raw-http1", "chat", 16),
    ("raw-http1", "stream", 16),
]


def part_profile(args: argparse.Namespace) -> None:
    """py-spy (--gil, raw collapsed stacks, 100 Hz) of the gateway, the ceiling and the
    gateway's own passthrough (raw-http1: its HTTP client and nothing else) under load, so the
    per-stage CPU of the gateway can be read next to what a bare proxy spends."""
    setup_tools()
    bench = Bench(args, "profile")
    bench.meta["versions"], bench.meta["machine"] = versions(args.out), machine()
    load = Load(args.out, args.generator)
    profiles: dict[str, Any] = {}
    try:
        bench.start_mocks()
        bench.targets["gateway"] = bench.start_gateway()
        bench.targets["raw-asgi"] = bench.start_raw()
        bench.targets["raw-http1"] = bench.start_raw("raw-http1")
        check_all(bench)
        for name, kind, conc in PLAN:
            key = f"{name}/{kind}/c{conc}"
            profiles[key] = profile(bench, load, bench.targets[name], kind, conc)
            log(f"profiled {key}: {profiles[key].get('layers', {}).get('layers_self_pct')}")
        bench.meta["profiles"] = profiles
        bench.meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        bench.save()
    finally:
        bench.runner.stop_all()


def profile(bench: Bench, load: Load, target: Target, kind: str, conc: int) -> dict[str, Any]:
    """py-spy for ``--profile-seconds`` in the middle of a load 4 s longer, with the server's
    CPU over the same window; CPU per request = that CPU / the load's average req/s (so the
    profiles of targets at different req/s can be compared per request)."""
    assert target.proc is not None
    seconds = bench.args.profile_seconds
    raw = os.path.join(bench.out, f"pyspy_{target.name}_{kind}_c{conc}.txt")
    result: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: result.update(
            load.run(bench.target_url(target, kind), conc, seconds + 4, kind, target.auth)
        )
    )
    thread.start()
    time.sleep(2)
    c0, t0 = cpu_s(target.proc.pid), time.perf_counter()
    r = subprocess.run(
        pyspy_command(target.proc.pid, raw, seconds), **CAPTURE, timeout=seconds + 60
    )
    cpu_pct = 100 * (cpu_s(target.proc.pid) - c0) / (time.perf_counter() - t0)
    thread.join()
    if r.returncode != 0 or not os.path.exists(raw):
        return {"error": (r.stderr or r.stdout)[-400:]}
    summary = raw.replace(".txt", ".summary.txt")
    s = subprocess.run([PY, os.path.join(HERE, "pyspy_summary.py"), raw, "40"], **CAPTURE)
    with open(summary, "w") as f:
        f.write(
            f"# {target.name}/{kind}/c{conc}: {result.get('rps', 0):.0f} req/s under py-spy "
            f"--gil --nonblocking at 100 Hz\n" + s.stdout
        )
    layers = subprocess.run([PY, os.path.join(HERE, "pyspy_summary.py"), raw, "--json"], **CAPTURE)
    rps = result.get("rps", 0)
    return {
        "raw": os.path.basename(raw),
        "summary": os.path.basename(summary),
        "rps_under_profiler": round(rps),
        "server_cpu_pct": round(cpu_pct, 1),
        "cpu_us_per_request": round(cpu_pct / 100 * 1e6 / rps, 1) if rps else None,
        "errors": result.get("errors"),
        "layers": json.loads(layers.stdout) if layers.returncode == 0 else {},
    }


CAPTURE: dict[str, Any] = {"capture_output": True, "text": True}


def pyspy_command(pid: int, raw: str, seconds: int) -> list[str]:
    cmd = [tool("py-spy"), "record", "--pid", str(pid), "--gil", "--format", "raw", "-o", raw]
    cmd += ["-d", str(seconds), "-r", "100", "--nonblocking"]
    return ["taskset", "-c", str(CLIENT_CPU), *cmd] if pinnable() else cmd
