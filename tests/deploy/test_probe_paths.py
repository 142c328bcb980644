"""The paths the Dockerfile, compose file and Kubernetes probes ask (PROBE_PATHS, which their
own tests hold them to) are answered by a real gateway, without a key."""

from __future__ import annotations

from pathlib import Path

import httpx

from router.asgi import create_app
from router.settings import Settings
from tests.deploy.settings_names import PROBE_PATHS
from tests.servers import serve_app


def test_a_running_gateway_answers_every_probe_path(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'registry.db'}",
        admin_key="pr-probe-test-admin-key-0123456789",
        local_model=False,
        load_catalog=False,
        signing_key_dir=tmp_path / "signing",
        audit_journal_dir=tmp_path / "audit-journal",
        _env_file=None,  # type: ignore[call-arg]
    )
    with serve_app(create_app(settings), lifespan="on", settings=settings) as base_url:
        for path in PROBE_PATHS.values():
            response = httpx.get(f"{base_url}{path}", timeout=10)
            assert response.status_code == 200, f"{path}: {response.status_code}"
