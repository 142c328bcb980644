"""``provenance-router backup`` and ``restore``: the SQLite registry as one file.

    provenance-router backup -o registry-backup.db [--database-url URL]
    provenance-router restore registry-backup.db [--database-url URL]

``backup`` uses SQLite's online backup API: a consistent copy while the gateway runs.
``restore`` replaces the registry's content with the backup (stop the gateway first) and brings
its schema up to date. On PostgreSQL both refuse and point to ``pg_dump``/``pg_restore``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from registry.db import backup_sqlite, make_engine, restore_sqlite
from router.settings import Settings

DatabaseOption = Annotated[
    str | None,
    typer.Option("--database-url", help="Registry database (default: from settings)."),
]


def register(app: typer.Typer) -> None:
    app.command("backup")(backup_command)
    app.command("restore")(restore_command)


def backup_command(
    output: Annotated[Path, typer.Option("-o", "--output", help="The backup file to write.")],
    database_url: DatabaseOption = None,
) -> None:
    """Copy the SQLite registry into one file.

    SQLite's online backup API: a consistent copy, safe while the gateway runs."""
    engine = make_engine(database_url or Settings().database_url)
    try:
        backup_sqlite(engine, output)
    finally:
        engine.dispose()
    print(f"registry backed up to {output}")


def restore_command(
    backup: Annotated[Path, typer.Argument(help="A file written by `backup`.")],
    database_url: DatabaseOption = None,
) -> None:
    """Restore the SQLite registry from a backup.

    Stop the gateway first; the schema is brought up to date afterwards."""
    engine = make_engine(database_url or Settings().database_url)
    try:
        restore_sqlite(engine, backup)
    finally:
        engine.dispose()
    print(f"registry restored from {backup}")
