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
from bench.harness.procs import pinnable
from bench.harness.targets import Bench
from bench.harness.tools import machine, setup_tools, tool, versions


def part_profile(args: argparse.Namespace) -> None:
    """py-spy (--gil, raw collapsed stacks, 100 Hz) of the gateway, the ceiling and the
    gateway's own passthrough (raw-http1: its HTTP client and nothing else) under load, so the
    per-stage CPU of the gateway can be read next to what a bare proxy spends."""
    setup_tools()
    bench = Bench(args, "profile")
    bench.meta["versions"], bench.meta["machine"] = versions(args.out), machine()
    load = Load(args.out, args.generator)
    seconds = args.profile_seconds
    profiles: dict[str, Any] = {}
    try:
        bench.start_mocks()
        bench.targets["gateway"] = bench.start_gateway()
        bench.targets["raw-asgi"] = bench.start_raw()
        bench.targets["raw-http1"] = bench.start_raw("raw-http1")
        check_all(bench)
        plan = [
            ("gateway", "chat", 16),
            ("gateway", "stream", 16),
            ("gateway", "embed", 16),
            ("gateway", "chat", 1),
            ("raw-asgi", "chat", 16),
            ("raw-asgi", "stream", 16),
            ("raw-http1", "chat", 16),
            ("raw-http1", "stream", 16),
        ]
        for name, kind, conc in plan:
            target = bench.targets[name]
            assert target.proc is not None
            raw = os.path.join(args.out, f"pyspy_{name}_{kind}_c{conc}.txt")
            result: dict[str, Any] = {}
            thread = threading.Thread(
                target=lambda t=target, k=kind, c=conc, r=result: r.update(
                    load.run(bench.target_url(t, k), c, seconds + 4, k, t.auth)
                )
            )
            thread.start()
            time.sleep(2)
            cmd = [
                tool("py-spy"),
                "record",
                "--pid",
                str(target.proc.pid),
                "--gil",
                "--format",
                "raw",
                "-o",
                raw,
                "-d",
                str(seconds),
                "-r",
                "100",
                "--nonblocking",
            ]
            if pinnable():
                cmd = ["taskset", "-c", str(CLIENT_CPU), *cmd]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
            thread.join()
            key = f"{name}/{kind}/c{conc}"
            if r.returncode != 0 or not os.path.exists(raw):
                profiles[key] = {"error": (r.stderr or r.stdout)[-400:]}
                continue
            summary = raw.replace(".txt", ".summary.txt")
            s = subprocess.run(
                [PY, os.path.join(HERE, "pyspy_summary.py"), raw, "40"],
                capture_output=True,
                text=True,
            )
            with open(summary, "w") as f:
                f.write(
                    f"# {key}: {result.get('rps', 0):.0f} req/s under py-spy --gil "
                    f"--nonblocking at 100 Hz\n" + s.stdout
                )
            layers = subprocess.run(
                [PY, os.path.join(HERE, "pyspy_summary.py"), raw, "--json"],
                capture_output=True,
                text=True,
            )
            profiles[key] = {
                "raw": os.path.basename(raw),
                "summary": os.path.basename(summary),
                "rps_under_profiler": round(result.get("rps", 0)),
                "errors": result.get("errors"),
                "layers": json.loads(layers.stdout) if layers.returncode == 0 else {},
            }
            log(f"profiled {key}: {profiles[key].get('layers', {}).get('layers_self_pct')}")
        bench.meta["profiles"] = profiles
        bench.meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        bench.save()
    finally:
        bench.runner.stop_all()
