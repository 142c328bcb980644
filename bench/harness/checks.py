"""Before measuring, one request per target and kind of request is validated: status, content,
SSE framing ending in ``[DONE]``, embeddings, and for the gateway the ``x-provenance-*``
headers naming an allowed deployment (and a wrong key answered 401).

A peer that fails a check (Portkey's streaming on Node 20 answered ``TypeError: immutable``) is
recorded with the error it gave and skipped for that kind of request: its cells say "failed"
instead of the run stopping. The gateway and the floor failing still stop the run: without them
the run measures nothing.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

from bench.harness.config import BODIES, ENDPOINT, REQUIRED_TARGETS, log
from bench.harness.procs import http
from bench.harness.targets import Bench, Target

# "TypeError: immutable", "Error: connect ECONNREFUSED ...", "ValueError: ..." in a server log
LOGGED_ERROR = re.compile(r"\b(\w*(?:Error|Exception): [^\n]{1,160})")


def check(bench: Bench, target: Target, kind: str) -> dict[str, Any]:
    """One request, validated; a failure adds ``error``: what the server said went wrong."""
    log_path = bench.runner.logfile(target.proc) if target.proc else ""
    log_start = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    body = json.dumps(BODIES[kind]).encode()
    t0 = time.perf_counter()
    st, headers, data = http(
        "POST", bench.target_url(target, kind), body, target.auth, headers=target.headers(kind)
    )
    info: dict[str, Any] = {"status": st, "ms": round((time.perf_counter() - t0) * 1000, 2)}
    ok = st == 200 and valid_body(kind, data, info)
    if target.name == "gateway":
        ok = valid_provenance(bench, kind, headers, info) and ok
    if not ok:
        time.sleep(0.3)  # a server may log the error just after answering
        info["error"] = failure_text(st, data, logged_error(log_path, log_start))
        info["response"] = data[:400].decode(errors="replace")
    return info


def valid_body(kind: str, data: bytes, info: dict[str, Any]) -> bool:
    try:
        if kind == "stream":
            events = [ln for ln in data.decode().splitlines() if ln.startswith("data:")]
            info["sse_events"] = len(events)
            return bool(events) and events[-1].strip() == "data: [DONE]"
        if kind == "embed":
            vec = json.loads(data)["data"][0]["embedding"]
            info["embedding"] = f"{len(vec)} floats" if isinstance(vec, list) else "base64"
            return True
        info["content_chars"] = len(json.loads(data)["choices"][0]["message"]["content"])
        return True
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def valid_provenance(
    bench: Bench, kind: str, headers: dict[str, str], info: dict[str, Any]
) -> bool:
    prov = {k: v for k, v in headers.items() if k.startswith("x-provenance-")}
    prov["x-request-id"] = headers.get("x-request-id", "")
    info["headers"] = prov
    decisions = bench.meta["gateway_seed"]["decisions"][BODIES[kind]["model"]]
    allowed = [d for d, verdict in decisions.items() if verdict == "allow"]
    return prov.get("x-provenance-deployment") in allowed


def logged_error(path: str, start: int) -> str:
    """The first error a server wrote to its log since ``start`` (a byte offset), if any."""
    if not path or not os.path.exists(path):
        return ""
    with open(path, "rb") as f:
        f.seek(start)
        found = LOGGED_ERROR.search(f.read(200_000).decode(errors="replace"))
    return found.group(1).strip() if found else ""


def failure_text(status: int, data: bytes, logged: str) -> str:
    """One line for the table: the error the server logged, else the body's message."""
    said = logged or body_message(data) or "no error text"
    return said if status == 200 else f"HTTP {status}: {said}"


def body_message(data: bytes) -> str:
    try:
        doc = json.loads(data)
    except ValueError:
        return data[:160].decode(errors="replace").strip().splitlines()[0] if data.strip() else ""
    if not isinstance(doc, dict):
        return ""
    error = doc.get("error")
    message = error.get("message") if isinstance(error, dict) else None
    return str(message or doc.get("message") or doc.get("html-message") or "")[:160]


def check_all(bench: Bench) -> None:
    checks = bench.meta["checks"]
    for name, target in bench.targets.items():
        for kind in ENDPOINT:
            info = checks[f"{name}/{kind}"] = check(bench, target, kind)
            if "error" in info and name in REQUIRED_TARGETS:
                raise RuntimeError(f"check failed for {name}/{kind}: {info}")
            if "error" in info:
                log(f"check failed for {name}/{kind}, its cells are skipped: {info['error']}")
    if "gateway" in bench.targets:
        g = bench.targets["gateway"]
        st, _, data = http(
            "POST", g.url("chat"), json.dumps(BODIES["chat"]).encode(), "sk-wrong-key"
        )
        checks["gateway/bad-key"] = {"status": st}
        if st != 401:
            raise RuntimeError(f"gateway accepted a wrong key: {st} {data[:200]!r}")
    log("checks passed:", ", ".join(k for k, v in checks.items() if "error" not in v))


def failed_check(bench: Bench, name: str, kind: str) -> str | None:
    info = bench.meta["checks"].get(f"{name}/{kind}") or {}
    return info.get("error")
