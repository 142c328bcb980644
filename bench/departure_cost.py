"""Per-request cost of watching for a client that leaves (``router.departure``), timed on uvloop.

    eager     a watcher task per request: create, first step into ``receive()``, cancel
    lazy      what the gateway does for a call answered within one tick: register the
              request with the gateway's ``DepartureWatch`` and unregister it (no task)
    baseline  the loop iterations both variants also pay (subtracted from the figures)

Microseconds per request: the three variants run alternately 9 times, 50 000 requests each;
each figure is the best run (the machine is shared: the best is the least disturbed).

    .venv/bin/python bench/departure_cost.py
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router.departure import Departure, DepartureWatch

N = 50_000


async def measure() -> dict[str, float]:
    forever = asyncio.Event()
    watch = DepartureWatch(tick_s=3600.0)  # its tick never comes during the measurement

    async def receive() -> MutableMapping[str, Any]:
        await forever.wait()  # uvicorn's receive() waits on an event the same way
        return {}

    def eager() -> None:
        Departure(receive).stop()

    def lazy() -> None:
        Departure(receive, watch).stop()

    async def run(variant: Any) -> float:
        started = time.perf_counter()
        for _ in range(N):
            if variant is not None:
                variant()
            await asyncio.sleep(0)  # the upstream call is pending: the watcher starts
            await asyncio.sleep(0)  # the cancelled watcher finishes
        return (time.perf_counter() - started) / N * 1e6

    variants = {"baseline": None, "eager": eager, "lazy": lazy}
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(9):
        for name, variant in variants.items():
            best[name] = min(best[name], await run(variant))
    return {
        "eager_us": round(best["eager"] - best["baseline"], 2),
        "lazy_us": round(best["lazy"] - best["baseline"], 2),
        "baseline_us": round(best["baseline"], 2),
    }


if __name__ == "__main__":
    for name, value in uvloop.run(measure()).items():
        print(f"{name:>12}  {value}")
