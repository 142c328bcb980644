"""``provenance-router audit ...``: verify, export and prune the audit log (docs/audit.md).

    audit verify [--database-url URL | --archive FILE] [--keys DIR]
    audit export [--before DATE] -o FILE.jsonl
    audit prune  [--before DATE] [--archive FILE.jsonl] [--keys DIR]

``--before`` defaults to now minus ``audit_retention_days``. ``--keys`` is the gateway's
signing key directory (``signing_key_dir``): verify reads the public keys published there;
prune signs each chain's new boundary with the current key.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy import Engine

from registry import audit_store
from registry.audit_archive import read_archive, write_archive
from registry.audit_verify import Report, verify
from registry.db import make_engine, migrate
from router.settings import Settings
from router.signing import CURRENT, load_or_create_signer, public_keys
from router.signing import verify as verify_signature

audit_app = typer.Typer(no_args_is_help=True, help="Verify, export and prune the audit log.")

DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="Audit database (default: settings).")
]
KeysDir = Annotated[
    Path | None,
    typer.Option("--keys", help="The gateway's signing key directory (default: settings)."),
]
Before = Annotated[
    str | None,
    typer.Option(
        "--before",
        help="Date or time (UTC, ISO 8601); default: now minus audit_retention_days.",
    ),
]


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def verify_command(
    database_url: DatabaseUrl = None,
    archive: Annotated[
        Path | None, typer.Option("--archive", help="Check an exported archive instead.")
    ] = None,
    keys: KeysDir = None,
) -> None:
    """Check the hash chains and signed checkpoints; name the first bad record of each chain.
    Exit code 1 when anything is wrong."""
    settings = Settings()
    published = public_keys(keys or settings.signing_key_dir)

    def check(key_id: str, message: bytes, signature: bytes) -> bool:
        pem = published.get(key_id)
        return pem is not None and verify_signature(pem, message, signature)

    if archive is not None:
        rows, marks, evaluations = read_archive(archive)
        report = verify(rows, marks, evaluations, check)
    else:
        engine = _engine(database_url, settings)
        try:
            report = verify(
                audit_store.iter_rows(engine),
                audit_store.checkpoints(engine),
                audit_store.evaluations(engine),
                check,
            )
        finally:
            engine.dispose()
    _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("export")
def export_command(
    output: Annotated[Path, typer.Option("-o", "--output", help="The archive to write.")],
    before: Before = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Write the records older than ``--before`` as a verifiable archive (JSON Lines)."""
    settings = Settings()
    moment = _before(before, settings)
    engine = _engine(database_url, settings)
    try:
        count = write_archive(engine=engine, before=moment, path=output)
    finally:
        engine.dispose()
    Console().print(f"exported {count} records before {moment.isoformat()} to {output}")


@audit_app.command("prune")
def prune_command(
    before: Before = None,
    archive: Annotated[
        Path | None, typer.Option("--archive", help="Export what is deleted here first.")
    ] = None,
    database_url: DatabaseUrl = None,
    keys: KeysDir = None,
) -> None:
    """Delete the records older than ``--before`` (after archiving them with ``--archive``),
    then the evaluations no record uses; each chain keeps a signed boundary, so what remains
    still verifies."""
    settings = Settings()
    moment = _before(before, settings)
    key_dir = keys or settings.signing_key_dir
    if not (key_dir / CURRENT).exists():
        Console(stderr=True).print(f"no signing key in {escape(str(key_dir))}; pass --keys")
        raise typer.Exit(2)
    signer = load_or_create_signer(key_dir)
    engine = _engine(database_url, settings)
    try:
        marks = audit_store.boundaries(
            engine=engine, before=moment, sign=lambda m: (signer.key_id, signer.sign(m))
        )
        if archive is not None:
            write_archive(engine=engine, before=moment, path=archive, boundaries=marks)
        pruned = audit_store.prune(engine=engine, before=moment, marks=marks)
    finally:
        engine.dispose()
    Console().print(
        f"pruned {pruned.rows} records before {moment.isoformat()}, {pruned.evaluations} "
        f"unused evaluations and {pruned.exposure_facts} exposure facts of older registry "
        "versions"
    )


def _engine(database_url: str | None, settings: Settings) -> Engine:
    engine = make_engine(database_url or settings.database_url)
    migrate(engine)
    return engine


def _before(value: str | None, settings: Settings) -> datetime:
    if value is None:
        if settings.audit_retention_days is None:
            raise typer.BadParameter("give --before or set audit_retention_days")
        return datetime.now(UTC) - timedelta(days=settings.audit_retention_days)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"not an ISO date or time: {value!r}") from None
    if len(value) == 10:  # a plain date: its midnight
        moment = datetime.combine(date.fromisoformat(value), datetime.min.time())
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _print_report(report: Report) -> None:
    console = Console(highlight=False, soft_wrap=True)
    summary = (
        f"{report.rows} records in {report.chains} chains; {report.checkpoints} checkpoints,"
        f" {report.signatures_ok} signatures valid; {report.unchained} written before chaining;"
        f" {report.unsigned_tail} not yet covered by a checkpoint"
    )
    if report.ok:
        console.print(f"OK: {summary}")
        return
    console.print(f"FAILED: {summary}")
    for problem in report.problems:
        console.print(f"  {problem.kind}: {escape(problem.message)}")
