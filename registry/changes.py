"""Change signals: how a process learns, at once, that another one changed the registry.

Every registry write bumps the version in ``registry_state`` (``registry.service``); replicas
reload their snapshot when it moves. Polling that version is the safety net; these signals make
the wait short:

- PostgreSQL: the write's own transaction issues ``pg_notify(CHANNEL, current_schema())``
  (:func:`notify_change`). PostgreSQL delivers it at commit, to every session that ``LISTEN``\\ s
  on the database, and never for a write that rolled back, so admin API writes, CLI writes and
  ``apply`` all signal with no extra step. The payload is the schema, since one database may
  hold several registries (one per schema): a listener ignores the others' writes.
  :class:`PostgresSignal` listens on a dedicated connection taken out of the engine's pool.
- SQLite: a dedicated connection reads ``PRAGMA data_version`` every ``check_s``
  (:class:`SqliteSignal`). SQLite changes that number when another connection, of any process
  on the host, commits to the file; reading it touches no table and takes no lock (measured
  in docs/operations.md). It also moves for audit writes: the caller then reads the registry
  version, a cheap query, and reloads only when that moved.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import Connection, Engine, text

if TYPE_CHECKING:
    import psycopg

CHANNEL = "provenance_router_registry"


def notify_change(db: Connection) -> None:
    """Signal listeners that this transaction changes the registry (PostgreSQL; delivered at
    commit). A no-op on SQLite, whose readers watch ``data_version`` instead."""
    if db.dialect.name == "postgresql":
        db.execute(text("SELECT pg_notify(:channel, current_schema())"), {"channel": CHANNEL})


class ChangeSignal(Protocol):
    # True: a signal means the registry changed (reload at once); False: it may have (compare
    # the stored version first)
    definite: bool

    def wait(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s``; True as soon as the registry may have changed. Raises
        when the database cannot be reached (the caller reconnects)."""
        ...

    def close(self) -> None: ...


def can_signal(engine: Engine) -> bool:
    """Whether other processes can change this database (not so an in-memory SQLite one)."""
    database = engine.url.database
    return engine.dialect.name == "postgresql" or database not in (None, "", ":memory:")


def open_signal(engine: Engine, *, check_s: float) -> ChangeSignal:
    """The change signal of ``engine``'s database."""
    if engine.dialect.name == "postgresql":
        return PostgresSignal(engine)
    return SqliteSignal(engine, check_s=check_s)


class PostgresSignal:
    """``LISTEN`` on a connection of its own: it holds no transaction and is never returned to
    the pool (detached), so it neither pins pooled connections nor counts against them."""

    definite = True

    def __init__(self, engine: Engine) -> None:
        import psycopg

        pooled = engine.raw_connection()
        connection = pooled.driver_connection
        pooled.detach()
        assert isinstance(connection, psycopg.Connection)
        self._connection: psycopg.Connection[tuple[object, ...]] = connection
        try:
            connection.autocommit = True
            row = connection.execute("SELECT current_schema()").fetchone()
            self._schema = str(row[0]) if row else ""
            connection.execute(f"LISTEN {CHANNEL}")
        except Exception:
            connection.close()
            raise

    def wait(self, timeout_s: float) -> bool:
        for notice in self._connection.notifies(timeout=timeout_s, stop_after=1):
            if notice.payload == self._schema:
                return True
        return False

    def close(self) -> None:
        self._connection.close()


class SqliteSignal:
    """``PRAGMA data_version`` on a connection of its own, read every ``check_s``."""

    definite = False  # any commit moves it, audit writes too

    def __init__(self, engine: Engine, *, check_s: float) -> None:
        database = engine.url.database
        if not can_signal(engine) or database is None:
            raise ValueError("an in-memory SQLite database has no other process to hear from")
        self._check_s = check_s
        self._connection = sqlite3.connect(database, check_same_thread=False)
        self._seen = self._data_version()

    def wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            current = self._data_version()
            if current != self._seen:
                self._seen = current
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(self._check_s, left))  # never past the caller's deadline

    def _data_version(self) -> int:
        row = self._connection.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def close(self) -> None:
        self._connection.close()
