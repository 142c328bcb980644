"""The measured parts (nonstream, stream, other, smoke): every cell of every rep, alternated.
A cell that fails is recorded (``failed``, ``first_error``), never the end of the run."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from bench.harness.checks import check, check_all, failed_check
from bench.harness.config import SCENARIOS, SERVER_CPU, SMOKE_SCENARIOS, log
from bench.harness.load import Load, Sampler
from bench.harness.procs import cpu_busy, cpu_s, rss_mb
from bench.harness.targets import Bench, Target
from bench.harness.tools import machine, versions


def part_measure(args: argparse.Namespace, part: str) -> None:
    bench = Bench(args, part)
    bench.meta["machine"] = machine()
    load = Load(args.out, args.generator)
    bench.meta["generator"] = load.name
    try:
        bench.start_targets()
        bench.meta["versions"] = versions(args.out)  # after the peers' lazy installs
        check_all(bench)
        scenarios = SMOKE_SCENARIOS if args.smoke else SCENARIOS[part]
        measure(bench, load, scenarios)
        bench.finish()
    finally:
        bench.runner.stop_all()


def measure(bench: Bench, load: Load, scenarios: list[tuple[str, str, int]]) -> None:
    """Every cell of every rep, the targets alternated within each scenario."""
    names = bench.measured_targets()
    total, n, t_start = bench.args.reps * len(scenarios) * len(names), 0, time.time()
    for rep in range(bench.args.reps):
        for scenario, kind, conc in scenarios:
            for name in names:
                n += 1
                r = cell(bench, load, name, kind, conc)
                r.update(target=name, scenario=scenario, kind=kind, conc=conc, rep=rep)
                r["part"] = bench.part
                bench.results.append(r)
                eta = (time.time() - t_start) / n * (total - n)
                log(
                    f"[{n}/{total}] rep{rep} {name:8s} {scenario:10s} c={conc:<3d} "
                    f"rps={r['rps']:.0f} p50={r['p50_us'] / 1000:.2f}ms "
                    f"p99={r['p99_us'] / 1000:.2f}ms errs={r['errors']} "
                    f"srvcpu={r['server_cpu_pct']} eta={eta:.0f}s"
                    + (f" FAILED: {r['failed']}" if r.get("failed") else "")
                )
                bench.save()


def cell(bench: Bench, load: Load, name: str, kind: str, conc: int) -> dict[str, Any]:
    """One cell, measured unless its target failed the check for this kind; a cell with
    errors gets the first error text (one more request, validated), and ``failed`` when no
    request succeeded (a server too slow to answer one within the cell included), instead of
    stopping the run."""
    failure = failed_check(bench, name, kind)
    if failure:
        return failed_cell(failure, load.name)
    target = bench.targets[name]
    try:
        r = measure_cell(bench, load, target, kind, conc)
    except RuntimeError as error:  # the load generator gave no result
        return failed_cell(str(error).splitlines()[0][:200], load.name)
    succeeded = r["requests"] - r.get("err_status", 0)
    if r["errors"] or succeeded <= 0:
        probe = check(bench, target, kind).get("error")
        r["first_error"] = probe or ("under load only" if r["errors"] else None)
    if succeeded <= 0:
        duration = bench.args.duration
        r["failed"] = r["first_error"] or f"no request completed in {duration:g} s"
    return r


def failed_cell(failure: str, generator: str) -> dict[str, Any]:
    return {
        "failed": failure,
        "requests": 0,
        "errors": 0,
        "rps": 0.0,
        "p50_us": 0,
        "p99_us": 0,
        "server_cpu_pct": None,
        "generator": generator,
    }


def measure_cell(bench: Bench, load: Load, target: Target, kind: str, conc: int) -> dict[str, Any]:
    """Warm-up, then the timed run with server CPU, mock CPU, CPU 0's load and RSS."""
    url, headers = bench.target_url(target, kind), target.headers(kind)
    if bench.args.warmup > 0:
        load.run(url, conc, bench.args.warmup, kind, target.auth, headers)
    server = target.proc if target.name != "direct" else None
    mocks = [bench.mock_for(kind)]
    samp = Sampler(server.pid) if server else None
    c0 = cpu_s(server.pid) if server else 0.0
    m0 = sum(cpu_s(m.pid) for m in mocks)
    b0 = cpu_busy(SERVER_CPU)
    t0 = time.perf_counter()
    if samp:
        samp.start()
    r = load.run(url, conc, bench.args.duration, kind, target.auth, headers)
    wall = time.perf_counter() - t0
    b1 = cpu_busy(SERVER_CPU)
    if samp:
        samp.done.set()
        samp.join()
    r.update(
        server_cpu_pct=round(100 * (cpu_s(server.pid) - c0) / wall, 1) if server else None,
        mock_cpu_pct=round(100 * (sum(cpu_s(m.pid) for m in mocks) - m0) / wall, 1),
        rss_mb=round(rss_mb(server.pid), 1) if server else None,
        rss_max_sampled_mb=round(samp.max_rss, 1) if samp else None,
        cpu0_busy_pct=round(100 * (b1[0] - b0[0]) / max(1, b1[1] - b0[1]), 1),
        loadavg=os.getloadavg()[0],
    )
    return r
