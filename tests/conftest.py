"""Shared fixtures: a migrated registry database on SQLite *and* PostgreSQL.

``engine`` (and ``db_url``) are parametrized over ``sqlite`` (a temp file) and ``postgresql``
(a fresh schema per test in the ``test`` database, created and dropped here, selected through
``search_path`` in the URL's connect options). Migrations run on both, as in production.
Deselect one backend with ``-k "not postgresql"``; point at another server with
``PROVENANCE_ROUTER_TEST_POSTGRES_URL``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine

from registry.db import make_engine, migrate

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True, slots=True)
class Database:
    """Where a test's registry lives. ``url`` alone reaches it (on PostgreSQL the schema rides
    in the URL as ``?options=-csearch_path=...``), so it can be handed to a gateway's settings."""

    url: str

    def engine(self) -> Engine:
        return make_engine(self.url)


def postgres_url() -> str:
    return os.environ.get("PROVENANCE_ROUTER_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


@pytest.fixture(scope="session", autouse=True)
def _signing_keys_never_in_the_users_data_dir(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    """A safety net under the fixtures that set ``signing_key_dir`` themselves: any gateway a
    test starts without one (in this process or a child) signs with a throwaway key."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(
            "PROVENANCE_ROUTER_SIGNING_KEY_DIR", str(tmp_path_factory.mktemp("signing-default"))
        )
        yield


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    """One engine on the test database for creating and dropping per-test schemas."""
    engine = make_engine(postgres_url())
    try:
        with engine.connect():
            pass
    except Exception as exc:
        engine.dispose()
        pytest.fail(
            f"PostgreSQL is not reachable at {postgres_url()} ({exc}); start it, set "
            'PROVENANCE_ROUTER_TEST_POSTGRES_URL, or deselect with -k "not postgresql"'
        )
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def blank_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database with nothing in it, not even migrations (a first start); dropped after."""
    if request.param == "sqlite":
        yield Database(url=f"sqlite:///{tmp_path / 'registry.db'}")
        return
    admin: Engine = request.getfixturevalue("postgres_admin")
    schema = f"test_{uuid.uuid4().hex[:16]}"
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield Database(url=f"{postgres_url()}?options=-csearch_path%3D{schema}")
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def database(blank_database: Database) -> Database:
    """A migrated, empty registry database; dropped after the test."""
    _migrate(blank_database)
    return blank_database


def _migrate(db: Database) -> None:
    engine = db.engine()
    try:
        migrate(engine)
    finally:
        engine.dispose()


@pytest.fixture
def db_url(database: Database) -> str:
    return database.url


@pytest.fixture
def engine(database: Database) -> Iterator[Engine]:
    """An engine on the migrated test database, disposed after the test."""
    engine = database.engine()
    yield engine
    engine.dispose()
