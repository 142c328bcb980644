"""From the parts' results-*.json to one row per (scenario, concurrency, target)."""

from __future__ import annotations

import glob
import json
import os
import statistics
from typing import Any

from bench.harness.config import ALL_TARGETS, PARTS


def load_parts(out: str) -> list[dict[str, Any]]:
    parts = []
    for fn in sorted(glob.glob(os.path.join(out, "results-*.json"))):
        with open(fn) as f:
            parts.append(json.load(f))
    parts.sort(key=lambda d: d["meta"]["started"])
    return parts


def med(rs: list[dict[str, Any]], k: str) -> float:
    return float(statistics.median(r[k] for r in rs))


def analyse(parts: list[dict[str, Any]]) -> dict[str, Any]:
    results = [r for d in parts for r in d["results"]]
    metas = {d["meta"]["part"]: d["meta"] for d in parts}
    cells: dict[tuple[str, int], dict[str, list[dict[str, Any]]]] = {}
    for r in results:
        cells.setdefault((r["scenario"], r["conc"]), {}).setdefault(r["target"], []).append(r)
    rows = []
    order = {"chat": 0, "stream": 1, "delay50": 2, "embeddings": 3}
    for (scenario, conc), by_target in sorted(
        cells.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1])
    ):
        for t in ALL_TARGETS:
            if by_target.get(t):
                rows.append(cell_row(scenario, conc, t, by_target))
    startup: dict[str, Any] = {}
    idle: dict[str, Any] = {}
    peak: dict[str, float] = {}
    after: dict[str, float] = {}
    for part in dict.fromkeys(("micro", *PARTS, "smoke", "soak")):
        m = metas.get(part)
        if not m:
            continue
        runs = m.get("startup_runs_s") or {k: [v] for k, v in m["startup_s"].items()}
        for k, v in runs.items():
            startup.setdefault(k, []).extend(v)
        runs = m.get("rss_idle_runs_mb") or {k: [v] for k, v in m["rss_idle_mb"].items()}
        for k, v in runs.items():
            idle.setdefault(k, []).extend(v)
        for k, v in (m.get("rss_peak_hwm_mb") or {}).items():
            peak[k] = max(peak.get(k, 0), v)
        after.update(m.get("rss_after_load_mb") or {})
    return {
        "rows": rows,
        "metas": metas,
        "startup": startup,
        "idle": idle,
        "peak": peak,
        "after": after,
    }


def measured(by_target: dict[str, list[dict[str, Any]]], t: str) -> list[dict[str, Any]]:
    """The reps of a target that produced figures (a failed rep has none)."""
    return [x for x in by_target.get(t, []) if not x.get("failed")]


def cell_row(
    scenario: str, conc: int, t: str, by_target: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """One table row: the median over the reps that produced figures, compared with the
    floor, the raw-ASGI ceiling and LiteLLM; ``failed`` when no rep did."""
    every = by_target[t]
    base = {
        "scenario": scenario,
        "conc": conc,
        "target": t,
        "errors": sum(x["errors"] for x in every),
        "requests": sum(x["requests"] for x in every),
        "generator": every[0].get("generator"),
        "first_error": next((x["first_error"] for x in every if x.get("first_error")), None),
    }
    rs = measured(by_target, t)
    if not rs:
        return {**base, "n": 0, "failed": every[0]["failed"], "rps": None}
    direct, raw, lite = (measured(by_target, n) for n in ("direct", "raw-asgi", "litellm"))
    cpu = [x["server_cpu_pct"] if t != "direct" else x["mock_cpu_pct"] for x in rs]
    rps = med(rs, "rps")
    return {
        **base,
        "n": len(rs),
        "rps": rps,
        "rps_min": min(x["rps"] for x in rs),
        "rps_max": max(x["rps"] for x in rs),
        "p50_ms": med(rs, "p50_us") / 1000,
        "p99_ms": med(rs, "p99_us") / 1000,
        "added_p50_ms": (med(rs, "p50_us") - med(direct, "p50_us")) / 1000
        if direct and t != "direct"
        else None,
        "vs_raw": rps / med(raw, "rps") if raw and t == "gateway" else None,
        "vs_litellm": rps / med(lite, "rps") if lite and t not in ("litellm", "direct") else None,
        "cpu_pct": statistics.median(c for c in cpu if c is not None)
        if any(c is not None for c in cpu)
        else None,
        "cpu0_other_pct": statistics.median(
            max(0.0, x.get("cpu0_busy_pct", 0) - (x["server_cpu_pct"] or 0)) for x in rs
        )
        if t != "direct"  # the mock runs on CPU 1: CPU 0 is not its core
        else None,
    }


def row(a: dict[str, Any], scenario: str, conc: int, target: str) -> dict[str, Any] | None:
    rows: list[dict[str, Any]] = a["rows"]
    return next(
        (r for r in rows if (r["scenario"], r["conc"], r["target"]) == (scenario, conc, target)),
        None,
    )
