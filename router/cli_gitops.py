"""``provenance-router apply`` and ``provenance-router export``: the registry as a YAML file.

    provenance-router apply -f registry.yaml [--dry-run] [--prune] [--database-url URL]
    provenance-router export [-o registry.yaml] [--database-url URL]

Both run the migrations first (idempotent). ``apply`` prints the plan per entity
(``+`` create, ``~`` update with ``old -> new`` per field, ``-`` delete), then applies it in one
transaction; any error prints where and why, changes nothing and exits with status 1. The
format and the meaning of ``--prune`` are in ``docs/registry-format.md``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text
from sqlalchemy import Engine

from registry.catalog import catalog_text
from registry.db import make_engine, migrate
from registry.gitops import ApplyResult, Change, apply, describe_error, export
from registry.gitops_schema import SECTION_OF
from registry.service import RegistryError
from router.settings import Settings

DEFAULT_ACTOR = "cli"
_MARKS = {"create": ("+", "green"), "update": ("~", "yellow"), "delete": ("-", "red")}

FileOption = Annotated[
    str, typer.Option("-f", "--file", help="Registry file to apply; '-' reads standard input.")
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Show the changes and the errors, change nothing.")
]
PruneOption = Annotated[
    bool,
    typer.Option(
        "--prune",
        help="Also delete what the file does not list, in the sections the file has.",
    ),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option("--database-url", help="Registry database (default: from settings)."),
]
ActorOption = Annotated[
    str, typer.Option("--actor", help="Who applies, as recorded in the registry change log.")
]
CatalogOption = Annotated[
    bool | None,
    typer.Option(
        "--catalog/--no-catalog",
        help="On an empty registry, load the built-in catalog under the file (default: settings).",
    ),
]
OutputOption = Annotated[
    Path | None, typer.Option("-o", "--output", help="Write to this file instead of stdout.")
]


def register(app: typer.Typer) -> None:
    """Add ``apply`` to the main command line. ``export`` is ``router.cli_export``'s group:
    with no subcommand it runs this module's ``export_command``."""
    app.command("apply")(apply_command)


def apply_command(
    file: FileOption,
    dry_run: DryRunOption = False,
    prune: PruneOption = False,
    database_url: DatabaseOption = None,
    actor: ActorOption = DEFAULT_ACTOR,
    catalog: CatalogOption = None,
) -> None:
    """Make the registry match a registry file (GitOps)."""
    out, err = _console(), _console(stderr=True)
    settings = Settings() if database_url is None or catalog is None else None
    load_catalog = catalog if catalog is not None else bool(settings and settings.load_catalog)
    engine = _engine(database_url, settings)
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        migrate(engine)
        result = apply(
            engine,
            text,
            dry_run=dry_run,
            prune=prune,
            actor=actor,
            env=os.environ,  # secret_ref names env vars chosen by the file, not by settings
            bootstrap=catalog_text() if load_catalog else None,
        )
    except (RegistryError, OSError) as exc:
        _print_error(err, exc, "<stdin>" if file == "-" else file)
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()
    _print_result(out, result, file)


def export_command(output: OutputOption = None, database_url: DatabaseOption = None) -> None:
    """Write the registry as a registry file.

    No secrets and no timestamps: the file applies back to the same registry."""
    engine = _engine(database_url, None)
    try:
        migrate(engine)
        text = export(engine)
    finally:
        engine.dispose()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


def _engine(database_url: str | None, settings: Settings | None) -> Engine:
    url = database_url or (settings or Settings()).database_url
    return make_engine(url)


# --------------------------------------------------------------------------- output


def _console(*, stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _print_error(console: Console, exc: Exception, file: str) -> None:
    if isinstance(exc, RegistryError):
        problems = getattr(exc, "problems", None) or (describe_error(exc),)
    else:
        problems = (str(exc),)
    console.print(Text(f"error: {file}: nothing was changed", style="bold red"))
    for problem in problems:
        console.print(Text(f"  {problem}"))


def _print_result(console: Console, result: ApplyResult, file: str) -> None:
    if not result.changes:
        console.print(f"No changes: the registry already matches {file}.")
        return
    for line in _plan_lines(result.changes):
        console.print(line)
    counts = f"{len(result.creates)} created, {len(result.updates)} updated, "
    counts += f"{len(result.deletes)} deleted"
    if result.dry_run:
        console.print(Text(f"Dry run: would apply {counts}; nothing was changed.", style="bold"))
    else:
        console.print(Text(f"Applied: {counts}; registry version {result.version}.", style="bold"))


def _plan_lines(changes: tuple[Change, ...]) -> Iterator[Text]:
    """One line per entity (and per changed field); catalog creates summed up in one line."""
    catalog = [c for c in changes if c.op == "create" and c.entry and c.entry.origin == "catalog"]
    if catalog:
        yield Text(f"+ built-in catalog: {_count_by_section(catalog)}", style="green")
    summed_up = {(c.kind, c.id) for c in catalog}
    for change in changes:
        if (change.kind, change.id) in summed_up:
            continue
        mark, style = _MARKS[change.op]
        yield Text(f"{mark} {SECTION_OF[change.kind]}[{change.id}]", style=style)
        for field in change.fields:
            old = f"{_show(field.old)} -> " if change.op == "update" else ""
            yield Text(f"    {field.field}: {old}{_show(field.new)}")


def _count_by_section(changes: list[Change]) -> str:
    counts: dict[str, int] = {}
    for change in changes:
        counts[SECTION_OF[change.kind]] = counts.get(SECTION_OF[change.kind], 0) + 1
    return ", ".join(f"{n} {section}" for section, n in counts.items())


def _show(value: Any) -> str:
    """A value as a short YAML-like string."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)
