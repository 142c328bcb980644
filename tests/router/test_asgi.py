"""The dispatcher builds the FastAPI admin app only when a request needs it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from router.asgi import create_app
    from router.settings import Settings

    KEY = "pr-admin-key-for-the-lazy-admin-test"

    async def call(app, path, method="GET"):
        sent = []
        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}
        async def send(message):
            sent.append(message)
        scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
                 "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
                 "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1),
                 "headers": [(b"authorization", b"Bearer " + KEY.encode())]}
        await app(scope, receive, send)
        return sent[0]["status"]

    async def main():
        app = create_app(
            Settings(
                database_url=sys.argv[1],
                local_model=False,
                admin_key=KEY,
                signing_key_dir=sys.argv[2],
            )
        )
        startup = [{"type": "lifespan.startup"}]
        forever = asyncio.Event()
        async def lifespan_receive():
            if startup:
                return startup.pop()
            await forever.wait()
        async def lifespan_send(message):
            assert message["type"] == "lifespan.startup.complete", message
            started.set()
        started = asyncio.Event()
        lifespan = asyncio.create_task(app({"type": "lifespan"}, lifespan_receive, lifespan_send))
        await started.wait()
        assert await call(app, "/v1/models") == 200
        assert "fastapi" not in sys.modules, "the /v1 path imported FastAPI"
        assert await call(app, "/admin/version") == 200
        assert "fastapi" in sys.modules
        await app.gateway.stop()
        lifespan.cancel()
        print("ok")

    asyncio.run(main())
    """
)


def test_v1_never_loads_the_admin_app_and_admin_still_works(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            f"sqlite:///{tmp_path / 'registry.db'}",
            str(tmp_path / "signing"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
