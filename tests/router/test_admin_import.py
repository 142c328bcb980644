"""``POST /admin/import`` on a real uvicorn server (httpx, SQLite and PostgreSQL) and
``provenance-router import`` as a real process: the diff as JSON, ``apply``, idempotency, the
admin scope, and bad input as one 400 in the OpenAI envelope (CLI: one line, status 1)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from registry.catalog import load_catalog
from registry.db import session_scope
from registry.service import read_all, registry_version, write_transaction
from router.admin import build_admin_app
from router.settings import Settings
from tests.servers import serve_app

ADMIN_KEY = "pr-admin-0123456789abcdefghijklmnopqrstuv"
INFERENCE_KEY = "pr-inference-0123456789abcdefghijklmnopq"
FIXTURES = Path(__file__).parents[1] / "registry/import_fixtures"
CONFIG = FIXTURES / "litellm/config.yaml"
CLI = Path(sys.executable).parent / "provenance-router"


@dataclass
class Admin:
    base_url: str
    engine: Engine
    hook_calls: list[int] = field(default_factory=list)

    def post(self, body: dict[str, Any], key: str = ADMIN_KEY) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=60.0) as client:
            return client.post("/admin/import", json=body)

    def version(self) -> int:
        with session_scope(self.engine) as session:
            return registry_version(session=session)


@pytest.fixture
def admin(engine: Engine, db_url: str, tmp_path: Path) -> Iterator[Admin]:
    load_catalog(engine)
    with write_transaction(engine=engine, actor="test-setup") as writer:
        writer.create("tenant", {"id": "ops"})
        writer.create_api_key(id="admin", tenant="ops", scopes=["admin"], raw_key=ADMIN_KEY)
        writer.create_api_key(id="app", tenant="ops", scopes=["inference"], raw_key=INFERENCE_KEY)
    calls: list[int] = []
    settings = Settings(
        database_url=db_url, import_digest_cache=tmp_path / "digests.json", _env_file=None
    )
    app = build_admin_app(engine, settings, on_change=lambda: calls.append(1))
    with serve_app(app) as base_url:
        yield Admin(base_url=base_url, engine=engine, hook_calls=calls)


def test_dry_run_returns_the_diff_and_apply_writes_it_once(admin: Admin) -> None:
    before = admin.version()

    dry = admin.post({"source": "litellm", "location": str(CONFIG)})

    assert dry.status_code == 200, dry.text
    diff = dry.json()
    assert diff["applied"] is False and diff["registry_version"] is None
    assert diff["summary"] == {"create": 10, "unchanged": 0, "exists": 0}
    assert admin.version() == before and admin.hook_calls == []

    applied = admin.post({"source": "litellm", "location": str(CONFIG), "apply": True})

    assert applied.status_code == 200, applied.text
    assert applied.json()["applied"] is True
    assert applied.json()["registry_version"] == admin.version() == before + 1
    assert admin.hook_calls == [1]  # the gateway reloads its snapshot
    with session_scope(admin.engine) as session:
        deployments = {d["id"]: d for d in read_all(session=session, kind="deployment")}
    assert deployments["litellm-gpt-4o"]["review_status"] == "under_review"

    again = admin.post({"source": "litellm", "location": str(CONFIG), "apply": True})

    assert again.json()["summary"] == {"create": 0, "unchanged": 10, "exists": 0}
    assert again.json()["registry_version"] is None and admin.hook_calls == [1]


def test_bad_input_is_400_in_the_envelope_naming_the_file(admin: Admin) -> None:
    before = admin.version()
    path = FIXTURES / "litellm/malformed.yaml"

    response = admin.post({"source": "litellm", "location": str(path), "apply": True})

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "invalid_value",
        "source",
    )
    assert error["message"].startswith(f"{path}: malformed YAML")
    assert admin.version() == before


def test_an_unknown_source_is_400(admin: Admin) -> None:
    response = admin.post({"source": "ftp", "location": "x"})

    assert response.status_code == 400 and response.json()["error"]["param"] == "source"


def test_import_needs_the_admin_scope(admin: Admin) -> None:
    response = admin.post({"source": "litellm", "location": str(CONFIG)}, key=INFERENCE_KEY)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"


def cli(*args: str, database_url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PROVENANCE_ROUTER_IMPORT_DIGEST_CACHE": str(tmp_path / "cli-digests.json"),
        "COLUMNS": "200",
    }
    command = [str(CLI), "import", *args, "--database-url", database_url]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_cli_shows_the_diff_then_applies_it(engine: Engine, db_url: str, tmp_path: Path) -> None:
    load_catalog(engine)

    dry = cli("litellm", str(CONFIG), database_url=db_url, tmp_path=tmp_path)

    assert dry.returncode == 0, dry.stderr
    assert "+ deployment[litellm-gpt-4o]" in dry.stdout
    assert "secret_ref: OPENAI_API_KEY" in dry.stdout
    assert "match Qwen/Qwen2.5-7B-Instruct -> Qwen/Qwen2.5-7B-Instruct (same; rule exact_id" in (
        dry.stdout
    )
    assert "suggestion qwen2.5:7b -> Qwen/Qwen2.5-7B (same; rule normalised_name" in dry.stdout
    assert "literal API key" in dry.stdout and "sk-ant-FAKE" not in dry.stdout
    assert "Dry run: 10 to create" in dry.stdout

    applied = cli("litellm", str(CONFIG), "--apply", database_url=db_url, tmp_path=tmp_path)

    assert applied.returncode == 0, applied.stderr
    assert "Applied: 10 to create" in applied.stdout
    again = cli("litellm", str(CONFIG), "--apply", database_url=db_url, tmp_path=tmp_path)
    assert "Applied: nothing new." in again.stdout
    assert "= route[gpt-4o] (unchanged)" in again.stdout


def test_cli_bad_input_is_one_line_and_status_1(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    path = FIXTURES / "litellm/malformed.yaml"

    result = cli("litellm", str(path), "--apply", database_url=db_url, tmp_path=tmp_path)

    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {path}: malformed YAML")
    assert len(result.stderr.strip().splitlines()) == 1
