"""Engines, migrations and sessions for SQLite (embedded default) and PostgreSQL (scale-out).

SQLite is tuned for one gateway process with many threads: WAL (readers never block the
writer), foreign keys on (off by default in SQLite), a busy timeout instead of instant
"database is locked" errors. Registry writers open their transaction with ``BEGIN IMMEDIATE``
(see :func:`write_connection`) so they queue for the write lock *before* reading what they
compare against; a deferred transaction that read first and wrote later could not be upgraded
once another writer had committed.

PostgreSQL goes through psycopg 3. ``schema`` puts every table in one schema via
``search_path`` (tests use a fresh schema each; an operator may share a database this way).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import as_file, files
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

# The newest migration. Checked against alembic's own view of the scripts by a test, so it
# cannot go stale; it lets a restart skip importing alembic (~0.4 s) when nothing is to do.
HEAD_REVISION = "0003_audit_chain"
SQLITE_BUSY_TIMEOUT_MS = 30_000
WRITE_OPTION = "registry_write"  # execution option marking a registry write transaction


def json_dumps(value: Any) -> str:
    """JSON columns are written with orjson: the audit log writes three per request, and the
    stdlib encoder was the largest single cost of the audit writer. Dates and datetimes become
    ISO 8601 strings, as before."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def make_engine(url: str, *, schema: str | None = None, echo: bool = False) -> Engine:
    """An engine for ``url``; ``postgresql://`` URLs are served by psycopg 3."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, echo=echo)
    if parsed.get_backend_name() in ("postgresql", "postgres"):  # "postgres://": Heroku-style
        return _postgres_engine(parsed.set(drivername="postgresql+psycopg"), schema, echo)
    raise ValueError(f"unsupported database URL {parsed.render_as_string(hide_password=True)}")


def _postgres_engine(url: Any, schema: str | None, echo: bool) -> Engine:
    connect_args = {"options": f"-csearch_path={schema}"} if schema else {}
    return create_engine(
        url,
        connect_args=connect_args,
        pool_pre_ping=True,
        echo=echo,
        json_serializer=json_dumps,
        json_deserializer=orjson.loads,
    )


def _sqlite_engine(url: str, *, echo: bool) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False},
        echo=echo,
        json_serializer=json_dumps,
        json_deserializer=orjson.loads,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when a transaction begins.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL: no corruption on crash
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def current_revision(engine: Engine) -> str | None:
    """The schema's alembic revision, or None for a database never migrated."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (``alembic upgrade head``), from the package:
    no ``alembic.ini`` needed. Runs in one transaction on both databases."""
    if current_revision(engine) == HEAD_REVISION:
        return
    run_alembic(engine, "upgrade", "head")


def run_alembic(engine: Engine, command_name: str, revision: str) -> None:
    """``alembic upgrade|downgrade <revision>`` with the packaged scripts, in one transaction."""
    from alembic import command
    from alembic.config import Config

    with as_file(files("registry").joinpath("migrations")) as script_dir:
        config = Config()
        config.set_main_option("script_location", str(script_dir))
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            getattr(command, command_name)(config, revision)


# PostgreSQL advisory lock key of first-start setup ("prvs"); not the migrations' own key
# (registry/migrations/env.py), which is taken inside it.
SETUP_LOCK_ID = 0x70727673


@contextmanager
def setup_lock(engine: Engine) -> Iterator[None]:
    """One process at a time through first-start setup (migrations, the catalog, the default
    tenant, key and policy): replicas starting together on an empty database would otherwise
    all find it empty and all create the same rows. PostgreSQL: a session advisory lock,
    released even if the process dies. SQLite: an exclusive ``flock`` on ``<file>.setup-lock``
    beside the database (an in-memory database has one process anyway)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.exec_driver_sql(f"SELECT pg_advisory_lock({SETUP_LOCK_ID})")
            connection.commit()
            try:
                yield
            finally:
                connection.exec_driver_sql(f"SELECT pg_advisory_unlock({SETUP_LOCK_ID})")
                connection.commit()
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    import fcntl

    with open(f"{database}.setup-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any exception."""
    with Session(engine) as session, session.begin():
        yield session


@contextmanager
def write_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that already holds (SQLite) or will take (PostgreSQL, see
    the service) the registry write lock; commits on success, rolls back on any exception."""
    with engine.connect() as connection:
        connection.execution_options(**{WRITE_OPTION: True})
        with connection.begin():
            yield connection
