"""Engines, migrations and sessions for SQLite (embedded default) and PostgreSQL (scale-out).

SQLite is tuned for one gateway process with many threads: WAL (readers never block the
writer), foreign keys on (off by default in SQLite), a busy timeout instead of instant
"database is locked" errors. Registry writers open their transaction with ``BEGIN IMMEDIATE``
(see :func:`write_connection`) so they queue for the write lock *before* reading what they
compare against; a deferred transaction that read first and wrote later could not be upgraded
once another writer had committed.

PostgreSQL goes through psycopg 3. ``schema`` puts every table in one schema via
``search_path`` (tests use a fresh schema each; an operator may share a database this way).

Waits are bounded, and a wait that runs out is a :class:`~registry.errors.BusyError`, not a
driver error: a checkout from the connection pool (``pool_size`` connections kept, up to
``max_overflow`` more) waits at most ``pool_timeout_s``; a registry writer waits at most
``lock_timeout_s`` for the write lock (SQLite: ``busy_timeout`` on every connection;
PostgreSQL: ``SET LOCAL lock_timeout`` in each write transaction, so migrations and the setup
lock are not cut short).

A PostgreSQL server that stops answering without closing the connection (a dropped route, a
firewall forgetting the flow) cannot stall a thread for ever: connecting gives up after
``connect_timeout_s``, and every connection has TCP keepalives (``PG_KEEPALIVES``: a silent
peer is declared dead after about 25 s idle) and a ``tcp_user_timeout`` for data it never
acknowledges. Parameters given in the URL's query string win over these defaults.
"""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import URL, Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session

from registry.errors import BusyError, SchemaTooNew

# The newest migration. Checked against alembic's own view of the scripts by a test, so it
# cannot go stale; it lets a restart skip importing alembic (~0.4 s) when nothing is to do.
HEAD_REVISION = "0011"
WRITE_OPTION = "registry_write"  # execution option marking a registry write transaction
# The defaults of router.settings.Settings (database_pool_size, ...), for callers without one.
POOL_SIZE = 5
MAX_OVERFLOW = 10
POOL_TIMEOUT_S = 10.0
LOCK_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
# libpq keepalive and send-timeout parameters of every PostgreSQL connection (see above).
PG_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # milliseconds
}
SQLITE_BUSY = 5  # sqlite3's error code for "database is locked"
PG_LOCK_NOT_AVAILABLE = "55P03"  # the SQLSTATE of a lock_timeout that ran out


def json_dumps(value: Any) -> str:
    """JSON columns are written with orjson: the audit log writes three per request, and the
    stdlib encoder was the largest single cost of the audit writer. Dates and datetimes become
    ISO 8601 strings, as before."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def make_engine(
    url: str,
    *,
    schema: str | None = None,
    echo: bool = False,
    pool_size: int = POOL_SIZE,
    max_overflow: int = MAX_OVERFLOW,
    pool_timeout_s: float = POOL_TIMEOUT_S,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
) -> Engine:
    """An engine for ``url``; ``postgresql://`` URLs are served by psycopg 3. The pool and lock
    bounds are described in the module docstring (an in-memory SQLite database has one
    connection per thread and no pool to size)."""
    parsed = make_url(url)
    pool = {"pool_size": pool_size, "max_overflow": max_overflow, "pool_timeout": pool_timeout_s}
    lock_timeout_ms = max(1, round(lock_timeout_s * 1000))
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, pool if _is_file(parsed) else {}, lock_timeout_ms, echo)
    if parsed.get_backend_name() in ("postgresql", "postgres"):  # "postgres://": Heroku-style
        parsed = parsed.set(drivername="postgresql+psycopg")
        defaults = {"connect_timeout": max(2, math.ceil(connect_timeout_s)), **PG_KEEPALIVES}
        connect: dict[str, Any] = {k: v for k, v in defaults.items() if k not in parsed.query}
        if schema:
            connect["options"] = f"-csearch_path={schema}"
        return _postgres_engine(parsed, connect, pool, lock_timeout_ms, echo)
    raise ValueError(f"unsupported database URL {parsed.render_as_string(hide_password=True)}")


def _is_file(url: URL) -> bool:
    return url.database not in (None, "", ":memory:") and url.query.get("mode") != "memory"


def _postgres_engine(
    url: URL, connect_args: dict[str, Any], pool: dict[str, Any], lock_timeout_ms: int, echo: bool
) -> Engine:
    engine = create_engine(
        url,
        connect_args=connect_args,
        pool_pre_ping=True,
        echo=echo,
        json_serializer=json_dumps,
        json_deserializer=orjson.loads,
        **pool,
    )

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get(WRITE_OPTION, False):
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = {lock_timeout_ms}")

    return engine


def _sqlite_engine(url: URL, pool: dict[str, Any], busy_timeout_ms: int, echo: bool) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False},
        echo=echo,
        json_serializer=json_dumps,
        json_deserializer=orjson.loads,
        **pool,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when a transaction begins.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
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


def known_revisions() -> frozenset[str]:
    """Every schema revision this version's migrations know."""
    from alembic.script import ScriptDirectory

    with as_file(files("registry").joinpath("migrations")) as script_dir:
        return frozenset(
            script.revision for script in ScriptDirectory(str(script_dir)).walk_revisions()
        )


def schema_state(revision: str | None) -> str:
    """``empty``, ``current``, ``behind`` (an upgrade applies) or ``newer`` (a revision this
    version does not know: a newer version migrated the schema)."""
    if revision is None:
        return "empty"
    if revision == HEAD_REVISION:
        return "current"
    return "behind" if revision in known_revisions() else "newer"


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (``alembic upgrade head``), from the package:
    no ``alembic.ini`` needed. Runs in one transaction on both databases. A schema a newer
    version migrated is refused in one sentence (``SchemaTooNew``), not alembic's traceback."""
    revision = current_revision(engine)
    state = schema_state(revision)
    if state == "current":
        return
    if state == "newer":
        raise SchemaTooNew(
            f"the database schema is at revision {revision}, which this version of "
            f"provenance-router does not know (its newest is {HEAD_REVISION}): a newer version "
            "migrated it; run that version, or restore the backup taken before the upgrade"
        )
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
    """A session that commits on success and rolls back on any exception; ``BusyError`` when no
    connection (or lock) came free in time."""
    with busy_as_error(), Session(engine) as session, session.begin():
        yield session


@contextmanager
def write_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that already holds (SQLite) or will take (PostgreSQL, see
    the service) the registry write lock; commits on success, rolls back on any exception.
    ``BusyError`` when no connection, or the lock, came free in time."""
    with busy_as_error(), engine.connect() as connection:
        connection.execution_options(**{WRITE_OPTION: True})
        with connection.begin():
            yield connection


# --- SQLite files: a clean shutdown leaves one file; backups are online and consistent ---------


def checkpoint(engine: Engine) -> None:
    """SQLite: move every committed page from the ``-wal`` file into the database file and
    empty the WAL, so that after a clean shutdown the ``.db`` file alone holds everything (a
    copy of it is then a whole database). A no-op on PostgreSQL."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def backup_sqlite(engine: Engine, target: Path) -> None:
    """A consistent copy of a SQLite registry in ``target`` (one self-contained file), taken
    with SQLite's online backup API: safe while the gateway runs and writes."""
    _require_sqlite(engine, "backup")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    destination = sqlite3.connect(partial)
    try:
        with _raw_sqlite(engine) as source:
            source.backup(destination)
        destination.execute("PRAGMA journal_mode=DELETE")  # no -wal beside the copy
    finally:
        destination.close()
    os.replace(partial, target)


def restore_sqlite(engine: Engine, source: Path) -> None:
    """Replace the registry's content with the backup in ``source`` (online backup API, page by
    page, in one go), then bring its schema up to date. Stop the gateway first: a running one
    would keep serving its snapshot of the old content until its next reload."""
    _require_sqlite(engine, "restore")
    if not source.is_file():
        raise FileNotFoundError(f"no backup file {source}")
    origin = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        tables = origin.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        if ("alembic_version",) not in tables:
            raise ValueError(f"{source} is not a provenance-router registry backup")
        with _raw_sqlite(engine) as destination:
            origin.backup(destination)
    finally:
        origin.close()
    migrate(engine)


def _require_sqlite(engine: Engine, what: str) -> None:
    if engine.dialect.name != "sqlite":
        raise ValueError(
            f"{what} works on the SQLite registry; for PostgreSQL use pg_dump / pg_restore "
            "(see docs/configuration.md, Backups)"
        )


@contextmanager
def _raw_sqlite(engine: Engine) -> Iterator[sqlite3.Connection]:
    connection = engine.raw_connection()
    try:
        raw = connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        yield raw
    finally:
        connection.close()


@contextmanager
def busy_as_error() -> Iterator[None]:
    """Turn a pool checkout timeout or a lock wait that ran out into ``BusyError``."""
    try:
        yield
    except PoolTimeout as exc:
        raise BusyError("the registry database is busy: no connection free; retry") from exc
    except OperationalError as exc:
        if not is_lock_timeout(exc):
            raise
        raise BusyError("the registry is busy: another write holds its lock; retry") from exc


def is_lock_timeout(exc: OperationalError) -> bool:
    """Whether the database gave up waiting for a lock (SQLite ``SQLITE_BUSY``, PostgreSQL
    ``lock_not_available``)."""
    sqlite_code = getattr(exc.orig, "sqlite_errorcode", None)  # extended: the low byte is basic
    if isinstance(sqlite_code, int) and sqlite_code & 0xFF == SQLITE_BUSY:
        return True
    return getattr(exc.orig, "sqlstate", None) == PG_LOCK_NOT_AVAILABLE
