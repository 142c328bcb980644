"""``provenance-router db status|upgrade`` on SQLite and PostgreSQL: a schema that is empty,
behind, current, or migrated by a newer version (refused in one line, nothing changed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from sqlalchemy import text
from typer.testing import CliRunner, Result

from registry.db import HEAD_REVISION, current_revision, migrate, run_alembic
from registry.errors import SchemaTooNew
from router.cli import app
from tests.conftest import Database, postgres_url

CLI = [sys.executable, "-c", "from router.cli import app; app()"]


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def status(database: Database) -> dict[str, str | None]:
    result = run("db", "status", "--json", "--database-url", database.url)
    assert result.exit_code == 0, result.output
    shown: dict[str, str | None] = json.loads(result.output)
    return shown


def test_upgrade_an_empty_database_then_nothing_to_do(blank_database: Database) -> None:
    assert status(blank_database)["state"] == "empty"
    assert run("db", "status", "--check", "--database-url", blank_database.url).exit_code == 1
    first = run("db", "upgrade", "--database-url", blank_database.url)
    assert first.exit_code == 0, first.output
    assert f"from revision (empty) to {HEAD_REVISION}" in first.output
    assert status(blank_database) | {"database": None} == {
        "database": None,
        "revision": HEAD_REVISION,
        "newest_known": HEAD_REVISION,
        "state": "current",
    }
    assert run("db", "status", "--check", "--database-url", blank_database.url).exit_code == 0
    again = run("db", "upgrade", "--database-url", blank_database.url)
    assert again.exit_code == 0 and "already at revision" in again.output


def test_upgrade_a_schema_left_behind(blank_database: Database) -> None:
    engine = blank_database.engine()
    try:
        run_alembic(engine, "upgrade", "0005")
    finally:
        engine.dispose()
    assert status(blank_database)["state"] == "behind"
    result = run("db", "upgrade", "--database-url", blank_database.url)
    assert result.exit_code == 0, result.output
    assert f"from revision 0005 to {HEAD_REVISION}" in result.output


def test_a_schema_from_a_newer_version_is_refused_in_one_line(blank_database: Database) -> None:
    engine = blank_database.engine()
    try:
        migrate(engine)
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '0999'"))
        assert status(blank_database)["state"] == "newer"
        # The real command line (CliRunner bypasses its one-line error reporting).
        done = subprocess.run(
            [*CLI, "db", "upgrade", "--database-url", blank_database.url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1 and not done.stdout
        assert done.stderr.startswith("error: the database schema is at revision 0999")
        assert len(done.stderr.splitlines()) == 1
        with pytest.raises(SchemaTooNew):  # what a starting gateway meets, before any change
            migrate(engine)
        assert current_revision(engine) == "0999"
    finally:
        engine.dispose()


def test_status_never_shows_the_database_password() -> None:
    # Trust authentication ignores the password, so the command succeeds and prints the URL.
    url = postgres_url().replace("postgres@", "postgres:s3cret-password@")
    result = run("db", "status", "--database-url", url)
    assert result.exit_code == 0, result.output
    assert "s3cret-password" not in result.output and "***" in result.output
