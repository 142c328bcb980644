"""provenance-router benchmark driver (issue 6). Standard library only: it starts every server as
its own process and never imports the gateway, so it runs even while the gateway is broken.

Targets, all in front of the same mock backend (``mock_backend.py``):

    direct    the load generator -> the mock (the floor)
    gateway   -> provenance-router (``router.asgi:create_app``: API-key auth, >= 60 deployments,
              a 14-rule policy, audit log on) -> mock
    raw-asgi  -> ``passthrough_raw.py`` (raw ASGI + one aiohttp session: the Python ceiling) -> mock
    raw-http1 -> the same passthrough with the gateway's own HTTP client (adapters/http1.py) -> mock
    litellm   -> LiteLLM proxy 1.106.2 (its own venv, made by ``--part setup``) -> mock
    portkey   -> Portkey's gateway 1.15.2 on Node (npm, into <out>/portkey by ``--part setup``)
              -> mock; a cell it fails is recorded as failed, with its error, not fatal

Pinning: servers under test on CPU 0; mock backends, load generator and this driver on CPU 1.

Usage (from the repository root, with the project's Python, e.g. ``.venv/bin/python``):

    bench/run.py                        the full run: every part below in sequence, then the
                                        report, published to docs/benchmarks.md + bench/results/
    bench/run.py --detach               the same, detached (for shells that cut commands at
                                        10 min); prints the output dir; see <out>/run.log
    bench/run.py --part P --out DIR     one part (each < 10 min but nonstream, ~11), P in:
                                        setup nonstream stream other micro profile workers soak
    bench/run.py --report --out DIR [--publish]   merge the parts in DIR and render (publish)
    bench/run.py --smoke [--out DIR]    ~5 s: direct + gateway, pure-Python load generator,
                                        1 short cell per scenario kind (CI; no LiteLLM, no wrk)
    bench/run.py --soak                 >= 1 M requests or 30 min against the gateway, RSS
                                        every 10 s, growth per 100k requests
    bench/run.py --profile              = --part profile (py-spy of the gateway under load)
    bench/run.py --part workers         serve --workers 1 vs 2 (bench/workers.py), in the report

Knobs: --duration (10 s per cell), --warmup (2 s), --reps (3, alternated A B C A B C),
--targets, --generator (auto|wrk|python), --chunks (20); env BENCH_TOOLS_VENV (where setup puts
LiteLLM's proxy and py-spy; default /tmp/pr-bench-litellm). Portkey's gateway needs node and npm.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from bench.harness.config import ALL_TARGETS, HERE, PARTS, PY, ROOT, SCENARIOS, log
from bench.harness.measure import part_measure
from bench.harness.parts import part_micro, part_soak, part_workers
from bench.harness.procs import pin_self
from bench.harness.profile import part_profile
from bench.harness.report import report
from bench.harness.tools import setup_tools


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--part", choices=(*PARTS, "soak", "all"), default="all")
    p.add_argument("--out", help="output dir shared by the parts (default bench/out/<timestamp>)")
    p.add_argument("--report", action="store_true", help="merge the parts in --out and render")
    p.add_argument(
        "--publish",
        action="store_true",
        help="with --report: write docs/benchmarks.md and bench/results/<date>/",
    )
    p.add_argument("--smoke", action="store_true", help="~5 s: direct + gateway, loadgen.py")
    p.add_argument("--soak", action="store_true", help="= --part soak")
    p.add_argument("--profile", action="store_true", help="= --part profile")
    p.add_argument("--detach", action="store_true", help="run in the background; see run.log")
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--warmup", type=float, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--chunks", type=int, default=20)
    p.add_argument("--targets", default=",".join(ALL_TARGETS))
    p.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument("--profile-seconds", type=int, default=10)
    p.add_argument("--soak-requests", type=int, default=1_000_000)
    p.add_argument("--soak-minutes", type=float, default=30)
    p.add_argument("--soak-conc", type=int, default=16)
    args = p.parse_args(argv)
    if args.soak:
        args.part = "soak"
    if args.profile:
        args.part = "profile"
    args.targets = [t for t in args.targets.split(",") if t]
    if args.smoke:
        args.part = "smoke"
        args.targets = [t for t in args.targets if t in ("direct", "gateway")]
        args.duration, args.warmup, args.reps = min(args.duration, 0.3), 0, 1
        if args.generator == "auto":
            args.generator = "python"
    if not args.out:
        args.out = os.path.join(HERE, "out", time.strftime("%Y%m%d-%H%M%S"))
    args.out = os.path.abspath(args.out)
    return args


def detach(argv: list[str], out: str) -> None:
    os.makedirs(out, exist_ok=True)
    argv = [a for a in argv if a != "--detach"]
    if "--out" not in argv:
        argv += ["--out", out]
    with open(os.path.join(out, "run.log"), "ab") as logf:
        p = subprocess.Popen(
            [PY, os.path.join(HERE, "run.py"), *argv],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=ROOT,
        )
    print(
        f"benchmark running in the background: pid {p.pid}\n  log: {out}/run.log\n"
        f"  results: {out}/table.md when done (then bench/run.py --report --out {out})"
    )


def main(argv: list[str] | None = None) -> None:
    raw = sys.argv[1:] if argv is None else argv
    args = parse_args(raw)
    if args.detach:
        detach(raw, args.out)
        return
    if args.report:
        print(report(args.out, publish=args.publish))
        return
    pin_self()
    os.makedirs(args.out, exist_ok=True)
    log("output dir", args.out)
    t0 = time.time()
    timings: dict[str, float] = {}
    parts = list(PARTS) if args.part == "all" else [args.part]
    for part in parts:
        t = time.time()
        log(f"=== part {part}")
        if part == "setup":
            info = setup_tools(
                need_litellm="litellm" in args.targets,
                need_portkey="portkey" in args.targets,
                out=args.out,
            )
            log("setup", json.dumps(info))
        elif part in SCENARIOS or part == "smoke":
            part_measure(args, part)
        elif part == "micro":
            part_micro(args)
        elif part == "profile":
            part_profile(args)
        elif part == "workers":
            part_workers(args)
        elif part == "soak":
            part_soak(args)
        timings[part] = round(time.time() - t, 1)
        log(f"=== part {part} took {timings[part]:.0f}s")
    with open(os.path.join(args.out, f"timings-{'-'.join(parts)}.json"), "w") as f:
        json.dump(timings, f)
    if args.part in ("setup",):
        return
    print(report(args.out, publish=args.part == "all"))
    log(f"done in {time.time() - t0:.0f}s; results in {args.out}")


if __name__ == "__main__":
    main()
