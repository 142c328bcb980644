"""Change signals (``registry.changes``) on both databases: a committed registry write is heard
by a listener on another connection; a write that rolls back, and a write to another registry
in the same PostgreSQL database (another schema), are not."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from registry.changes import ChangeSignal, open_signal
from registry.db import make_engine, migrate
from registry.service import ValidationFailed, write_transaction
from tests.conftest import Database, postgres_url

HEARD_WITHIN_S = 5.0  # a generous bound: the signal returns as soon as it hears
QUIET_S = 0.3  # how long "nothing heard" is watched for


@pytest.fixture
def signal(engine: Engine) -> Iterator[ChangeSignal]:
    listener = open_signal(engine, check_s=0.01)
    yield listener
    listener.close()


def create_tenant(engine: Engine, tenant: str) -> None:
    with write_transaction(engine=engine, actor="tests") as writer:
        writer.create("tenant", {"id": tenant, "name": tenant})


def test_a_committed_write_is_heard(engine: Engine, signal: ChangeSignal) -> None:
    assert not signal.wait(QUIET_S)
    create_tenant(engine, "t1")
    assert signal.wait(HEARD_WITHIN_S)


def test_a_write_that_rolls_back_is_not_heard(engine: Engine, signal: ChangeSignal) -> None:
    with (
        pytest.raises(ValidationFailed),
        write_transaction(engine=engine, actor="tests") as writer,
    ):
        writer.create("tenant", {"id": "t1", "name": "T1"})  # bumps the version ...
        writer.create("tenant", {"id": "", "name": "invalid"})  # ... then fails: rollback
    assert not signal.wait(QUIET_S)


def test_a_write_to_another_schema_is_not_heard(
    engine: Engine, signal: ChangeSignal, request: pytest.FixtureRequest
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("one SQLite file holds one registry")
    other_db: Database = request.getfixturevalue("other_postgres_registry")
    other = make_engine(other_db.url)
    try:
        create_tenant(other, "elsewhere")
    finally:
        other.dispose()
    assert not signal.wait(QUIET_S)
    create_tenant(engine, "here")
    assert signal.wait(HEARD_WITHIN_S)


@pytest.fixture
def other_postgres_registry(postgres_admin: Engine) -> Iterator[Database]:
    """A second migrated registry in the same PostgreSQL database (its own schema)."""
    schema = f"test_{uuid.uuid4().hex[:16]}"
    with postgres_admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    database = Database(url=f"{postgres_url()}?options=-csearch_path%3D{schema}")
    engine = database.engine()
    try:
        migrate(engine)
    finally:
        engine.dispose()
    yield database
    with postgres_admin.begin() as connection:
        connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


def test_a_wait_ends_at_its_deadline_whatever_the_check_interval(engine: Engine) -> None:
    """A long ``change_check_s`` must not hold a wait (and so a gateway's stop) past its
    deadline."""
    if engine.dialect.name != "sqlite":
        pytest.skip("the check interval is SQLite's; PostgreSQL waits on its socket")
    slow = open_signal(engine, check_s=3600)
    try:
        started = time.monotonic()
        assert slow.wait(0.2) is False
        assert time.monotonic() - started < 5
    finally:
        slow.close()
