"""``provenance-router export``: the registry as a registry file (YAML, ``router.cli_gitops``)
or, with ``cyclonedx``, as a CycloneDX 1.6 ML-BOM.

    provenance-router export [-o registry.yaml] [--database-url URL]
    provenance-router export cyclonedx [--tenant T] [-o bom.json] [--database-url URL]
        [--registry FILE]

``export cyclonedx --tenant T`` lists only what tenant T may use under the active policy
(``router.bom``); without ``--tenant``, every model and deployment.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from router.bom import cyclonedx_bom
from router.cli_gitops import DatabaseOption, OutputOption, export_command
from router.cli_policy import RegistryFile, load_registry_snapshot, open_registry

export_app = typer.Typer(
    invoke_without_command=True,
    help="Export the registry: YAML, or CycloneDX.\n\nWith no subcommand: the registry as a "
    "registry file (YAML); cyclonedx: a CycloneDX 1.6 ML-BOM.",
)
TenantOption = Annotated[
    str | None,
    typer.Option("--tenant", help="Only what this tenant may use (default: the whole registry)."),
]


def register(app: typer.Typer) -> None:
    """Add ``export`` (and ``export cyclonedx``) to the main command line."""
    app.add_typer(export_app, name="export")


@export_app.callback()
def export_registry(
    context: typer.Context, output: OutputOption = None, database_url: DatabaseOption = None
) -> None:
    """Write the registry as a registry file.

    No secrets and no timestamps: the file applies back to the same registry."""
    if context.invoked_subcommand is None:
        export_command(output=output, database_url=database_url)


@export_app.command("cyclonedx")
def cyclonedx_command(
    tenant: TenantOption = None,
    output: OutputOption = None,
    database_url: DatabaseOption = None,
    registry_file: RegistryFile = None,
) -> None:
    """The registry as a CycloneDX 1.6 ML-BOM.

    The whole registry, or with --tenant what that tenant may use (JSON). Models with
    supplier, licenses (declared and effective), weights hashes and lineage; deployments as
    services with location, operator and data handling. No secrets."""
    with open_registry(database_url, registry_file) as engine:
        snapshot = load_registry_snapshot(engine)
    text = cyclonedx_bom(snapshot, tenant=tenant)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
