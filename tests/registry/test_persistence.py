"""A restart loses nothing: data, versions, change rows, policies and audit rows survive
disposing the engine; migrations are idempotent and produce exactly the models' schema."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlmodel import SQLModel

from registry.audit_store import iter_rows
from registry.db import (
    HEAD_REVISION,
    current_revision,
    make_engine,
    migrate,
    run_alembic,
    session_scope,
)
from registry.keys import hash_key
from registry.service import insert_decisions, list_decisions, load_snapshot, write_transaction
from tests.conftest import Database
from tests.registry.conftest import RAW_ADMIN_KEY, seed

State = Callable[[Engine], dict[str, Any]]


def test_everything_survives_a_restart(database: Database, registry_state: State) -> None:
    first = database.engine()
    try:
        seed(first)
        with write_transaction(engine=first, actor="alice") as writer:
            writer.update("organization", "meta", {"aliases": ["Facebook"]}, expected_version=1)
            writer.save_policy(name="baseline", format="yaml", source="rules: []", activate=True)
        insert_decisions(engine=first, rows=[{"request_id": "r1", "status": "ok"}])
        before = registry_state(first)
    finally:
        first.dispose()

    second = database.engine()
    try:
        after = registry_state(second)
        with session_scope(second) as session:
            snapshot = load_snapshot(session=session)
            decisions = list_decisions(session=session)
    finally:
        second.dispose()
    assert after == before
    assert after["version"] == 2 and len(after["changes"]) == 13
    assert snapshot.policy is not None and snapshot.policy.name == "baseline"
    assert hash_key(RAW_ADMIN_KEY) in snapshot.keys_by_hash
    assert [d["request_id"] for d in decisions] == ["r1"]


def test_migrate_is_idempotent(engine: Engine, registry_state: State) -> None:
    seed(engine)
    before = registry_state(engine)
    migrate(engine)
    assert registry_state(engine) == before


def test_migrations_build_exactly_the_models_schema(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []


def test_audit_rows_survive_migration_0002_down_and_up(engine: Engine) -> None:
    """0002 moved each request's candidates into shared evaluations without rewriting older
    rows: rows written inline (before 0002) and rows referring to an evaluation both read back
    whole, after a downgrade (which puts candidates back inline) and a new upgrade."""
    verdict = [{"deployment": "d", "allowed": True, "rule_ids": ["r"], "reasons": ["ok"]}]
    insert_decisions(
        engine=engine, rows=[{"request_id": "new", "status": "ok", "candidates": verdict}]
    )
    run_alembic(engine, "downgrade", "0001")
    with engine.begin() as connection:
        inline = connection.exec_driver_sql("SELECT candidates FROM routing_decisions").scalar()
        connection.exec_driver_sql(  # a row as 0001 wrote it
            "INSERT INTO routing_decisions (request_id, created_at, action, context, candidates,"
            " attempts, status) VALUES ('old', '2026-11-01 00:00:00+00:00', 'infer', '{}',"
            f" '{orjson.dumps(verdict).decode()}', '[]', 'ok')"
        )
    assert (orjson.loads(inline) if isinstance(inline, str) else inline) == verdict
    migrate(engine)
    assert current_revision(engine) == HEAD_REVISION
    insert_decisions(
        engine=engine, rows=[{"request_id": "newer", "status": "ok", "candidates": verdict}]
    )
    with session_scope(engine) as session:
        decisions = list_decisions(session=session)
    assert [d["request_id"] for d in decisions] == ["newer", "old", "new"]
    assert [d["candidates"] for d in decisions] == [verdict] * 3
    assert [d["evaluation_id"] is None for d in decisions] == [False, True, True]


def test_audit_rows_survive_migration_0004_down_and_up(engine: Engine) -> None:
    """0004 added the hash chain and checkpoints: a downgrade drops them and keeps the rows;
    after a new upgrade those rows are unchained (written before chaining) and new rows chain
    again."""
    insert_decisions(engine=engine, rows=[{"request_id": "chained", "status": "ok"}])
    run_alembic(engine, "downgrade", "0003")
    assert current_revision(engine) == "0003"
    with engine.connect() as connection:
        columns = {c["name"] for c in inspect(connection).get_columns("routing_decisions")}
        assert not {"chain_id", "seq", "row_hash", "sanitized"} & columns
        assert not inspect(connection).has_table("audit_checkpoints")
    migrate(engine)
    assert current_revision(engine) == HEAD_REVISION
    head = insert_decisions(engine=engine, rows=[{"request_id": "after", "status": "ok"}])
    rows = list(iter_rows(engine))
    assert [(r["request_id"], r["chain_id"], r["seq"], r["sanitized"]) for r in rows] == [
        ("after", head.chain_id, 1, False),
        ("chained", None, None, False),
    ]


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}", lock_timeout_s=2.5)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
            # a lock wait is bounded by the lock timeout (then BusyError, HTTP 503)
            assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 2500
    finally:
        engine.dispose()


def test_head_revision_constant_matches_the_migration_scripts(engine: Engine) -> None:
    """``migrate`` skips alembic when the schema is at HEAD_REVISION: the constant must be
    alembic's head, and a migrated database must report it."""
    from importlib.resources import as_file, files

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    with as_file(files("registry").joinpath("migrations")) as script_dir:
        config = Config()
        config.set_main_option("script_location", str(script_dir))
        assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION
    assert current_revision(engine) == HEAD_REVISION


def test_migration_0003_puts_stored_facts_in_canonical_spelling(engine: Engine) -> None:
    """Registries written before the vocabularies hold free text no rule matches (`Huawei`,
    `ascend 910b`): 0003 rewrites what maps, makes what does not unknown (it then fails
    closed), and records each change in the registry change log."""
    seed(engine)
    run_alembic(engine, "downgrade", "0002")
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE deployments SET hardware_vendor = 'Huawei Technologies', "
                "accelerator = 'Ascend 910B', location_region = 'EU-Central'"
            )
        )
        connection.execute(text("UPDATE models SET training_hardware_vendor = 'Quantum Foo'"))
        version = connection.execute(text("SELECT version FROM registry_state")).scalar()
    migrate(engine)
    with session_scope(engine) as session:
        snapshot = load_snapshot(session=session)
        changes = session.execute(
            text("SELECT actor, kind, after FROM registry_changes WHERE actor = 'migration:0003'")
        ).all()
    deployment = next(iter(snapshot.deployments.values()))
    assert (deployment.hardware_vendor, deployment.accelerator, deployment.location_region) == (
        "huawei",
        "ascend-910b",
        "eu-central",
    )
    assert all(m.training_hardware is None for m in snapshot.models.values())
    assert snapshot.version == version + 1
    after = [orjson.loads(a) if isinstance(a, str) else a for _, _, a in changes]
    assert {"training_hardware_vendor": None} in after
    assert {"hardware_vendor": "huawei"} in after
    assert all(t.purposes == frozenset() for t in snapshot.tenants.values())
