"""``provenance-router db status|upgrade``: the registry schema, from a terminal or a job.

    db status  [--check] [--database-url URL]   the schema's revision against this version's
    db upgrade [--database-url URL]             migrate to this version's newest revision

The gateway migrates at start anyway; ``db upgrade`` is for running the migration as its own
step (a Kubernetes pre-upgrade Job, a maintenance window) and ``db status --check`` for
scripts: exit status 1 when the schema is not at this version's newest revision. ``upgrade``
takes the same setup lock as a starting gateway, so it never races replicas starting at once.
A schema a newer version migrated is refused in one line (there is no downgrade: restore the
backup taken before the upgrade, see docs/deploy.md).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from sqlalchemy import Engine

from registry.db import (
    HEAD_REVISION,
    current_revision,
    make_engine,
    migrate,
    schema_state,
    setup_lock,
)
from router.settings import Settings

db_app = typer.Typer(no_args_is_help=True, help="The registry database's schema.")
DatabaseUrl = Annotated[
    str | None,
    typer.Option(help="Registry database (default: from settings, as `serve` uses)."),
]


def _engine(database_url: str | None) -> Engine:
    return make_engine(database_url or Settings().database_url)


@db_app.command("status")
def status(
    database_url: DatabaseUrl = None,
    check: Annotated[
        bool, typer.Option(help="Exit with status 1 unless the schema is current.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Show the schema's revision and whether this version would migrate it."""
    engine = _engine(database_url)
    try:
        revision = current_revision(engine)
        shown = {
            "database": engine.url.render_as_string(hide_password=True),
            "revision": revision,
            "newest_known": HEAD_REVISION,
            "state": schema_state(revision),
        }
    finally:
        engine.dispose()
    if as_json:
        print(json.dumps(shown))
    else:
        for name, value in shown.items():
            print(f"{name}: {value if value is not None else '-'}")
    if check and shown["state"] != "current":
        raise typer.Exit(1)


@db_app.command("upgrade")
def upgrade(database_url: DatabaseUrl = None) -> None:
    """Migrate the schema to this version's newest revision (nothing to do: says so)."""
    engine = _engine(database_url)
    try:
        with setup_lock(engine):
            before = current_revision(engine)
            migrate(engine)
    finally:
        engine.dispose()
    if before == HEAD_REVISION:
        print(f"schema already at revision {HEAD_REVISION}")
    else:
        print(f"schema migrated from revision {before or '(empty)'} to {HEAD_REVISION}")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
