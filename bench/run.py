#!/usr/bin/env python3
"""provenance-router benchmark command (issue 6): ``bench/run.py --help`` for the usage.

A thin entry point: the harness itself is the package ``bench/harness/`` (standard library
only; it starts every server as its own process and never imports the gateway, so it runs even
while the gateway is broken):

    config    paths, pins, CPUs, targets, scenarios, request bodies
    procs     processes and the machine: pinning, start/stop, CPU and RSS readers, readiness
    tools     wrk, the tools venv (LiteLLM proxy, py-spy), Portkey's gateway (npm), versions
    load      the load generator (wrk + post.lua, or loadgen.py) and the RSS sampler
    targets   Target and Bench: each server under test started, its results saved
    checks    one validated request per target and kind; a failing peer is recorded, skipped
    measure   the measured parts (nonstream, stream, other, smoke), failed cells recorded
    parts     micro (start-up, idle RSS, policy), soak; profile: py-spy under load
    analysis  results-*.json -> one row per cell; verdicts: the targets of record
    report    table.md, results.json, publishing to docs/benchmarks.md
    cli       arguments, --detach, the order of the parts
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.harness.cli import main  # after the line above: the repository root on sys.path

if __name__ == "__main__":
    main()
