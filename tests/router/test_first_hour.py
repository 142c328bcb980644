"""Issue 17, the first hour: the commands a new user types work as written and fail cleanly.

The command line runs as a real process (``python -c 'from router.cli import app; app()'``,
what the ``provenance-router`` script does), so what is tested is what a terminal shows:
its exit status, its stderr, and no traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from registry.db import make_engine, migrate
from registry.service import write_transaction
from router.asgi import create_app
from router.settings import Settings
from tests.servers import serve_app

ROOT = Path(__file__).parents[2]
CLI = [sys.executable, "-c", "from router.cli import app; app()"]


def cli(*args: str | Path, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "100"}
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env
    )


def registry(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    engine = make_engine(url)
    migrate(engine)
    with write_transaction(engine=engine, actor="test") as writer:
        writer.create("tenant", {"id": "acme", "name": "Acme"})
        writer.create("organization", {"id": "meta", "name": "Meta"})
    engine.dispose()
    return url


# --- make serve: fast and offline once installed -------------------------------------------


def test_make_serve_installs_only_when_pyproject_changed(tmp_path: Path) -> None:
    """Old main reinstalled the package on every `make serve` (~5.5 s, and it failed offline)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").touch()
    stamp = venv / ".installed"

    def dry_run() -> str:
        done = subprocess.run(
            ["make", "-n", "--no-print-directory", "serve", f"VENV={venv}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "pip install" in dry_run()  # never installed
    stamp.touch()
    newer = (ROOT / "pyproject.toml").stat().st_mtime + 10
    os.utime(stamp, (newer, newer))
    assert dry_run().splitlines() == [f"{venv}/bin/provenance-router serve"]


# --- one-line errors, --version, help -------------------------------------------------------


def test_version() -> None:
    done = cli("--version")
    assert done.returncode == 0 and done.stdout.startswith("provenance-router ")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("policy", "activate", "99"), "error: policy version 99 not found"),
        (("policy", "list", "--database-url", "postgresql://x@127.0.0.1:1/none"), "database:"),
        (("restore", "/nonexistent/backup.db"), "error: no backup file"),
        (("policy", "explain", "--tenant", "acm", "--model", "x/y"), "did you mean 'acme'"),
    ],
)
def test_expected_failures_are_one_line_with_status_1(
    tmp_path: Path, args: tuple[str, ...], needle: str
) -> None:
    """Old main printed 24-line tracebacks for `policy activate 99` and a bad database URL."""
    url = registry(tmp_path)
    extra = () if "--database-url" in args else ("--database-url", url)
    done = cli(*args, *extra)
    assert done.returncode == 1, done
    assert needle in done.stdout + done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 1


def test_help_is_whole_sentences_without_type_noise() -> None:
    """Old main: summaries cut mid-sentence ("...user data dir,...") and `<bool>` on flags."""
    for args in ((), ("policy",)):
        done = cli(*args, "--help")
        assert done.returncode == 0 and done.stdout.startswith("Usage: provenance-router")
        commands = done.stdout.split("Commands:")[1]
        assert "..." not in commands and "<bool>" not in done.stdout


# --- SQLite: a clean shutdown leaves one file; backup and restore ---------------------------


def test_after_shutdown_the_db_file_alone_holds_the_registry(tmp_path: Path) -> None:
    """Old main: after shutdown `registry.db` had 0 tables, all data was in `registry.db-wal`,
    so copying the .db file as a backup silently copied an empty database."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    settings = Settings(
        database_url=url,
        local_model=False,
        admin_key="pr-test-admin-key-for-checkpoints-000",
        signing_key_dir=tmp_path / "signing",
        _env_file=None,  # type: ignore[call-arg]
    )
    with serve_app(create_app(settings), lifespan="on"):
        pass
    copy = tmp_path / "copy" / "registry.db"
    copy.parent.mkdir()
    shutil.copy(tmp_path / "registry.db", copy)  # the .db file only, as a naive backup does
    with sqlite3.connect(copy) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        organizations = connection.execute("SELECT count(*) FROM organizations").fetchone()
    assert {"organizations", "models", "policies", "api_keys"} <= tables
    assert organizations[0] > 0  # the catalog


def test_backup_and_restore_round_trip(tmp_path: Path) -> None:
    url = registry(tmp_path)
    backup = tmp_path / "backups" / "registry-backup.db"
    assert cli("backup", "-o", backup, "--database-url", url).returncode == 0
    engine = make_engine(url)
    with write_transaction(engine=engine, actor="test") as writer:
        writer.delete("tenant", "acme", expected_version=None)
    engine.dispose()
    done = cli("restore", backup, "--database-url", url)
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(tmp_path / "registry.db") as connection:
        tenants = [row[0] for row in connection.execute("SELECT id FROM tenants")]
    assert tenants == ["acme"]
    assert not (backup.parent / f"{backup.name}-wal").exists()


def test_backup_refuses_postgresql_with_guidance() -> None:
    from tests.conftest import postgres_url

    done = cli("backup", "-o", "/tmp/never.db", "--database-url", postgres_url())
    assert done.returncode == 1 and "pg_dump" in done.stderr


# --- serve: says where it listens; Ctrl-C is quiet -------------------------------------------


@pytest.mark.slow
def test_serve_says_where_it_listens_and_ctrl_c_is_quiet(tmp_path: Path) -> None:
    """Old main: the server never said it was listening, and Ctrl-C printed a
    KeyboardInterrupt traceback from the local model's child process."""
    env = {
        **os.environ,
        "PROVENANCE_ROUTER_DATABASE_URL": f"sqlite:///{tmp_path / 'registry.db'}",
        "PROVENANCE_ROUTER_SIGNING_KEY_DIR": str(tmp_path / "signing"),
        "PROVENANCE_ROUTER_PORT": "0",
    }
    env.pop("PROVENANCE_ROUTER_ADMIN_KEY", None)
    process = subprocess.Popen(
        [*CLI, "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: SIGINT to it is a terminal's Ctrl-C
    )
    try:
        assert process.stdout is not None
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if line.startswith("provenance-router listening on http://127.0.0.1:") or not line:
                break
        assert lines[-1].startswith("provenance-router listening on"), lines
        assert "admin key: printed above" in lines[-1]
        assert any(line.strip().startswith("pr-") for line in lines)  # the generated key
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode in (0, 130), stderr  # 130: "ended by Ctrl-C", the shell's way
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr


def test_what_if_json_names_the_deciding_rules(tmp_path: Path) -> None:
    """Old main: what-if printed changes without the rule or reason, and had no --json."""
    from registry.service import insert_decisions

    url = f"sqlite:///{tmp_path / 'registry.db'}"
    assert (
        cli(
            "apply", "-f", ROOT / "examples" / "policy-registry.yaml", "--database-url", url
        ).returncode
        == 0
    )
    engine = make_engine(url)
    verdict = [{"deployment": "llama-8b-us", "allowed": True, "rule_ids": ["baseline-approved"]}]
    insert_decisions(
        engine=engine,
        rows=[
            {
                "request_id": "req_1",
                "status": "ok",
                "tenant_id": "acme",
                "requested_model": "chat",
                "context": {"classification": "internal"},
                "candidates": verdict,
            }
        ],
    )
    engine.dispose()
    draft = tmp_path / "draft.yaml"
    draft.write_text("rules:\n  - id: no-us\n    deny: {location_country: [US]}\n")
    done = cli("policy", "what-if", draft, "--database-url", url, "--json")
    assert done.returncode == 0, done.stderr
    (change,) = json.loads(done.stdout)["changes"]
    assert change["newly_denied"][0]["rule_ids"] == ["no-us"]
    text = cli("policy", "what-if", draft, "--database-url", url).stdout
    assert "denied by no-us" in text
