"""The ASGI application: a small dispatcher in front of FastAPI.

``/v1/*`` (the OpenAI surface, the hot path), the probes ``/healthz`` (alias ``/health``) and
``/readyz`` (``router.probes``) and ``/metrics`` (``router.metrics``) are served as plain ASGI;
everything else (``/admin/*``, the console at ``/console``, ``/docs``, ``/openapi.json``) goes
to the FastAPI admin app. The dispatcher owns the lifespan: bootstrap the registry, start the
gateway, stop it cleanly.

Run with ``uvicorn --factory router.asgi:create_app`` or ``provenance-router serve``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from registry.db import checkpoint
from router.bootstrap import bootstrap
from router.gateway import Gateway
from router.metrics import scrape
from router.openai.serving import serve_v1
from router.probes import PROBE_PATHS, serve_probe
from router.settings import Settings, registry_engine

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("provenance_router")


class GatewayApp:
    def __init__(self, gateway: Gateway, build_admin: Callable[[], ASGIApp]) -> None:
        self.gateway = gateway
        self._build_admin = build_admin
        self._admin: ASGIApp | None = None
        self.bootstrap_key: str | None = None  # a generated admin key, shown once at start

    @property
    def admin(self) -> ASGIApp:
        """The FastAPI admin app, built (and FastAPI imported) on the first request that needs
        it: a gateway that only serves /v1 never pays its ~8 MB. Building is synchronous, so
        two first requests cannot both build it."""
        if self._admin is None:
            self._admin = self._build_admin()
        return self._admin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and scope["path"].startswith("/v1/"):
            await serve_v1(self.gateway, scope, receive, send)
        elif kind == "http" and scope["path"] in PROBE_PATHS:
            await serve_probe(self.gateway, scope, send)
        elif kind == "http" and scope["path"] == "/metrics" and self.gateway.telemetry.metrics:
            await self._metrics(scope, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.admin(scope, receive, send)

    async def _metrics(self, scope: Scope, send: Send) -> None:
        """Prometheus' scrape (docs/observability.md); a token guards it when one is set."""
        gateway, token = self.gateway, self.gateway.settings.metrics_token
        metrics = gateway.telemetry.metrics
        assert metrics is not None
        authorization = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        status, content_type, body = await asyncio.to_thread(
            scrape,
            metrics,
            gateway.state(),
            token.get_secret_value() if token else None,
            authorization,
        )
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._startup()
                except Exception as error:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.gateway.stop()
                # SQLite: leave one self-contained .db file behind (a copy of it is a backup).
                await asyncio.to_thread(checkpoint, self.gateway.engine)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _startup(self) -> None:
        gateway = self.gateway
        self.bootstrap_key = await asyncio.to_thread(bootstrap, gateway.engine, gateway.settings)
        if self.bootstrap_key:  # shown once, on purpose, to the operator's terminal
            print(
                "\nprovenance-router: created admin API key (shown only once):\n"
                f"  {self.bootstrap_key}\n",
                flush=True,  # before a supervisor's "listening" line (serve --workers)
            )
        await gateway.start()
        settle_memory()
        # The event loop shares the GIL with the audit writer's thread; a thread that holds it
        # keeps it up to the switch interval (5 ms by default) while the loop waits, which was
        # the p99 latency at low concurrency. 1 ms bounds that wait.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


GIL_SWITCH_INTERVAL_S = 0.001


def settle_memory() -> None:
    """After startup: free its garbage, then move everything still alive (modules, catalog,
    registry snapshot: it lives as long as the process) out of the collector's sight, so full
    collections stop walking it (measured: p99 54 -> 9.5 ms under load)."""
    gc.collect()
    gc.freeze()


def create_app(
    settings: Settings | None = None, *, local_urls: dict[str, str] | None = None
) -> GatewayApp:
    """The app; ``local_urls`` (alias -> base URL) names local model servers already running
    (``serve --workers N`` starts the bundled one once, for all workers)."""
    settings = settings or Settings()
    engine = registry_engine(settings)
    gateway = Gateway(settings, engine)
    gateway.local_urls.update(local_urls or {})

    def build_admin() -> ASGIApp:
        from router.admin import build_admin_app
        from router.admin.policies import policy_router
        from router.admin.reports import reports_router
        from router.admin.signing import signing_router
        from router.admin.spend import spend_router
        from router.console import mount_console

        admin = build_admin_app(
            engine,
            settings,
            on_change=gateway.reload,
            on_key_use=gateway.key_usage.touch,
            extra_routers=[
                policy_router(lambda: gateway.table),
                reports_router(lambda: gateway.table),
                signing_router(lambda: gateway.signer),
                spend_router(lambda: gateway.table),
            ],
        )
        mount_console(admin, lambda: gateway.table, lambda: gateway.signer)
        return admin

    return GatewayApp(gateway, build_admin)
