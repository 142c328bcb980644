"""Policy decision micro-benchmark (timeit) on the benchmark registry and policy.

    PolicyEngine.build(snapshot, policy)                     once per registry/policy version
    decide(...)                                              one tenant x deployment x context
    eligible_deployments(...)                                a route's candidates (the seam the
                                                             router calls per request)

"cached": the same question again (the engine's decision cache answers). "uncached": each call
asks with a context never seen before (a fresh ``purpose``, which no rule of the benchmark
policy reads), so Cedar evaluates every candidate; per candidate = per call / candidates.
Each figure is the median over 5 timeit repeats, in microseconds per call.

    python bench/policy_micro.py --database-url sqlite:///bench/out/.../gateway-micro.db
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
import timeit
from typing import Any

TENANT = "bench"


def per_call_us(fn: Any, number: int, repeat: int = 5) -> float:
    times = timeit.repeat(fn, number=number, repeat=repeat)
    return statistics.median(times) / number * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--database-url", required=True)
    p.add_argument("--route", default="mock")
    args = p.parse_args()

    from registry.db import make_engine, session_scope
    from registry.service import load_snapshot
    from router.policy.engine import PolicyEngine, RequestContext, eligible_deployments

    with session_scope(make_engine(args.database_url)) as session:
        snapshot = load_snapshot(session=session)
    policy = snapshot.policy

    builds = []
    for _ in range(5):
        t0 = time.perf_counter()
        engine = PolicyEngine.build(snapshot, policy)
        builds.append(time.perf_counter() - t0)

    candidates = [snapshot.deployments[c] for c in snapshot.routes[args.route].candidates]
    ctx = RequestContext(classification="internal")
    decisions = eligible_deployments(
        engine, tenant_id=TENANT, action="infer", context=ctx, candidates=candidates
    )
    allowed = next(d.deployment_id for d in decisions if d.allowed)
    n = len(candidates)

    def cached_decide() -> None:
        engine.decide(tenant_id=TENANT, action="infer", deployment_id=allowed, context=ctx)

    def cached_eligible() -> None:
        eligible_deployments(
            engine, tenant_id=TENANT, action="infer", context=ctx, candidates=candidates
        )

    counter = itertools.count()

    def fresh() -> RequestContext:
        return RequestContext(classification="internal", purpose=f"p{next(counter)}")

    def uncached_decide() -> None:
        engine.decide(tenant_id=TENANT, action="infer", deployment_id=allowed, context=fresh())

    def uncached_eligible() -> None:
        eligible_deployments(
            engine, tenant_id=TENANT, action="infer", context=fresh(), candidates=candidates
        )

    def context_only() -> None:  # the cost of making the fresh context, subtracted below
        fresh()

    cached_decide_us = per_call_us(cached_decide, 20000)
    cached_eligible_us = per_call_us(cached_eligible, 5000)
    ctx_us = per_call_us(context_only, 20000)
    uncached_decide_us = per_call_us(uncached_decide, 500) - ctx_us
    uncached_eligible_us = per_call_us(uncached_eligible, 200) - ctx_us
    summary = {
        "build_ms": round(statistics.median(builds) * 1000, 2),
        "cached_decide_us": round(cached_decide_us, 2),
        "cached_eligible_us": round(cached_eligible_us, 2),
        "cached_per_candidate_us": round(cached_eligible_us / n, 2),
        "uncached_decide_us": round(uncached_decide_us, 2),
        "uncached_eligible_us": round(uncached_eligible_us, 2),
        "uncached_per_candidate_us": round(uncached_eligible_us / n, 2),
    }
    out = {
        "setup": (
            f"{len(snapshot.deployments)} deployments, route {args.route!r} with {n} "
            f"candidates ({sum(d.allowed for d in decisions)} allowed), policy "
            f"v{engine.policy_version} of {len(engine.policy.rule_ids)} Cedar policies"
        ),
        "summary": summary,
        "decisions": {d.deployment_id: d.allowed for d in decisions},
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
