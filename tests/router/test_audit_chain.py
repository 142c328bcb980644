"""Tamper evidence and retention of the audit log (issue 15), on SQLite and PostgreSQL.

The real gateway writes the log (hash chain, signed checkpoints every few rows); the test
then edits, deletes, swaps and inserts rows with plain SQL, and ``provenance-router audit
verify`` must name the bad record each time (and pass once the change is undone). Retention:
``audit prune --archive`` deletes old records and the evaluations only they used; the
archive verifies on its own and what remains still verifies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from registry.audit_record import Evaluation
from registry.audit_store import checkpoints, insert_decisions, iter_rows
from registry.models import RoutingDecision
from router.cli import app
from tests.fakes import FakeUpstream
from tests.router.conftest import RunningGateway, deployment, wait_for

MESSAGES = [{"role": "user", "content": "hi"}]
CHECKPOINT_EVERY = 4


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(
    request: pytest.FixtureRequest,
    gateway_factory: Callable[..., RunningGateway],
    up: FakeUpstream,
) -> RunningGateway:
    gw = gateway_factory(backend=request.param, audit_checkpoint_every=CHECKPOINT_EVERY)
    with gw.write() as w:
        w.create("deployment", deployment("chain-us", up.base_url))
        w.create("deployment", deployment("chain-eu", up.base_url, location_country="DE"))
        w.create("route", {"name": "chain-old", "candidates": ["chain-us"]})
        w.create("route", {"name": "chain-new", "candidates": ["chain-eu", "chain-us"]})
    for _ in range(10):
        answer(gw, "chain-old")
    return gw


def answer(gw: RunningGateway, model: str) -> str:
    raw = gw.openai().chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
    request_id = raw.headers["x-request-id"]
    gw.decision(request_id)
    return str(request_id)


def audit(gw: RunningGateway, *args: str) -> tuple[int, str]:
    keys = str(gw.app.gateway.settings.signing_key_dir)
    url = gw.app.gateway.settings.database_url
    extra = [] if "--archive" in args and args[0] == "verify" else ["--database-url", url]
    result = CliRunner().invoke(app, ["audit", *args, *extra, "--keys", keys])
    return result.exit_code, result.output


def chained(engine: Engine) -> list[dict[str, Any]]:
    return [r for r in iter_rows(engine) if r["chain_id"] is not None]


def sql(engine: Engine, statement: str, **params: Any) -> None:
    with engine.begin() as connection:
        connection.execute(text(statement), params)


def test_an_untouched_log_verifies(gw: RunningGateway) -> None:
    code, output = audit(gw, "verify")
    assert code == 0, output
    assert output.startswith("OK:")
    kinds = {c["kind"] for c in checkpoints(gw.engine)}
    assert {"open", "periodic"} <= kinds
    assert all(c["signature"] for c in checkpoints(gw.engine))


def test_a_row_edited_with_sql_is_named(gw: RunningGateway) -> None:
    row = chained(gw.engine)[2]
    sql(
        gw.engine,
        "UPDATE routing_decisions SET tenant_id = 'someone-else' WHERE id = :id",
        id=row["id"],
    )
    try:
        code, output = audit(gw, "verify")
    finally:
        sql(
            gw.engine,
            "UPDATE routing_decisions SET tenant_id = :t WHERE id = :id",
            t=row["tenant_id"],
            id=row["id"],
        )
    assert code == 1
    assert f"modified: seq {row['seq']} (request {row['request_id']}" in output
    assert audit(gw, "verify")[0] == 0


def test_a_deleted_row_is_named(gw: RunningGateway) -> None:
    row = chained(gw.engine)[3]
    sql(gw.engine, "DELETE FROM routing_decisions WHERE id = :id", id=row["id"])
    try:
        code, output = audit(gw, "verify")
    finally:
        restore(gw.engine, row)
    assert code == 1
    assert f"deleted: record seq {row['seq']} of chain {row['chain_id']} deleted" in output


def test_a_swap_is_named(gw: RunningGateway) -> None:
    rows = chained(gw.engine)
    first, second = rows[1], rows[5]
    swap = "UPDATE routing_decisions SET seq = :seq WHERE id = :id"
    sql(gw.engine, swap, seq=-1, id=first["id"])
    sql(gw.engine, swap, seq=first["seq"], id=second["id"])
    sql(gw.engine, swap, seq=second["seq"], id=first["id"])
    try:
        code, output = audit(gw, "verify")
    finally:
        sql(gw.engine, swap, seq=first["seq"], id=first["id"])
        sql(gw.engine, swap, seq=second["seq"], id=second["id"])
    assert code == 1
    assert f"reordered: seq {first['seq']} (request {second['request_id']}" in output
    assert f"request {first['request_id']}, now stored at seq {second['seq']}" in output


def test_an_inserted_row_is_named(gw: RunningGateway) -> None:
    forged = {**chained(gw.engine)[0], "request_id": "req_forged", "seq": 2}
    del forged["id"]
    with gw.engine.begin() as connection:
        connection.execute(RoutingDecision.__table__.insert().values(forged))  # type: ignore[attr-defined]
    try:
        code, output = audit(gw, "verify")
    finally:
        sql(gw.engine, "DELETE FROM routing_decisions WHERE request_id = 'req_forged'")
    assert code == 1
    assert "inserted: seq 2 (request req_forged" in output


def test_a_forged_checkpoint_is_named(gw: RunningGateway) -> None:
    mark = checkpoints(gw.engine)[-1]
    forged = "0" * 128
    sql(
        gw.engine,
        "UPDATE audit_checkpoints SET signature = :s WHERE id = :id",
        s=forged,
        id=mark["id"],
    )
    try:
        code, output = audit(gw, "verify")
    finally:
        sql(
            gw.engine,
            "UPDATE audit_checkpoints SET signature = :s WHERE id = :id",
            s=mark["signature"],
            id=mark["id"],
        )
    assert code == 1 and "signature: checkpoint" in output and "bad signature" in output


def restore(engine: Engine, row: dict[str, Any]) -> None:
    with engine.begin() as connection:
        connection.execute(RoutingDecision.__table__.insert().values(row))  # type: ignore[attr-defined]


def test_prune_archives_then_deletes_and_both_halves_verify(
    gw: RunningGateway, tmp_path: Path
) -> None:
    old_evaluations = {r["evaluation_id"] for r in chained(gw.engine)}
    cut = datetime.now(UTC)
    wait_for(lambda: datetime.now(UTC) > cut, what="the clock to pass the cut")
    kept = [answer(gw, "chain-new") for _ in range(3)]
    archive = tmp_path / "audit-archive.jsonl"
    code, output = audit(gw, "prune", "--before", cut.isoformat(), "--archive", str(archive))
    assert code == 0, output
    remaining = [r["request_id"] for r in iter_rows(gw.engine)]
    assert remaining == kept
    with gw.engine.connect() as connection:
        stored = set(connection.execute(text("SELECT id FROM decision_evaluations")).scalars())
    assert not stored & old_evaluations  # orphaned evaluations went with their rows
    code, output = audit(gw, "verify", "--archive", str(archive))
    assert code == 0 and output.startswith("OK: 10 records in 1 chains"), output
    code, output = audit(gw, "verify")
    assert code == 0, output
    kept.append(answer(gw, "chain-new"))  # the chain goes on after its pruned boundary
    assert audit(gw, "verify")[0] == 0


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_gateway_enforces_retention_and_archives_first(
    backend: str,
    gateway_factory: Callable[..., RunningGateway],
    up: FakeUpstream,
    tmp_path: Path,
) -> None:
    """With ``audit_retention_days`` set, the gateway prunes older records on its own, after
    writing them to a verifiable archive in ``audit_archive_dir``; the evaluations only they
    used go too, and what remains verifies."""
    archives = tmp_path / "archives"
    gw = gateway_factory(
        backend=backend,
        audit_retention_days=30,
        audit_archive_dir=archives,
        audit_prune_interval_s=0.1,
    )
    with gw.write() as w:
        w.create("deployment", deployment("retained-us", up.base_url))
        w.create("route", {"name": "retained", "candidates": ["retained-us"]})
    recent = answer(gw, "retained")
    old = datetime.now(UTC) - timedelta(days=45)
    verdict = [{"deployment": "gone", "allowed": True, "rule_ids": ["r"], "reasons": ["old"]}]
    insert_decisions(
        engine=gw.engine,
        rows=[
            {"request_id": f"old-{i}", "status": "ok", "created_at": old, "candidates": verdict}
            for i in range(3)
        ],
    )
    wait_for(
        lambda: [r["request_id"] for r in iter_rows(gw.engine)] == [recent],
        what="the old records pruned",
    )
    with gw.engine.connect() as connection:
        evaluations = set(connection.execute(text("SELECT id FROM decision_evaluations")).scalars())
    assert Evaluation.of(verdict).id not in evaluations
    (archive,) = archives.glob("*.jsonl")
    code, output = audit(gw, "verify", "--archive", str(archive))
    assert code == 0 and output.startswith("OK: 3 records in 1 chains"), output
    assert audit(gw, "verify")[0] == 0
