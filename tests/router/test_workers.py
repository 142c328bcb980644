"""Issue 18, every core: ``provenance-router serve --workers 2`` as a real process.

The command line starts on a blank registry (first start: setup runs once, one admin key is
printed, then the parent's listening line), a fake upstream is registered through the admin
API, and the official ``openai`` SDK sends requests over fresh connections until responses
from both worker processes were seen: each worker has its own audit chain, so the audit rows
of the responses tell which process served each. Then SIGTERM: every worker drains and
flushes, the command exits 0 without a traceback, and every response a client received has
its audit row, in a log that verifies (both chains closed by a signed checkpoint).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from typer.testing import CliRunner

from registry.audit_store import checkpoints, iter_rows
from router.cli import app
from tests.conftest import Database
from tests.fakes import FakeUpstream
from tests.router.conftest import REPORTED, deployment, wait_for

CLI = [sys.executable, "-c", "from router.cli import app; app()"]
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
DEADLINE_S = 40.0


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


def start_serve(database: Database, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    """``serve --workers 2`` on port 0 (the parent binds once; the workers share the socket),
    strict audit (one journal per worker in a shared directory), a first start."""
    env = {
        **os.environ,
        "PROVENANCE_ROUTER_DATABASE_URL": database.url,
        "PROVENANCE_ROUTER_PORT": "0",
        "PROVENANCE_ROUTER_LOAD_CATALOG": "false",
        "PROVENANCE_ROUTER_SNAPSHOT_POLL_S": "0.1",
        "PROVENANCE_ROUTER_AUDIT_FLUSH_S": "0.05",
        "PROVENANCE_ROUTER_AUDIT_DURABILITY": "strict",
        "PROVENANCE_ROUTER_AUDIT_JOURNAL_DIR": str(tmp_path / "journal"),
        "PROVENANCE_ROUTER_SIGNING_KEY_DIR": str(tmp_path / "signing"),
    }
    env.pop("PROVENANCE_ROUTER_ADMIN_KEY", None)
    return subprocess.Popen(
        [*CLI, "serve", "--workers", "2", *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    """The command lines a test starts; any still running at its end is killed."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def read_banner(process: subprocess.Popen[str]) -> list[str]:
    """stdout up to the listening line."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if line.startswith("provenance-router listening on") or not line:
            break
    assert lines[-1].startswith("provenance-router listening on http://127.0.0.1:"), lines
    return lines


def register_upstream(base_url: str, admin_key: str, up: FakeUpstream) -> str:
    """Through the admin API (served by whichever worker accepts): a model, its deployment on
    the fake upstream, a route, and an inference key (returned)."""
    entities = [
        ("organizations", {"id": "acme", "name": "Acme", "hq_country": "US", "claim": REPORTED}),
        (
            "licenses",
            {"id": "Apache-2.0", "name": "Apache", "osi_approved": True, "claim": REPORTED},
        ),
        (
            "models",
            {
                "id": "acme/alpha",
                "name": "Alpha",
                "developer": "acme",
                "license": "Apache-2.0",
                "review_status": "approved",
                "claim": REPORTED,
            },
        ),
        ("deployments", deployment("fake-us", up.base_url)),
        ("routes", {"name": "busy", "candidates": ["fake-us"]}),
    ]
    headers = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30.0) as admin:
        for plural, body in entities:
            response = admin.post(f"/admin/{plural}", json=body)
            assert response.status_code == 201, response.text
        created = admin.post(
            "/admin/api-keys", json={"id": "apps", "tenant": "default", "scopes": ["inference"]}
        )
        assert created.status_code == 201, created.text
        return str(created.json()["key"])


def chains_of(database: Database, request_ids: set[str]) -> dict[str, str] | None:
    """request id -> audit chain id, once every one of ``request_ids`` is stored."""
    engine = database.engine()
    try:
        rows = {row["request_id"]: row["chain_id"] for row in iter_rows(engine)}
    finally:
        engine.dispose()
    if not request_ids <= rows.keys():
        return None
    return {rid: rows[rid] for rid in request_ids}


def drive_until_both_workers_answered(
    database: Database, client: openai.OpenAI, model: str
) -> tuple[set[str], dict[str, str]]:
    """Requests until the audit rows of the responses show two chains (two processes).
    Returns the request ids received and each one's chain."""
    received: set[str] = set()
    seen: dict[str, str] = {}

    def both_workers_answered() -> bool:
        for _ in range(20):
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model=model, messages=MESSAGES, max_tokens=4
                )
            except (openai.NotFoundError, openai.AuthenticationError):
                continue  # a worker that has not yet polled the new key or route (0.1 s)
            assert raw.parse().choices[0].message.content
            received.add(raw.headers["x-request-id"])
        seen.update(wait_for(lambda: chains_of(database, received), what="audit rows"))
        return len(set(seen.values())) == 2

    wait_for(both_workers_answered, timeout_s=DEADLINE_S, what="answers from both workers")
    return received, seen


def fresh_connections(base_url: str, key: str) -> openai.OpenAI:
    """The SDK, opening a new connection per request (``Connection: close``), so that both
    processes get to accept."""
    return openai.OpenAI(
        base_url=f"{base_url}/v1",
        api_key=key,
        max_retries=0,
        timeout=30.0,
        default_headers={"Connection": "close"},
    )


def stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM: every worker drains and flushes; the command exits 0, quietly."""
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr


def test_two_workers_serve_one_port_and_stop_together(
    blank_database: Database,
    up: FakeUpstream,
    tmp_path: Path,
    started: list[subprocess.Popen[str]],
) -> None:
    gateway = start_serve(blank_database, tmp_path, "--no-local-model")
    started.append(gateway)
    lines = read_banner(gateway)
    keys = [line.strip() for line in lines if line.strip().startswith("pr-")]
    assert len(keys) == 1, lines  # setup ran once: one generated admin key, before the banner
    base_url = lines[-1].split()[3]
    assert "2 workers" in lines[-1]
    inference_key = register_upstream(base_url, keys[0], up)

    client = fresh_connections(base_url, inference_key)
    received, seen = drive_until_both_workers_answered(blank_database, client, "busy")
    stop(gateway)

    # after the stop: every response received has its row, both chains closed and verifying
    assert chains_of(blank_database, received) is not None
    engine = blank_database.engine()
    try:
        closed = {c["chain_id"] for c in checkpoints(engine) if c["kind"] == "close"}
    finally:
        engine.dispose()
    assert set(seen.values()) <= closed
    assert not list((tmp_path / "journal").iterdir())  # each worker removed its own journal
    verified = CliRunner().invoke(
        app,
        [
            "audit",
            "verify",
            "--database-url",
            blank_database.url,
            "--keys",
            str(tmp_path / "signing"),
        ],
    )
    assert verified.exit_code == 0, verified.output


def processes() -> dict[int, tuple[int, list[bytes]]]:
    """Every process: pid -> (parent pid, command line)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            continue
        found[int(entry.name)] = (parent, command)
    return found


def children(pid: int, marker: bytes) -> list[int]:
    """The child processes of ``pid`` whose command line mentions ``marker``."""
    return [
        child
        for child, (parent, command) in processes().items()
        if parent == pid and any(marker in part for part in command)
    ]


def test_a_dead_worker_stops_the_service(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    """A gateway never runs on with fewer workers than asked, unnoticed: the parent stops the
    other worker and exits 1, naming the dead one."""
    database = Database(url=f"sqlite:///{tmp_path / 'registry.db'}")
    gateway = start_serve(database, tmp_path, "--no-local-model")
    started.append(gateway)
    read_banner(gateway)
    first, second = children(gateway.pid, b"router.workers")
    os.kill(first, signal.SIGKILL)
    _, stderr = gateway.communicate(timeout=30)
    assert gateway.returncode == 1, stderr
    assert f"(pid {first}) exited with status -9; stopping the others" in stderr, stderr
    assert "Traceback" not in stderr, stderr
    assert not Path(f"/proc/{second}").exists()  # stopped and reaped


def test_ctrl_c_stops_every_worker_quietly(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    """A terminal's Ctrl-C (SIGINT to the foreground process group) reaches the parent only;
    it stops the workers, and the command ends with 130, no traceback."""
    database = Database(url=f"sqlite:///{tmp_path / 'registry.db'}")
    gateway = start_serve(database, tmp_path, "--no-local-model")
    started.append(gateway)
    read_banner(gateway)
    workers = children(gateway.pid, b"router.workers")
    os.killpg(gateway.pid, signal.SIGINT)
    _, stderr = gateway.communicate(timeout=30)
    assert gateway.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert not [w for w in workers if Path(f"/proc/{w}").exists()]


def test_workers_must_be_at_least_one() -> None:
    done = subprocess.run([*CLI, "serve", "--workers", "0"], capture_output=True, text=True)
    assert done.returncode == 2 and "--workers" in done.stderr


@pytest.mark.slow
def test_workers_share_one_bundled_model(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    """With the bundled model on, the parent starts one model server (not one per worker:
    each holds ~250 MB and a core) and both workers route ``smollm2`` to it."""
    database = Database(url=f"sqlite:///{tmp_path / 'registry.db'}")
    gateway = start_serve(database, tmp_path)
    started.append(gateway)
    lines = read_banner(gateway)
    (admin_key,) = [line.strip() for line in lines if line.strip().startswith("pr-")]
    (model_server,) = children(gateway.pid, b"adapters.local_llamacpp")
    workers = children(gateway.pid, b"router.workers")
    assert [children(worker, b"adapters.local_llamacpp") for worker in workers] == [[], []]

    client = fresh_connections(lines[-1].split()[3], admin_key)  # admin keys may infer too
    drive_until_both_workers_answered(database, client, "smollm2")
    stop(gateway)
    assert not Path(f"/proc/{model_server}").exists()  # stopped and reaped by the parent
