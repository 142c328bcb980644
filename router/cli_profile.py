"""``provenance-router profile <model-or-deployment>``: the provenance profile in a terminal
(a table, one block per dimension) or as JSON (``--json``, the admin API's shape).

Reads the registry in the database (``--database-url``) or a registry file (``--registry``),
as ``policy explain`` does."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from registry.profile import Profile, ProfileSubjectNotFound, build_profile
from router.cli_policy import DatabaseUrl, RegistryFile, load_registry_snapshot, open_registry

console = Console()


def register(app: typer.Typer) -> None:
    app.command("profile")(profile_command)


def profile_command(
    subject: Annotated[str, typer.Argument(help="A deployment id or a model id (org/name).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    database_url: DatabaseUrl = None,
    registry_file: RegistryFile = None,
) -> None:
    """Show the provenance profile of a model or deployment.

    Every fact, one row per dimension, with its source, confidence and retrieval date; no
    score."""
    with open_registry(database_url, registry_file) as engine:
        snapshot = load_registry_snapshot(engine)
    try:
        profile = build_profile(snapshot, subject, today=datetime.now(UTC).date())
    except ProfileSubjectNotFound as error:
        console.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(profile.to_dict(), indent=2))
        return
    console.print(_table(profile))


def _table(profile: Profile) -> Table:
    title = f"{profile.kind} {profile.subject} (registry version {profile.registry_version})"
    table = Table(title=escape(title), show_lines=True)
    for column in ("dimension", "entity", "fact", "value", "confidence", "source", "retrieved"):
        table.add_column(column, overflow="fold")
    for row in profile.rows:
        for index, fact in enumerate(row.facts):
            table.add_row(
                row.dimension if index == 0 else "",
                escape(fact.entity),
                fact.fact,
                escape(_text(fact.value)),
                fact.confidence,
                escape(fact.source or "-"),
                fact.retrieved_at or "-",
            )
    return table


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(", ", ": "))
