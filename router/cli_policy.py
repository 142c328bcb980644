"""``provenance-router policy ...``: write, test, explain and roll out policies from a terminal.

Every command builds the same :class:`PolicyEngine` live traffic uses, over the registry in the
database (``--database-url``), or, for ``test`` and ``explain`` in a CI job of your own repo,
over a registry file (``--registry``) applied to a throwaway in-memory database.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import Engine

from registry.catalog import catalog_text
from registry.db import make_engine, migrate, session_scope
from registry.gitops import apply, describe_error
from registry.service import (
    RegistryError,
    list_decisions,
    list_policies,
    load_snapshot,
    write_transaction,
)
from registry.snapshot import PolicySnap, RegistrySnapshot
from router.policy import (
    PolicyEngine,
    PolicyError,
    RequestContext,
    compile_policy,
    explain,
    list_presets,
    run_policy_tests,
    what_if,
)
from router.policy.lint import Finding, check_against_registry
from router.settings import Settings

policy_app = typer.Typer(no_args_is_help=True, help="Write, test, explain and activate policies.")
console = Console()

# typer refuses a missing or unreadable file with a usage error instead of a traceback
EXISTING_FILE: dict[str, Any] = {"exists": True, "dir_okay": False, "readable": True}
DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="Registry database (default: settings).")
]
RegistryFile = Annotated[
    Path | None,
    typer.Option(
        "--registry", help="Use this registry file instead of the database.", **EXISTING_FILE
    ),
]
PolicyFile = Annotated[
    Path | None,
    typer.Option(
        "--policy", "-p", help="Policy file (default: the active policy).", **EXISTING_FILE
    ),
]


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")


@contextmanager
def open_registry(database_url: str | None, registry_file: Path | None) -> Iterator[Engine]:
    if registry_file is not None:
        engine = make_engine("sqlite://")  # in memory, gone when the command ends
        migrate(engine)
        try:  # the catalog goes under the file, as `apply` does on an empty registry
            apply(engine, registry_file, actor="cli:policy", bootstrap=catalog_text())
        except (RegistryError, OSError) as error:
            engine.dispose()
            message = describe_error(error) if isinstance(error, RegistryError) else str(error)
            raise _fail(f"{registry_file}: {message}") from None
    else:
        engine = make_engine(database_url or Settings().database_url)
        migrate(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def load_registry_snapshot(engine: Engine) -> RegistrySnapshot:
    with session_scope(engine) as session:
        return load_snapshot(session=session)


def _policy(path: Path | None, snapshot: RegistrySnapshot) -> PolicySnap | None:
    if path is None:
        return snapshot.policy
    return PolicySnap(0, path.name, _format(path), path.read_text(encoding="utf-8"))


def _format(path: Path) -> Literal["yaml", "cedar"]:
    return "cedar" if path.suffix == ".cedar" else "yaml"


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(1)


@policy_app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="YAML rules or .cedar policy", **EXISTING_FILE)],
    database_url: DatabaseUrl = None,
    registry_file: RegistryFile = None,
) -> None:
    """Check a policy without saving it.

    Compiles it and validates it against the Cedar schema and the vocabularies; with
    --database-url or --registry, also against that registry (unknown tenants are errors,
    rules that match nothing today are warnings)."""
    fmt = _format(file)
    try:
        compiled = compile_policy(fmt, file.read_text(encoding="utf-8"))
    except PolicyError as error:
        raise _fail(str(error)) from None
    findings: tuple[Finding, ...] = ()
    if database_url is not None or registry_file is not None:
        with open_registry(database_url, registry_file) as engine:
            findings = check_against_registry(compiled, load_registry_snapshot(engine))
    for finding in findings:
        colour = "red" if finding.level == "error" else "yellow"
        text = escape(f"rule {finding.rule_id!r}: {finding.message}")
        console.print(f"[{colour}]{finding.level}[/{colour}]: {text}")
    if any(f.level == "error" for f in findings):
        raise typer.Exit(1)
    console.print(
        f"[green]valid[/green]: {len(compiled.rule_ids)} rules: " + ", ".join(compiled.rule_ids)
    )


@policy_app.command("test")
def test_command(
    tests: Annotated[Path, typer.Argument(help="Policy test file (YAML)", **EXISTING_FILE)],
    policy: PolicyFile = None,
    registry: RegistryFile = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Run a policy's tests (exit 1 on a failure, for CI).

    Each test is an expected decision: given -> expect allow/deny [rule]."""
    with open_registry(database_url, registry) as engine:
        snapshot = load_registry_snapshot(engine)
    try:
        chosen = _policy(policy, snapshot)
        report = run_policy_tests(
            lambda: PolicyEngine.build(snapshot, chosen), tests.read_text(encoding="utf-8")
        )
    except PolicyError as error:
        raise _fail(str(error)) from None
    for result in report.results:
        mark = "[green]PASS[/green]" if result.passed else "[red]FAIL[/red]"
        text = result.name + (f": {result.message}" if result.message else "")
        console.print(f"{mark} {escape(text)}")  # names are the user's text, not markup
    console.print(f"{report.passed} passed, {report.failed} failed")
    if not report.ok:
        raise typer.Exit(1)


@policy_app.command("explain")
def explain_command(
    tenant: Annotated[str, typer.Option(help="Tenant id")],
    model: Annotated[
        str, typer.Option(help="Route name or model id (what a client sends as `model`)")
    ],
    classification: Annotated[str, typer.Option(help="Data classification")] = "public",
    action: Annotated[str, typer.Option(help="infer or embed")] = "infer",
    purpose: Annotated[str | None, typer.Option(help="Request purpose")] = None,
    policy: PolicyFile = None,
    registry: RegistryFile = None,
    database_url: DatabaseUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Explain a request: every candidate, allowed or denied, and why.

    For a tenant, a model or route name and a context, as live routing decides it."""
    with open_registry(database_url, registry) as engine:
        snapshot = load_registry_snapshot(engine)
    try:
        engine_ = PolicyEngine.build(snapshot, _policy(policy, snapshot))
        result = explain(
            engine_,
            snapshot,
            tenant_id=tenant,
            model_or_route=model,
            action=action,
            context=RequestContext(  # the tenant's region, as live routing passes it
                classification=classification,
                purpose=purpose,
                caller_region=getattr(snapshot.tenants.get(tenant), "region", None),
            ),
        )
    except (PolicyError, ValueError) as error:  # ValueError: unknown classification
        raise _fail(str(error)) from None
    if as_json:
        typer.echo(json.dumps(result.to_dict(), default=str, indent=2))
        return
    table = Table(
        title=f"{model} for {tenant} ({result.context.classification}), "
        f"policy v{result.policy_version}"
    )
    for column in ("deployment", "model", "decision", "rules", "reasons"):
        table.add_column(column)
    for c in result.candidates:
        decision = "[green]allow[/green]" if c.allowed else "[red]deny[/red]"
        table.add_row(
            c.deployment_id, c.model_id, decision, ", ".join(c.rule_ids), "\n".join(c.reasons)
        )
    console.print(table)


@policy_app.command("what-if")
def what_if_command(
    draft: Annotated[Path, typer.Argument(help="Draft policy file", **EXISTING_FILE)],
    last: Annotated[int, typer.Option(help="Replay the last N recorded decisions")] = 1000,
    database_url: DatabaseUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Which recorded requests would the draft decide differently?

    Replays the last recorded decisions (the audit log) under the draft; prints each request
    whose allowed deployments change, with the draft's deciding rules and reasons."""
    with open_registry(database_url, None) as engine:
        snapshot = load_registry_snapshot(engine)
        with session_scope(engine) as session:
            recorded = list(reversed(list_decisions(session=session, limit=last)))
    try:
        draft_policy = _policy(draft, snapshot)
        assert draft_policy is not None
        report = what_if(snapshot, draft_policy, recorded)
    except PolicyError as error:
        raise _fail(str(error)) from None
    if as_json:
        typer.echo(json.dumps(report.to_dict(), default=str, indent=2))
        return
    skipped = f" ({report.skipped} skipped: purpose or region outside today's vocabulary)"
    console.print(
        f"{report.examined} recorded requests examined{skipped if report.skipped else ''}, "
        f"{report.changed} would change"
    )
    for change in report.changes:
        console.print(
            escape(
                f"  {change.request_id} {change.tenant_id} {change.requested_model}: allowed "
                f"{list(change.allowed_before)} -> {list(change.allowed_after)}"
            )
            + (" [red](served deployment now denied)[/red]" if change.chosen_now_denied else "")
        )
        for decision in (*change.newly_denied, *change.newly_allowed):
            for reason in decision.reasons:
                console.print(escape(f"      {decision.deployment_id}: {reason}"))


@policy_app.command()
def save(
    file: Annotated[Path, typer.Argument(help="Policy file", **EXISTING_FILE)],
    name: Annotated[str | None, typer.Option(help="Policy name (default: file name)")] = None,
    activate: Annotated[bool, typer.Option(help="Activate it at once")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Save a new policy version (validated; --activate to use it)."""
    fmt = _format(file)
    source = file.read_text(encoding="utf-8")
    try:
        compile_policy(fmt, source)
    except PolicyError as error:
        raise _fail(str(error)) from None
    with (
        open_registry(database_url, None) as engine,
        write_transaction(engine=engine, actor="cli:policy") as writer,
    ):
        saved = writer.save_policy(
            name=name or file.stem, format=fmt, source=source, activate=activate
        )
    console.print(f"saved policy version {saved['version']}" + (" (active)" if activate else ""))


@policy_app.command()
def activate(
    version: Annotated[int, typer.Argument(help="Policy version to activate")],
    database_url: DatabaseUrl = None,
) -> None:
    """Make a saved policy version the active one."""
    with (
        open_registry(database_url, None) as engine,
        write_transaction(engine=engine, actor="cli:policy") as writer,
    ):
        writer.activate_policy(version=version)
    console.print(f"policy version {version} is active")


@policy_app.command("list")
def list_command(database_url: DatabaseUrl = None) -> None:
    """Saved policy versions."""
    with open_registry(database_url, None) as engine, session_scope(engine) as session:
        policies = list_policies(session=session)
    for policy in policies:
        active = " [green](active)[/green]" if policy.get("active") else ""
        name = escape(policy["name"])  # the user's text, not markup
        console.print(f"v{policy['version']} {name} {policy['format']}{active}")


@policy_app.command()
def presets() -> None:
    """The presets a compliance team can start from."""
    for preset in list_presets():
        data: dict[str, Any] = asdict(preset)
        console.print(f"[bold]{data.get('name')}[/bold]: {data.get('description', '')}")
