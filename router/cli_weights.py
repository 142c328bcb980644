"""``provenance-router verify-weights [DEPLOYMENT]``: check the weights local deployments serve
against their published digests and signatures (``router.weights``) and record the results.

One line per deployment: ``verified`` (the claim source it recorded), ``failed`` (the
deployment is now blocked, and why) or ``unverified`` (nothing to compare with). Exit status 1
when any failed. The gateway runs the same check at each start for the bundled model.
"""

from __future__ import annotations

from typing import Annotated

import typer

from registry.db import migrate
from registry.weights import describe
from router.cli_policy import DatabaseUrl
from router.settings import Settings, registry_engine
from router.weights import verify_local_weights


def register(app: typer.Typer) -> None:
    app.command("verify-weights")(verify_weights_command)


def verify_weights_command(
    deployment: Annotated[
        str | None, typer.Argument(help="One deployment id (default: every local deployment).")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Check the weights of local deployments.

    Their SHA-256 against the published digest and, with a public key configured, their
    model-signing bundle; a deployment whose weights fail is blocked."""
    settings = Settings()
    engine = registry_engine(settings, database_url)
    try:
        migrate(engine)
        results = verify_local_weights(engine, settings, deployment_id=deployment)
    finally:
        engine.dispose()
    for outcome in results:
        print(describe(outcome))
    if not results:
        print("no local deployment to verify")
    if any(outcome.status == "failed" for outcome in results):
        raise typer.Exit(1)
