"""``provenance-router keys ...`` end to end, on SQLite and PostgreSQL: keys created, rotated
and revoked by the command line on the registry database, used against a gateway running on
that same database with the official SDK (the gateway hears of each change by its change
signal). Raw keys are printed once; ``list``/``show`` print no hash."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
from typer.testing import CliRunner, Result

from registry.keys import hash_key
from registry.service import NotFoundError, ValidationFailed, write_transaction
from router.asgi import create_app
from router.cli import app
from router.cli_keys import parse_duration
from router.settings import Settings
from tests.conftest import Database
from tests.fakes import FakeUpstream
from tests.router.conftest import deployment, wait_for
from tests.servers import serve_app

PROMPT: list[Any] = [{"role": "user", "content": "hi"}]


def run(*args: str) -> Result:
    return CliRunner().invoke(app, ["keys", *args])


def succeeded(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def as_json(result: Result) -> Any:
    return json.loads(succeeded(result))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 2_592_000), ("12h", 43_200), ("15m", 900), ("90s", 90), ("1d12h", 129_600), ("0", 0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_a_bad_duration_is_a_usage_error(database: Database) -> None:
    result = run(
        "create", "x", "--tenant", "t", "--expires-in", "3q", "--database-url", database.url
    )
    assert result.exit_code == 2 and "not a duration" in result.output


def test_create_use_rotate_revoke(database: Database, tmp_path: Path) -> None:
    admin_key = f"pr-test-admin-{uuid.uuid4().hex}"
    settings = Settings(
        database_url=database.url,
        admin_key=admin_key,
        local_model=False,
        load_catalog=False,
        snapshot_poll_s=60.0,  # changes arrive by the change signal
        signing_key_dir=tmp_path / "signing",
        audit_journal_dir=tmp_path / "journal",
    )
    db = ("--database-url", database.url)
    with FakeUpstream() as up:
        gateway = create_app(settings)
        with serve_app(gateway, lifespan="on", settings=settings) as url:
            _routes(gateway.gateway.engine, up)

            def client(key: str) -> openai.OpenAI:
                return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)

            def works(key: str) -> bool:
                try:
                    client(key).chat.completions.create(model="chat", messages=PROMPT)
                except openai.AuthenticationError:
                    return False
                return True

            expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
            options = [
                *("--tenant", "default", "--scope", "inference", "--owner", "CI team"),
                *("--description", "nightly builds", "--expires-at", expires.isoformat()),
                *("--allow-route", "chat", "--json"),
            ]
            created = as_json(run("create", "ci-bot", *options, *db))
            first = created["key"]
            assert created["owner"] == "CI team" and created["allowed_routes"] == ["chat"]
            assert datetime.fromisoformat(created["expires_at"]) == expires
            wait_for(lambda: works(first), what="the gateway to hear of the new key")
            with pytest.raises(openai.PermissionDeniedError):  # its allow-list: chat only
                client(first).chat.completions.create(model="acme/alpha", messages=PROMPT)

            rotated = as_json(run("rotate", "ci-bot", "--grace", "1h", "--json", *db))
            second = rotated["key"]
            assert second != first and rotated["id"] == "ci-bot"
            wait_for(lambda: works(second), what="the gateway to hear of the rotation")
            assert works(first)  # within its grace period

            rotated = as_json(run("rotate", "ci-bot", "--grace", "0", "--json", *db))
            third = rotated["key"]
            wait_for(lambda: not works(second), what="the old key to stop (no grace)")
            assert works(third) and not works(first)

            listed = succeeded(run("list", *db))
            shown = succeeded(run("show", "ci-bot", *db))
            for output in (listed, shown):
                assert "ci-bot" in output
                for raw in (first, second, third):
                    assert raw not in output and hash_key(raw) not in output
            assert "owner: CI team" in shown and "state: active" in shown
            keys = as_json(run("list", "--tenant", "default", "--json", *db))
            assert {k["id"] for k in keys} == {"admin-configured", "ci-bot"}

            assert "revoked key ci-bot" in succeeded(run("revoke", "ci-bot", *db))
            wait_for(lambda: not works(third), what="the gateway to hear of the revocation")
            assert "state: revoked" in succeeded(run("show", "ci-bot", *db))


def test_registry_errors_end_the_command(database: Database) -> None:
    """Registry errors (reported in one line by ``router.cli.CommandLine``), nothing written."""
    db = ("--database-url", database.url)
    result = run("create", "x", "--tenant", "nobody", *db)
    assert isinstance(result.exception, ValidationFailed), result.output
    assert "no tenant 'nobody'" in str(result.exception)
    assert isinstance(run("rotate", "nobody", *db).exception, NotFoundError)
    assert as_json(run("list", "--json", *db)) == []


def _routes(engine: Any, up: FakeUpstream) -> None:
    with write_transaction(engine=engine, actor="tests") as w:
        w.create(
            "organization",
            {"id": "acme", "name": "Acme", "hq_country": "US", "claim": {"confidence": "reported"}},
        )
        w.create(
            "license",
            {"id": "MIT", "name": "MIT License", "osi_approved": True, "open_weights": True},
        )
        w.create(
            "model",
            {
                "id": "acme/alpha",
                "developer": "acme",
                "license": "MIT",
                "review_status": "approved",
            },
        )
        w.create("deployment", deployment("alpha-us", up.base_url))
        w.create("route", {"name": "chat", "candidates": ["alpha-us"]})
