"""The report: the table (table.md), the merged results.json, and publishing them."""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import shutil
import statistics
import time
from typing import Any

from bench.harness.analysis import analyse, load_parts
from bench.harness.config import ALL_TARGETS, CLIENT_CPU, HERE, ROOT, SERVER_CPU, log
from bench.harness.verdicts import targets_verdict


def fmt(x: float | None, nd: int = 2, suffix: str = "") -> str:
    return "-" if x is None else f"{x:,.{nd}f}{suffix}"


def render(a: dict[str, Any], out: str) -> str:
    """table.md: the run and machine, the cells, the servers, the micro-benchmarks, the soak,
    the workers, the targets of record, the profiles, the versions."""
    metas = a["metas"]
    L = render_header(a, out)
    L.append("")
    L.extend(render_cells(a["rows"]))
    L.extend(render_disturbed(a["rows"]))
    L.append("")
    L.extend(render_servers(a))
    pm = (metas.get("micro") or {}).get("policy_micro")
    if pm:
        L.extend(render_policy(pm))
    soak = (metas.get("soak") or {}).get("soak")
    if soak:
        L.extend(render_soak(soak))
    workers = (metas.get("workers") or {}).get("workers")
    if workers:
        L.extend(render_workers(workers))
    if any(m.get("audit_rows") for m in metas.values()):
        L.append("")
        L.append(
            "Audit rows written by the gateway (per part): "
            + "; ".join(f"{p}: {m['audit_rows']}" for p, m in metas.items() if m.get("audit_rows"))
        )
    L.append("")
    L.extend(render_verdicts(a))
    prof = (metas.get("profile") or {}).get("profiles")
    if prof:
        L.extend(render_profiles(prof, out))
    versions_ = next(iter(metas.values())).get("versions", {})
    L.append("")
    L.append("Versions: " + ", ".join(f"{k} {v}" for k, v in versions_.items()))
    return "\n".join(L) + "\n"


def render_header(a: dict[str, Any], out: str) -> list[str]:
    metas = a["metas"]
    any_meta = next(iter(metas.values()))
    cfg = any_meta["config"]
    preliminary = cfg["reps"] < 3 or cfg["duration"] < 10 or cfg.get("smoke")
    L = [
        f"Run: {os.path.relpath(out, ROOT) if out.startswith(ROOT) else out} - parts: "
        + "; ".join(f"{p} {m['started']} -> {m.get('finished', '?')}" for p, m in metas.items())
    ]
    if preliminary:
        L.append("")
        L.append(
            f"**PRELIMINARY** - short run ({cfg['reps']} rep(s) x {cfg['duration']} s per "
            "cell); not the figures of record."
        )
    L.append("")
    mach = any_meta.get("machine", {})
    L.append(
        f"Machine: {mach.get('cpu')} - {mach.get('cpus')} CPUs, {mach.get('mem_mb')} MB, "
        f"kernel {mach.get('kernel')}; servers pinned to CPU {SERVER_CPU}, mock + load "
        f"generator + driver on CPU {CLIENT_CPU} (pinned: {mach.get('pinned')})."
    )
    gens = sorted({r["generator"] for r in a["rows"] if r.get("generator")})
    L.append(
        f"Cells: median of {cfg['reps']} alternated run(s) x {cfg['duration']} s after "
        f"{cfg['warmup']} s warm-up; load generator: {', '.join(gens) or '-'}; stream = "
        f"{cfg['chunks']} content chunks (+ role, finish, [DONE])."
    )
    seed = next((m.get("gateway_seed") for m in metas.values() if m.get("gateway_seed")), None)
    if seed:
        c = seed["counts"]
        L.append(
            f"Gateway registry: {c['deployments']} deployments, {c['models']} models, "
            f"{c['organizations']} organizations, {c['routes']} routes; policy of "
            f"{seed['policy_rules']} YAML rules (+ built-in baseline); API-key auth; audit "
            "log on. Each benchmark route lists denied candidates first."
        )
    return L


def render_disturbed(rows: list[dict[str, Any]]) -> list[str]:
    disturbed = [r for r in rows if (r.get("cpu0_other_pct") or 0) > 10]
    if not disturbed:
        return []
    return [
        "",
        f"**Warning:** other processes used CPU 0 (the server's core) during "
        f"{len(disturbed)} of {len(rows)} cells (up to "
        f"{max(r['cpu0_other_pct'] for r in disturbed):.0f} % of it): those figures are "
        "disturbed; rerun on a quiet machine.",
    ]


def render_servers(a: dict[str, Any]) -> list[str]:
    L = [
        "| server | start to ready s (median; runs) | idle RSS MB (median) | peak RSS MB "
        "(VmHWM) | RSS after load MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for t in ALL_TARGETS[1:]:
        s, i = a["startup"].get(t), a["idle"].get(t)
        if not s and not i:
            continue
        L.append(
            f"| {t} | {fmt(statistics.median(s), 3) if s else '-'} "
            f"({', '.join(f'{x:.2f}' for x in s or [])}) | "
            f"{fmt(statistics.median(i), 1) if i else '-'} | {a['peak'].get(t, '-')} | "
            f"{a['after'].get(t, '-')} |"
        )
    return L


POLICY_MEASURES = (
    ("build_ms", "PolicyEngine.build (ms, once per registry/policy version)"),
    ("cached_decide_us", "decide(), cached"),
    ("cached_eligible_us", "eligible_deployments() over a route, cached"),
    ("cached_per_candidate_us", "  … per candidate"),
    ("uncached_decide_us", "decide(), uncached (1 candidate)"),
    ("uncached_eligible_us", "eligible_deployments(), uncached"),
    ("uncached_per_candidate_us", "  … per candidate"),
)


def render_policy(pm: dict[str, Any]) -> list[str]:
    s = pm["summary"]
    L = [
        "",
        f"Policy engine micro-benchmark (pinned to CPU {SERVER_CPU}; {pm['setup']}):",
        "",
        "| measure | us |",
        "|---|---:|",
    ]
    L.extend(f"| {label} | {s[k]:,.2f} |" for k, label in POLICY_MEASURES if k in s)
    return L


def render_soak(soak: dict[str, Any]) -> list[str]:
    return [
        "",
        f"Soak: {soak['requests']:,} requests in {soak['seconds']:.0f} s (chat, stream, "
        f"embeddings in turn, 10 s slices), errors {soak['errors']}; RSS "
        f"{soak['rss_start_mb']} -> {soak['rss_end_mb']} MB (max {soak['rss_max_mb']}); "
        f"growth {fmt(soak['growth_mb_per_100k'], 3)} MB per 100k requests "
        "(least squares after the first 10 % of requests and 60 s).",
    ]


def render_verdicts(a: dict[str, Any]) -> list[str]:
    L = ["| target | issue | goal | measured | verdict |", "|---|---:|---|---:|---|"]
    for v in targets_verdict(a):
        L.append(
            f"| {v['target']} | {v['issue']} | {v['goal']} | {fmt(v['value'], 3)} {v['unit']} "
            f"| {v['verdict']} |"
        )
    return L


SCENARIO_NAMES = {
    "chat": "non-stream",
    "stream": "stream",
    "delay50": "non-stream, 50 ms backend",
    "embeddings": "embeddings",
}


def render_cells(rows: list[dict[str, Any]]) -> list[str]:
    L = [
        "| scenario | conc | target | req/s | min-max | p50 ms | p99 ms | added p50 vs direct "
        "ms | vs raw-asgi | vs litellm | server CPU % | other load on CPU 0 % | errors |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        head = (
            f"| {SCENARIO_NAMES.get(r['scenario'], r['scenario'])} | {r['conc']} | {r['target']} | "
        )
        errors = f"{r['errors']}" + (
            f" (first: {r['first_error']})" if r.get("first_error") and not r.get("failed") else ""
        )
        if r.get("failed"):  # no rep produced figures: say why instead of a number
            L.append(head + f"failed: {r['failed']} |" + " - |" * 8 + f" {errors} |")
            continue
        L.append(
            head
            + f"{r['rps']:,.0f} | {r['rps_min']:,.0f}-{r['rps_max']:,.0f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {fmt(r['added_p50_ms'], 3)} | "
            f"{fmt(None if r['vs_raw'] is None else 100 * r['vs_raw'], 0, ' %')} | "
            f"{fmt(r['vs_litellm'], 1, 'x')} | {fmt(r['cpu_pct'], 0)}"
            f"{' (mock)' if r['target'] == 'direct' else ''} | "
            f"{fmt(r.get('cpu0_other_pct'), 0)} | {errors} |"
        )
    return L


def render_workers(w: dict[str, Any]) -> list[str]:
    """``serve --workers 1`` vs ``2``: medians over the reps, and how each rep's requests were
    spread over the worker processes (one audit chain per process)."""
    runs = w["runs"]
    L = [
        "",
        f"`serve --workers N` (`bench/workers.py`; non-stream chat, c={w['conc']}, "
        f"{len(runs) // 2} alternated rep(s); nothing pinned: the workers, the mock and the load "
        f"generator share the machine's {w['cpus']} CPUs):",
        "",
        "| workers | req/s (median) | p50 ms | p99 ms | audit rows per worker (warm-up "
        "included), each rep |",
        "|---:|---:|---:|---:|---|",
    ]
    for n, s in w["summary"].items():
        shares = "; ".join(
            "/".join(f"{c:,}" for c in r["requests_per_worker"])
            for r in runs
            if str(r["workers"]) == n
        )
        L.append(
            f"| {n} | {s['rps_median']:,.0f} | {s['p50_ms_median']:.2f} | "
            f"{s['p99_ms_median']:.2f} | {shares} |"
        )
    return L


def render_profiles(prof: dict[str, Any], out: str) -> list[str]:
    """Where the CPU goes, per profile: share of on-CPU (GIL-holding) samples by stage,
    recomputed from the raw py-spy files when they are still in ``out``."""
    from bench import pyspy_summary

    stages: dict[str, dict[str, float]] = {}
    for key, p in prof.items():
        raw = os.path.join(out, p.get("raw", ""))
        if p.get("raw") and os.path.exists(raw):
            p["layers"] = pyspy_summary.summarise(pyspy_summary.parse(raw))
        stages[key] = (p.get("layers") or {}).get("stages_pct", {})
    names: list[str] = []
    for st in stages.values():
        names.extend(n for n in st if n not in names)
    keys = sorted(prof, key=profile_order)
    L = [
        "",
        "py-spy (`record --gil --nonblocking`, 100 Hz): share of on-CPU samples by stage, "
        "first match over the whole stack (summaries: `pyspy_*.summary.txt`); each gateway "
        "column sits next to the same load on its own passthrough (raw-http1) and the raw-ASGI "
        "ceiling",
        "",
    ]
    L.append("| stage | " + " | ".join(keys) + " |")
    L.append("|---|" + "---:|" * len(keys))
    L.append(
        "| req/s under the profiler | "
        + " | ".join(str(prof[k].get("rps_under_profiler", "-")) for k in keys)
        + " |"
    )
    L.append(
        "| server CPU per request, us (whole process) | "
        + " | ".join(fmt(prof[k].get("cpu_us_per_request"), 0) for k in keys)
        + " |"
    )
    for n in names:
        L.append(f"| {n} | " + " | ".join(fmt(stages[k].get(n), 1) for k in keys) + " |")
    return L


def profile_order(key: str) -> tuple[int, int, int]:
    """gateway/chat/c16, raw-http1/chat/c16, raw-asgi/chat/c16, gateway/stream/c16, ..."""
    name, kind, conc = key.split("/")
    kinds, names = ("chat", "stream", "embed"), ("gateway", "raw-http1", "raw-asgi")
    return (
        -int(conc.lstrip("c")),
        kinds.index(kind) if kind in kinds else 9,
        names.index(name) if name in names else 9,
    )


def report(out: str, publish: bool = False) -> str:
    parts = load_parts(out)
    if not parts:
        raise SystemExit(f"no results-*.json in {out}")
    a = analyse(parts)
    text = render(a, out)
    merged = {
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "rows": a["rows"],
        "startup_s": a["startup"],
        "rss_idle_mb": a["idle"],
        "rss_peak_mb": a["peak"],
        "targets": targets_verdict(a),
        "parts": parts,
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(merged, f, indent=1, default=str)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(text)
    if publish:
        publish_results(out, a, text, merged)
    return text


BEGIN, END = "<!-- BEGIN bench results (bench/run.py) -->", "<!-- END bench results -->"


def publish_results(out: str, a: dict[str, Any], text: str, merged: dict[str, Any]) -> None:
    """bench/results/<date>[-preliminary]/ (JSON, table, profile summaries) + docs section."""
    cfg = next(iter(a["metas"].values()))["config"]
    prelim = cfg["reps"] < 3 or cfg["duration"] < 10
    name = dt.date.today().isoformat() + ("-preliminary" if prelim else "")
    dest = os.path.join(HERE, "results", name)
    os.makedirs(dest, exist_ok=True)
    with open(os.path.join(dest, "results.json"), "w") as f:
        json.dump(merged, f, indent=1, default=str)
    with open(os.path.join(dest, "table.md"), "w") as f:
        f.write(text)
    for fn in glob.glob(os.path.join(out, "pyspy_*.summary.txt")):
        shutil.copy(fn, dest)
    doc = os.path.join(ROOT, "docs", "benchmarks.md")
    rel = os.path.relpath(dest, ROOT)
    block = (
        f"{BEGIN}\n### {'Preliminary figures' if prelim else 'Figures'} "
        f"({dt.date.today().isoformat()}, `{rel}/`)\n\n{text}{END}"
    )
    if os.path.exists(doc):
        with open(doc) as f:
            current = f.read()
        if BEGIN in current and END in current:
            head, rest = current.split(BEGIN, 1)
            current = head + block + rest.split(END, 1)[1]
        else:
            current = current.rstrip("\n") + "\n\n" + block + "\n"
    else:
        current = "# Benchmarks\n\n" + block + "\n"
    with open(doc, "w") as f:
        f.write(current)
    log(f"published {rel}/ and docs/benchmarks.md")
