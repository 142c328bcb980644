"""The ``provenance-router`` command line."""

from __future__ import annotations

import typer
import uvicorn

from router.settings import Settings

app = typer.Typer(
    no_args_is_help=True, help="OpenAI-compatible gateway with a provenance registry."
)


@app.callback()
def main() -> None:
    """provenance-router: route LLM requests by provenance, lineage, license and hosting."""


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default from settings: 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default from settings: 8000)."),
    local_model: bool | None = typer.Option(
        None, "--local-model/--no-local-model", help="Start the bundled SmolLM2 model."
    ),
) -> None:
    """Start the gateway: SQLite registry in the user data dir, built-in catalog, default
    policy and the bundled local model unless configured otherwise."""
    overrides: dict[str, object] = {}
    if local_model is not None:
        overrides["local_model"] = local_model
    settings = Settings(**overrides)  # type: ignore[arg-type]
    from router.asgi import create_app

    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=settings.log_level,
        lifespan="on",
    )


def _register_subcommands() -> None:
    from router.cli_audit import register as register_audit
    from router.cli_gitops import register as register_gitops
    from router.cli_policy import register as register_policy

    register_gitops(app)
    register_policy(app)
    register_audit(app)


_register_subcommands()
