"""The targets of record, each MET, MISSED, info or not measured, with the measured figure."""

from __future__ import annotations

import statistics
from typing import Any

from bench.harness.analysis import row

SOAK_MAX_GROWTH_MB_PER_100K = 0.5


def targets_verdict(a: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 6 targets: each met / missed / not measured, with the measured value."""
    out = []

    def add(name: str, value: float | None, goal: str, ok: bool | None, unit: str = "") -> None:
        out.append(
            {
                "target": name,
                "goal": goal,
                "value": None if value is None else round(value, 4),
                "unit": unit,
                "verdict": "not measured"
                if value is None
                else "info"
                if ok is None
                else ("met" if ok else "MISSED"),
            }
        )

    chunks = next((m["config"]["chunks"] for m in a["metas"].values()), 20)
    g16, l16 = row(a, "chat", 16, "gateway"), row(a, "chat", 16, "litellm")
    v = g16["rps"] / l16["rps"] if g16 and l16 else None
    add(
        "throughput vs LiteLLM proxy, non-stream c=16",
        v,
        ">= 50x",
        None if v is None else v >= 50,
        "x",
    )
    for scenario, label in (("chat", "non-stream"), ("stream", "stream")):
        for conc in (1, 16, 64):
            g, r = row(a, scenario, conc, "gateway"), row(a, scenario, conc, "raw-asgi")
            if g and r:
                v = g["rps"] / r["rps"]
                add(
                    f"share of raw-ASGI ceiling, {label} c={conc}",
                    100 * v,
                    ">= 70 %",
                    v >= 0.7,
                    "%",
                )
    for scenario, label, concs in (
        ("chat", "non-stream", (1, 16, 64)),
        ("stream", "stream", (1, 16)),
        ("embeddings", "embeddings", (16,)),
    ):
        for conc in concs:
            g, h = row(a, scenario, conc, "gateway"), row(a, scenario, conc, "raw-http1")
            if g and h:
                add(
                    f"gateway / raw-http1 (same client, nothing else), {label} c={conc}",
                    100 * g["rps"] / h["rps"],
                    "(what auth, policy, routing, audit cost)",
                    None,
                    "%",
                )
    g = row(a, "chat", 1, "gateway")
    v = g["added_p50_ms"] if g else None
    add(
        "added p50 vs direct, non-stream c=1", v, "<= 0.3 ms", None if v is None else v <= 0.3, "ms"
    )
    g = row(a, "stream", 1, "gateway")
    v = g["added_p50_ms"] / chunks if g and g["added_p50_ms"] is not None else None
    add(
        f"added p50 per streamed chunk, stream c=1 (whole added p50 / {chunks} chunks)",
        v,
        "<= 0.05 ms",
        None if v is None else v <= 0.05,
        "ms",
    )
    n = row(a, "chat", 1, "gateway")
    v = None
    if g and n and g["added_p50_ms"] is not None and n["added_p50_ms"] is not None:
        v = (g["added_p50_ms"] - n["added_p50_ms"]) / chunks
    add(
        "added p50 per streamed chunk beyond the per-request overhead "
        "((stream - non-stream added p50) / chunks)",
        v,
        "<= 0.05 ms",
        None if v is None else v <= 0.05,
        "ms",
    )
    s = a["startup"].get("gateway")
    v = statistics.median(s) if s else None
    add("start to ready (no bundled model)", v, "< 1 s", None if v is None else v < 1, "s")
    s = a["idle"].get("gateway")
    v = statistics.median(s) if s else None
    add("idle RSS", v, "< 100 MB", None if v is None else v < 100, "MB")
    soak = (a["metas"].get("soak") or {}).get("soak")
    v = soak.get("growth_mb_per_100k") if soak else None
    add(
        "RSS growth over soak (per 100k requests)",
        v,
        f"none (<= {SOAK_MAX_GROWTH_MB_PER_100K} MB / 100k)",
        None if v is None else v <= SOAK_MAX_GROWTH_MB_PER_100K,
        "MB",
    )
    if soak and soak["requests"] < 1_000_000 and soak["seconds"] < 29 * 60:
        out[-1]["verdict"] += f" (short soak: {soak['requests']:,} requests, indicative only)"
    pm = ((a["metas"].get("micro") or {}).get("policy_micro") or {}).get("summary", {})
    v = pm.get("cached_decide_us")
    add("cached policy decision", v, "<= 20 us", None if v is None else v <= 20, "us")
    v = pm.get("uncached_per_candidate_us")
    add(
        "uncached policy decision, per candidate",
        v,
        "<= 100 us",
        None if v is None else v <= 100,
        "us",
    )
    return out
