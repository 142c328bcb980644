"""Run a real ASGI app under uvicorn on 127.0.0.1, port 0, in a background thread.

    with serve_app(app) as base_url:
        httpx.get(f"{base_url}/admin/version", ...)

The OS picks a free port (no collisions between parallel tests); startup is awaited through
uvicorn's own ``started`` flag and shutdown through ``should_exit`` and a thread join: no
sleeps, nothing left running after the block.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import uvicorn

from router.server import server_config
from router.settings import Settings

STARTUP_TIMEOUT_S = 30.0


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:
        """Signals belong to the test runner's main thread."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: Any = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.ready.set()


@contextmanager
def serve_app(
    app: Any, *, lifespan: Literal["auto", "on", "off"] = "auto", settings: Settings | None = None
) -> Iterator[str]:
    """Serve ``app``; yields its base URL, e.g. ``http://127.0.0.1:54321``. On uvloop, as
    ``provenance-router serve`` runs; with ``settings``, with the server limits ``serve``
    configures from them (:func:`router.server.server_config`)."""
    options: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "lifespan": lifespan}
    if settings is not None:
        config = server_config(app, settings, log_level="warning", **options)
    else:
        config = uvicorn.Config(app, log_level="warning", loop="uvloop", **options)
    server = _Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test-server", daemon=True)
    thread.start()
    try:
        if not server.ready.wait(STARTUP_TIMEOUT_S) or not server.started:
            raise RuntimeError("the test server did not start")
        yield f"http://127.0.0.1:{_port(server)}"
    finally:
        server.should_exit = True
        thread.join(STARTUP_TIMEOUT_S)


def _port(server: uvicorn.Server) -> int:
    for listener in server.servers:
        for sock in listener.sockets:
            return int(sock.getsockname()[1])
    raise RuntimeError("the test server has no listening socket")
