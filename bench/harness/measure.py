"""The measured parts (nonstream, stream, other, smoke): every cell of every rep, alternated."""

from __future__ import annotations

import argparse
import os
import time

from bench.harness.config import ALL_TARGETS, SCENARIOS, SERVER_CPU, SMOKE_SCENARIOS, log
from bench.harness.load import Load, Sampler
from bench.harness.procs import cpu_busy, cpu_s, rss_mb
from bench.harness.targets import Bench
from bench.harness.tools import machine, versions


def part_measure(args: argparse.Namespace, part: str) -> None:
    bench = Bench(args, part)
    bench.meta["versions"], bench.meta["machine"] = versions(), machine()
    load = Load(args.out, args.generator)
    bench.meta["generator"] = load.name
    try:
        bench.start_targets()
        bench.check_all()
        scenarios = SMOKE_SCENARIOS if args.smoke else SCENARIOS[part]
        measure(bench, load, scenarios)
        bench.finish()
    finally:
        bench.runner.stop_all()


def measure(bench: Bench, load: Load, scenarios: list[tuple[str, str, int]]) -> None:
    names = [n for n in ALL_TARGETS if n in bench.targets]
    total, n, t_start = bench.args.reps * len(scenarios) * len(names), 0, time.time()
    for rep in range(bench.args.reps):
        for scenario, kind, conc in scenarios:
            for name in names:
                n += 1
                target = bench.targets[name]
                url = bench.target_url(target, kind)
                if bench.args.warmup > 0:
                    load.run(url, conc, bench.args.warmup, kind, target.auth)
                server = target.proc if name != "direct" else None
                mocks = [bench.mock_for(kind)]
                samp = Sampler(server.pid) if server else None
                c0 = cpu_s(server.pid) if server else 0.0
                m0 = sum(cpu_s(m.pid) for m in mocks)
                b0 = cpu_busy(SERVER_CPU)
                t0 = time.perf_counter()
                if samp:
                    samp.start()
                r = load.run(url, conc, bench.args.duration, kind, target.auth)
                wall = time.perf_counter() - t0
                b1 = cpu_busy(SERVER_CPU)
                if samp:
                    samp.done.set()
                    samp.join()
                r.update(
                    target=name,
                    scenario=scenario,
                    kind=kind,
                    conc=conc,
                    rep=rep,
                    part=bench.part,
                    server_cpu_pct=round(100 * (cpu_s(server.pid) - c0) / wall, 1)
                    if server
                    else None,
                    mock_cpu_pct=round(100 * (sum(cpu_s(m.pid) for m in mocks) - m0) / wall, 1),
                    rss_mb=round(rss_mb(server.pid), 1) if server else None,
                    rss_max_sampled_mb=round(samp.max_rss, 1) if samp else None,
                    cpu0_busy_pct=round(100 * (b1[0] - b0[0]) / max(1, b1[1] - b0[1]), 1),
                    loadavg=os.getloadavg()[0],
                )
                bench.results.append(r)
                eta = (time.time() - t_start) / n * (total - n)
                log(
                    f"[{n}/{total}] rep{rep} {name:8s} {scenario:10s} c={conc:<3d} "
                    f"rps={r['rps']:.0f} p50={r['p50_us'] / 1000:.2f}ms "
                    f"p99={r['p99_us'] / 1000:.2f}ms errs={r['errors']} "
                    f"srvcpu={r['server_cpu_pct']} eta={eta:.0f}s"
                )
                bench.save()
