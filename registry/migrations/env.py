"""Alembic environment, run from the package by ``registry.db.migrate`` (no alembic.ini).

``migrate`` hands over an open connection in ``config.attributes["connection"]``; the schema
(PostgreSQL ``search_path``) and transaction are the caller's. On PostgreSQL an advisory lock
makes replicas that start together migrate one after another instead of racing.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, text
from sqlmodel import SQLModel

import registry.models  # noqa: F401  (registers every table on SQLModel.metadata)

MIGRATION_LOCK_KEY = 0x70726F76  # "prov": any constant shared by all replicas


def run_migrations(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTERs need batch mode
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("run migrations through registry.db.migrate(engine)")
    engine = create_engine(url)
    try:
        with engine.begin() as own_connection:
            run_migrations(own_connection)
    finally:
        engine.dispose()


run()
