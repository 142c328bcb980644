"""The targets of record, each MET, MISSED, info or not measured, with the measured figure.

Issue 6 set the first ones (vs LiteLLM, vs the raw-ASGI ceiling, added latency, start-up,
memory, the policy decision); issue 18 measures the gateway against its own passthrough
(``raw-http1``: the same HTTP client, nothing else), so what auth, policy, routing, headers and
the audit log cost has a target, and compares it with Portkey's gateway. A target whose cell
failed (a peer's error) or was not run is "not measured", with the reason.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.harness.analysis import row

SOAK_MAX_GROWTH_MB_PER_100K = 0.5
RAW_HTTP1_SHARE = 0.7  # issue 18: gateway req/s >= 70 % of raw-http1's
RAW_HTTP1_P99_FACTOR = 1.5  # issue 18: gateway p99 at c=1 <= 1.5x raw-http1's
LABELS = {"chat": "non-stream", "stream": "stream", "embeddings": "embeddings"}

Verdict = dict[str, Any]


def verdict(
    issue: int, name: str, value: float | None, goal: str, ok: bool | None, unit: str, why: str = ""
) -> Verdict:
    """``ok`` None with a value: reported for information, no target on it."""
    if value is None:
        text = "not measured" + (f" ({why})" if why else "")
    else:
        text = "info" if ok is None else ("MET" if ok else "MISSED")
    return {
        "target": name,
        "issue": issue,
        "goal": goal,
        "value": None if value is None else round(value, 4),
        "unit": unit,
        "verdict": text,
    }


def ratio(
    a: dict[str, Any], scenario: str, conc: int, num: str, den: str, key: str = "rps"
) -> tuple[float | None, str]:
    """``key`` of target ``num`` over target ``den`` in one cell, or None and why not."""
    rows = [(t, row(a, scenario, conc, t)) for t in (num, den)]
    for target, r in rows:
        if r is None:
            return None, f"{target} not run"
        if r.get("failed"):
            return None, f"{target} failed: {r['failed']}"
    (_, n), (_, d) = rows
    return (n[key] / d[key], "") if d and n and d[key] else (None, f"{den} measured 0")


def at_least(v: float | None, goal: float) -> bool | None:
    return None if v is None else v >= goal


def at_most(v: float | None, goal: float) -> bool | None:
    return None if v is None else v <= goal


def targets_verdict(a: dict[str, Any]) -> list[Verdict]:
    return [*throughput_verdicts(a), *latency_verdicts(a), *footprint_verdicts(a)]


def throughput_verdicts(a: dict[str, Any]) -> list[Verdict]:
    v, why = ratio(a, "chat", 16, "gateway", "litellm")
    out = [
        verdict(
            6,
            "throughput vs LiteLLM proxy, non-stream c=16",
            v,
            ">= 50x",
            at_least(v, 50),
            "x",
            why,
        )
    ]
    for scenario, concs in (("chat", (1, 16, 64)), ("stream", (1, 16, 64))):
        for conc in concs:
            v, why = ratio(a, scenario, conc, "gateway", "raw-asgi")
            if v is not None or "failed" in why:
                name = f"share of raw-ASGI ceiling, {LABELS[scenario]} c={conc}"
                out.append(verdict(6, name, pct(v), ">= 70 %", at_least(v, 0.7), "%", why))
    for scenario, conc in (("chat", 16), ("chat", 64), ("stream", 16)):
        v, why = ratio(a, scenario, conc, "gateway", "raw-http1")
        name = f"share of its own passthrough (raw-http1), {LABELS[scenario]} c={conc}"
        goal = f">= {RAW_HTTP1_SHARE * 100:.0f} %"
        out.append(verdict(18, name, pct(v), goal, at_least(v, RAW_HTTP1_SHARE), "%", why))
    for scenario, conc in (("chat", 1), ("stream", 1), ("embeddings", 16)):
        v, why = ratio(a, scenario, conc, "gateway", "raw-http1")
        if v is not None:
            name = f"share of its own passthrough (raw-http1), {LABELS[scenario]} c={conc}"
            out.append(verdict(18, name, pct(v), "(what auth, policy, audit cost)", None, "%"))
    summary = ((a["metas"].get("workers") or {}).get("workers") or {}).get("summary")
    if summary:
        v = summary["2"]["rps_median"] / summary["1"]["rps_median"]
        name = "serve --workers 2 / --workers 1, non-stream (unpinned)"
        out.append(verdict(18, name, v, "(scaling on this machine)", None, "x"))
    for scenario in ("chat", "stream"):
        v, why = ratio(a, scenario, 16, "gateway", "portkey")
        name = f"throughput vs Portkey's gateway, {LABELS[scenario]} c=16"
        out.append(verdict(18, name, v, "(a Node peer)", None, "x", why))
    return out


def latency_verdicts(a: dict[str, Any]) -> list[Verdict]:
    chunks = next((m["config"]["chunks"] for m in a["metas"].values()), 20)
    out = []
    v, why = ratio(a, "chat", 1, "gateway", "raw-http1", key="p99_ms")
    goal = f"<= {RAW_HTTP1_P99_FACTOR}x raw-http1's"
    name = "p99 vs its own passthrough (raw-http1), non-stream c=1"
    out.append(verdict(18, name, v, goal, at_most(v, RAW_HTTP1_P99_FACTOR), "x", why))
    n, s = added_p50(a, "chat"), added_p50(a, "stream")
    out.append(
        verdict(6, "added p50 vs direct, non-stream c=1", n, "<= 0.3 ms", at_most(n, 0.3), "ms")
    )
    v = None if s is None else s / chunks
    name = f"added p50 per streamed chunk, stream c=1 (whole added p50 / {chunks} chunks)"
    out.append(verdict(6, name, v, "<= 0.05 ms", at_most(v, 0.05), "ms"))
    v = None if s is None or n is None else (s - n) / chunks
    name = (
        "added p50 per streamed chunk beyond the per-request overhead "
        "((stream - non-stream added p50) / chunks)"
    )
    out.append(verdict(6, name, v, "<= 0.05 ms", at_most(v, 0.05), "ms"))
    return out


def added_p50(a: dict[str, Any], scenario: str) -> float | None:
    g = row(a, scenario, 1, "gateway")
    return None if g is None or g.get("failed") else g.get("added_p50_ms")


def footprint_verdicts(a: dict[str, Any]) -> list[Verdict]:
    s, i = a["startup"].get("gateway"), a["idle"].get("gateway")
    v = statistics.median(s) if s else None
    out = [
        verdict(
            6, "start to ready (no bundled model)", v, "< 1 s", None if v is None else v < 1, "s"
        )
    ]
    v = statistics.median(i) if i else None
    out.append(verdict(6, "idle RSS", v, "< 100 MB", None if v is None else v < 100, "MB"))
    soak = (a["metas"].get("soak") or {}).get("soak")
    v = soak.get("growth_mb_per_100k") if soak else None
    limit = SOAK_MAX_GROWTH_MB_PER_100K
    name = "RSS growth over soak (per 100k requests)"
    out.append(verdict(6, name, v, f"none (<= {limit} MB / 100k)", at_most(v, limit), "MB"))
    if soak and soak["requests"] < 1_000_000 and soak["seconds"] < 29 * 60:
        out[-1]["verdict"] += f" (short soak: {soak['requests']:,} requests, indicative only)"
    pm = ((a["metas"].get("micro") or {}).get("policy_micro") or {}).get("summary", {})
    v = pm.get("cached_decide_us")
    out.append(verdict(6, "cached policy decision", v, "<= 20 us", at_most(v, 20), "us"))
    v = pm.get("uncached_per_candidate_us")
    name = "uncached policy decision, per candidate"
    out.append(verdict(6, name, v, "<= 100 us", at_most(v, 100), "us"))
    return out


def pct(v: float | None) -> float | None:
    return None if v is None else 100 * v
