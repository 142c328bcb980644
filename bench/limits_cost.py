"""Per-request cost of key and tenant limits (``router.limiter`` over ``router.counters``).

One request's limit work is ``admit`` (before the backend call) + ``settle`` (its usage charged)
+ ``release`` (its lease), as the request path runs them. Cases:

    none            a key and tenant without limits: what every request pays (a lookup)
    rpm             a key with requests per minute only
    rpm+tpm+conc    a key with rpm, tpm and max_concurrent
    key+tenant+budget   rpm, tpm, max_concurrent and a token+cost budget on the key and on its
                    tenant (everything the limiter does)

each with the counters in process (``local``) and in Redis (``redis``, 127.0.0.1:6379, under
a throwaway key prefix). Figures are microseconds per request: ``wall`` (for Redis mostly the
round trips, during which the event loop serves other requests) and ``cpu`` (this process's
CPU time, what the one-core targets care about), medians of 5 runs.

    .venv/bin/python bench/limits_cost.py [--requests N] [--json] [--no-redis]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from registry.snapshot import (  # noqa: E402
    BudgetSnap,
    DeploymentSnap,
    KeySnap,
    LimitsSnap,
    RegistrySnapshot,
    TenantSnap,
)
from router.counters import Counters, LocalCounters, RedisCounters, Spend  # noqa: E402
from router.limiter import Limiter, Usage, subjects  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/0"
BIG = 10**12  # limits never reached: the work of an admitted request
FULL = LimitsSnap(rpm=BIG, tpm=BIG, max_concurrent=10**6)
BUDGET = BudgetSnap(soft_tokens=BIG, hard_tokens=BIG, soft_cost_usd=1e12, hard_cost_usd=1e12)
CASES: dict[str, tuple[LimitsSnap | None, LimitsSnap | None]] = {
    "none": (None, None),
    "rpm": (LimitsSnap(rpm=BIG), None),
    "rpm+tpm+conc": (FULL, None),
    "key+tenant+budget": (
        LimitsSnap(rpm=BIG, tpm=BIG, max_concurrent=10**6, budget=BUDGET),
        LimitsSnap(rpm=BIG, tpm=BIG, max_concurrent=10**6, budget=BUDGET),
    ),
}
DEPLOYMENT = DeploymentSnap(
    id="d", model_id="a/b", input_cost_per_mtok_usd=3.0, output_cost_per_mtok_usd=15.0
)
USAGE = Usage(120, 80)


def snapshot(key_limits: LimitsSnap | None, tenant_limits: LimitsSnap | None) -> Any:
    key = KeySnap("bench-key", "bench", frozenset({"inference"}), limits=key_limits)
    tenants = {"bench": TenantSnap(id="bench", limits=tenant_limits)}
    empty: dict[str, Any] = {}
    snap = RegistrySnapshot(1, empty, empty, empty, {"d": DEPLOYMENT}, empty, tenants, {})
    return snap, key


async def one_run(counters: Counters, case: str, requests: int) -> tuple[float, float]:
    limiter = Limiter(counters, fail_closed=False, spend_source=lambda *_: Spend())
    snap, key = snapshot(*CASES[case])
    wall, cpu = time.perf_counter(), time.process_time()
    for n in range(requests):
        found = subjects(snap, key)
        if not found:
            continue
        admission = await limiter.admit(found, f"req-{n}")
        assert admission is not None
        await limiter.settle(admission, USAGE, DEPLOYMENT)
        await limiter.release(admission)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall / requests * 1e6, cpu / requests * 1e6


async def measure(requests: int, redis: bool) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for store in ("local", "redis") if redis else ("local",):
        for case in CASES:
            runs = []
            for _ in range(5):
                counters: Counters = (
                    LocalCounters()
                    if store == "local"
                    else RedisCounters(
                        REDIS_URL,
                        prefix=f"bench-{uuid.uuid4().hex}",
                        lease_ttl_s=60,
                        timeout_s=1,
                    )
                )
                count = requests if store == "local" else max(1, requests // 10)
                runs.append(await one_run(counters, case, count))
                await counters.close()
            results[f"{store} {case}"] = {
                "wall_us": round(statistics.median(r[0] for r in runs), 2),
                "cpu_us": round(statistics.median(r[1] for r in runs), 2),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-redis", action="store_true")
    args = parser.parse_args()
    results = asyncio.run(measure(args.requests, not args.no_redis))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'case':<26} {'wall µs':>9} {'cpu µs':>9}")
    for name, figures in results.items():
        print(f"{name:<26} {figures['wall_us']:>9} {figures['cpu_us']:>9}")


if __name__ == "__main__":
    main()
