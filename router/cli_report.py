"""``provenance-router report exposure``: the provenance exposure report from a terminal.

    report exposure [--since 7d] [--until WHEN] [--tenant T] [--route R]
                    [--format table|json|csv|html] [--out FILE] [--database-url URL]

Reads the audit log and registry in the database directly (as ``audit`` does); switching
readiness is decided by the same :class:`PolicyEngine` live traffic uses, over the active
policy. ``--since``/``--until`` take an ISO date or time (UTC) or an age such as ``7d``,
``12h`` or ``30m``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from registry.db import make_engine, migrate, session_scope
from registry.service import load_snapshot
from router.exposure import (
    DIMENSIONS,
    Alternative,
    ExposureReport,
    build_report,
    render_csv,
    window,
)
from router.exposure_html import render_html
from router.policy import PolicyEngine
from router.settings import Settings

report_app = typer.Typer(no_args_is_help=True, help="Reports over the audit log.")
AGE = re.compile(r"^(\d+)([dhm])$")
UNITS = {"d": "days", "h": "hours", "m": "minutes"}
Format = Literal["table", "json", "csv", "html"]


def register(app: typer.Typer) -> None:
    app.add_typer(report_app, name="report")


def moment(value: str | None, now: datetime) -> datetime | None:
    """An age (``7d``: seven days before ``now``) or an ISO date or time (UTC when naive)."""
    if value is None:
        return None
    age = AGE.match(value)
    if age:
        return now - timedelta(**{UNITS[age.group(2)]: int(age.group(1))})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"not an age (7d, 12h, 30m) nor an ISO time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@report_app.command("exposure")
def exposure_command(
    since: Annotated[str | None, typer.Option(help="Start: 7d, 12h, or ISO time.")] = "7d",
    until: Annotated[str | None, typer.Option(help="End (excluded); default: now.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's traffic.")] = None,
    route: Annotated[str | None, typer.Option(help="Only this route's traffic.")] = None,
    format: Annotated[str, typer.Option("--format", help="table, json, csv or html.")] = "table",
    out: Annotated[Path | None, typer.Option("--out", help="Write here, not stdout.")] = None,
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="Database (default: settings).")
    ] = None,
) -> None:
    """Share of requests and tokens by developer country (own and along lineage), developer,
    license, hosting, operator country, serving location and hardware vendors, per day, and
    each route's allowed alternatives of another jurisdiction or hardware supply chain."""
    if format not in ("table", "json", "csv", "html"):
        raise typer.BadParameter(f"unknown format {format!r}", param_hint="--format")
    now = datetime.now(UTC)
    start, end = window(moment(since, now), moment(until, now) or now)
    report = _report(database_url, start, end, tenant, route)
    if format == "table":
        text = _table_text(report)
    elif format == "json":
        text = json.dumps(report.to_dict(), indent=2) + "\n"
    else:
        text = render_csv(report) if format == "csv" else render_html(report)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out}")


def _report(
    database_url: str | None,
    since: datetime,
    until: datetime,
    tenant: str | None,
    route: str | None,
) -> ExposureReport:
    engine = make_engine(database_url or Settings().database_url)
    try:
        migrate(engine)
        with session_scope(engine) as session:
            snapshot = load_snapshot(session=session)
        policy = PolicyEngine.build(snapshot, snapshot.policy)
        return build_report(
            engine, snapshot, policy, since=since, until=until, tenant=tenant, route=route
        )
    finally:
        engine.dispose()


def _table_text(report: ExposureReport) -> str:
    console = Console(record=True, width=100, highlight=False, force_terminal=False)
    console.print(
        f"{report.requests} requests, {report.tokens} tokens, {report.since} to {report.until}"
        f" (tenant: {report.tenant or 'all'}, route: {report.route or 'all'})"
    )
    for name, title in DIMENSIONS:
        table = Table(title=title, title_justify="left")
        for column in ("value", "requests", "% requests", "tokens", "% tokens"):
            table.add_column(column, justify="left" if column == "value" else "right")
        for s in report.dimensions[name]:
            table.add_row(
                s.value,
                str(s.requests),
                f"{s.request_share:.2f}",
                str(s.tokens),
                f"{s.token_share:.2f}",
            )
        console.print(table)
    for readiness in report.switching:
        console.print(
            f"route {readiness.route}: serves {', '.join(a.deployment for a in readiness.current)};"
            f" other jurisdiction: {_names(readiness.other_jurisdiction)};"
            f" other hardware: {_names(readiness.other_hardware)}"
        )
    return console.export_text()


def _names(alternatives: Sequence[Alternative]) -> str:
    return ", ".join(a.deployment for a in alternatives) or "none"
