"""``/healthz`` and ``/readyz``, unauthenticated: what a load balancer or Kubernetes asks every
replica every second or so. Both answer from state the gateway keeps anyway (no database round
trip per call: the version poll's last result is the database check).

- ``/healthz`` (liveness; ``/health`` is the same): 200 while the process serves HTTP.
- ``/readyz`` (readiness): 200 when the registry snapshot is loaded and confirmed fresh within
  ``max_staleness_s`` and the audit writer is healthy; else 503. The JSON body says which
  check failed, and summarizes the backends (circuits open in this process).

A database that stops answering does not make a replica not ready at once: every replica loses
the same database together, and taking them all out of the load balancer would turn a short
blip into an outage while they could still serve from their snapshots. The body reports it
(``database.reachable``); readiness follows the staleness bound, as ``/v1`` does.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from router.errors import MethodNotAllowed
from router.gateway import Gateway

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

LIVENESS_PATHS = frozenset({"/healthz", "/health"})
READINESS_PATH = "/readyz"
PROBE_PATHS = LIVENESS_PATHS | {READINESS_PATH}
_LIVE = orjson.dumps({"status": "ok"})


def readiness(gateway: Gateway) -> tuple[bool, dict[str, Any]]:
    """Whether this replica should receive traffic, and the checks that say so."""
    now = time.monotonic()
    settings = gateway.settings
    loaded = gateway.fresh_until > 0.0
    fresh = loaded and now <= gateway.fresh_until
    table = gateway.table if loaded else None
    audit_healthy = gateway.audit.healthy
    ok_at = gateway.database_ok_at
    checks: dict[str, Any] = {
        "snapshot": {
            "loaded": loaded,
            "fresh": fresh,
            "registry_version": table.registry_version if table else None,
            "policy_version": table.policy_version if table else None,
            "confirmed_s_ago": _ago(now, gateway.fresh_until - settings.max_staleness_s)
            if loaded
            else None,
            "max_staleness_s": settings.max_staleness_s,
        },
        "database": {
            "reachable": gateway.database_reachable,
            "last_ok_s_ago": _ago(now, ok_at) if ok_at is not None else None,
        },
        "audit": {
            "healthy": audit_healthy,
            "pending": gateway.audit.pending,
            "write_failing": gateway.audit.write_failing,
        },
        "backends": {
            "deployments": len(table.snapshot.deployments) if table else 0,
            "open_circuits": gateway.health.open_circuits(),
        },
    }
    ready = fresh and audit_healthy
    return ready, {"status": "ready" if ready else "not_ready", **checks}


def _ago(now: float, then: float) -> float:
    return round(max(0.0, now - then), 3)


async def serve_probe(gateway: Gateway, scope: MutableMapping[str, Any], send: Send) -> None:
    """Answer one probe request (GET or HEAD on one of ``PROBE_PATHS``)."""
    method = scope["method"]
    headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
    if method not in ("GET", "HEAD"):
        error = MethodNotAllowed(f"Invalid method {method}; use GET.", allow=("GET", "HEAD"))
        status, body = error.status, error.body()
        headers.append((b"allow", b"GET, HEAD"))
    elif scope["path"] == READINESS_PATH:
        ready, checks = readiness(gateway)
        status, body = (200 if ready else 503), orjson.dumps(checks)
    else:
        status, body = 200, _LIVE
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
