"""The parts that are not a grid of cells: micro (start-up, idle RSS, policy), workers, soak."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

from bench.harness.checks import check_all
from bench.harness.config import HERE, PY, ROOT, SERVER_CPU, log
from bench.harness.load import Load
from bench.harness.procs import hwm_mb, pinnable, rss_mb
from bench.harness.targets import Bench, Target, audit_rows
from bench.harness.tools import machine, versions

WORKERS_CONC = 32  # bench/workers.py's default: enough to keep two workers busy


def part_micro(args: argparse.Namespace) -> None:
    """Startup to ready (repeated), idle RSS, and the policy decision micro-benchmark."""
    bench = Bench(args, "micro")
    bench.meta["versions"], bench.meta["machine"] = versions(args.out), machine()
    reps = max(3, args.reps + 2)
    try:
        bench.start_mocks()
        starts: dict[str, list[float]] = {}
        idle: dict[str, list[float]] = {}
        for _ in range(reps):
            for name, starter in (("gateway", bench.start_gateway), ("raw-asgi", bench.start_raw)):
                start_and_stop(bench, name, starter, starts, idle)
        peers = {"litellm": bench.start_litellm, "portkey": bench.start_portkey}
        for name in (n for n in peers if n in args.targets):
            try:
                for _ in range(2):  # the peers start slowly: two starts each
                    start_and_stop(bench, name, peers[name], starts, idle)
            except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                bench.record_start_failure(name, error)
        bench.meta["startup_runs_s"], bench.meta["rss_idle_runs_mb"] = starts, idle
        bench.meta["startup_s"] = {k: statistics.median(v) for k, v in starts.items() if v}
        bench.meta["rss_idle_mb"] = {k: statistics.median(v) for k, v in idle.items() if v}
        log("startup", bench.meta["startup_s"], "idle RSS", bench.meta["rss_idle_mb"])
        cmd = [
            PY,
            os.path.join(HERE, "policy_micro.py"),
            "--database-url",
            f"sqlite:///{bench.gateway_db}",
        ]
        if pinnable():
            cmd = ["taskset", "-c", str(SERVER_CPU), *cmd]
        r = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=600,
            env={**os.environ, **bench.gateway_env(bench.gateway_db)},
        )
        if r.returncode != 0:
            raise RuntimeError(f"policy micro-benchmark failed:\n{r.stderr[-3000:]}")
        bench.meta["policy_micro"] = json.loads(r.stdout)
        log("policy", json.dumps(bench.meta["policy_micro"]["summary"]))
        bench.meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        bench.save()
    finally:
        bench.runner.stop_all()


def part_workers(args: argparse.Namespace) -> None:
    """``serve --workers 1`` vs ``--workers 2`` (``bench/workers.py``: alternated reps, nothing
    pinned, the requests each worker served from the audit chains), kept with the run."""
    bench = Bench(args, "workers")
    bench.meta["versions"], bench.meta["machine"] = versions(args.out), machine()
    path = os.path.join(args.out, "workers.json")
    cmd = [PY, os.path.join(HERE, "workers.py"), "--reps", str(args.reps)]
    cmd += ["--duration", str(args.duration), "--conc", str(WORKERS_CONC), "--out", path]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"bench/workers.py failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    with open(path) as f:
        bench.meta["workers"] = json.load(f)
    log("workers", json.dumps(bench.meta["workers"]["summary"]))
    bench.meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    bench.save()


def start_and_stop(
    bench: Bench,
    name: str,
    starter: Callable[[], Target],
    starts: dict[str, list[float]],
    idle: dict[str, list[float]],
) -> None:
    """One start to ready, the idle RSS 2 s later, then stop."""
    t = starter()
    starts.setdefault(name, []).append(round(t.startup_s or 0, 3))
    time.sleep(2)
    assert t.proc is not None
    idle.setdefault(name, []).append(round(rss_mb(t.proc.pid), 1))
    bench.runner.stop(t.proc)


def part_soak(args: argparse.Namespace) -> None:
    """Closed-loop load on the gateway in 10 s slices (chat, stream, embeddings in turn) until
    ``--soak-requests`` or ``--soak-minutes``; RSS after every slice (= every 10 s)."""
    bench = Bench(args, "soak")
    bench.meta["versions"], bench.meta["machine"] = versions(args.out), machine()
    load = Load(args.out, args.generator)
    bench.meta["generator"] = load.name
    slice_s = 10
    samples: list[dict[str, Any]] = []
    try:
        bench.start_mocks()
        gw = bench.targets["gateway"] = bench.start_gateway()
        check_all(bench)
        assert gw.proc is not None
        pid = gw.proc.pid
        t0, done, errors = time.time(), 0, 0
        samples.append({"t": 0.0, "requests": 0, "rss_mb": round(rss_mb(pid), 1)})
        kinds = ["chat", "stream", "embed"]
        i = 0
        while done < args.soak_requests and time.time() - t0 < args.soak_minutes * 60:
            kind = kinds[i % len(kinds)]
            r = load.run(gw.url(kind), args.soak_conc, slice_s, kind, gw.auth)
            done += r["requests"]
            errors += r["errors"]
            i += 1
            samples.append(
                {
                    "t": round(time.time() - t0, 1),
                    "requests": done,
                    "kind": kind,
                    "rps": round(r["rps"]),
                    "errors": r["errors"],
                    "rss_mb": round(rss_mb(pid), 1),
                }
            )
            bench.meta["soak"] = soak_summary(samples, errors)
            bench.save()
            if i % 6 == 0:
                log(
                    f"soak {done:,} requests, {time.time() - t0:.0f}s, "
                    f"rss {samples[-1]['rss_mb']} MB, errors {errors}"
                )
        bench.meta["soak"] = soak_summary(samples, errors)
        bench.meta["rss_peak_hwm_mb"] = {"gateway": round(hwm_mb(pid), 1)}
        time.sleep(1.5)
        bench.meta["audit_rows"] = audit_rows(bench.gateway_db)
        bench.meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        bench.save()
        log("soak", json.dumps({k: v for k, v in bench.meta["soak"].items() if k != "samples"}))
    finally:
        bench.runner.stop_all()


def soak_summary(samples: list[dict[str, Any]], errors: int) -> dict[str, Any]:
    """Growth = least-squares slope of RSS over requests after a warm-up (the first 10 % of
    requests and the first 60 s)."""
    total = samples[-1]["requests"]
    steady = [s for s in samples if s["requests"] >= 0.1 * total and s["t"] >= 60] if total else []
    slope = None
    if len(steady) >= 3:
        xs = [s["requests"] for s in steady]
        ys = [s["rss_mb"] for s in steady]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        den = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0
    return {
        "requests": total,
        "seconds": samples[-1]["t"],
        "errors": errors,
        "rss_start_mb": samples[0]["rss_mb"],
        "rss_end_mb": samples[-1]["rss_mb"],
        "rss_max_mb": max(s["rss_mb"] for s in samples),
        "growth_mb_per_100k": round(slope * 100_000, 3) if slope is not None else None,
        "samples": samples,
    }
