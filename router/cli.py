"""The ``provenance-router`` command line.

Every expected failure (a registry error, an unreachable database, a missing file, a bad
value) ends in one line on stderr, ``error: ...``, and exit status 1; a usage error is status 2
(click's own); Ctrl-C ends quietly with status 130. Only a bug prints a traceback.
"""

from __future__ import annotations

import sys
from importlib.metadata import version as package_version
from typing import Any

import typer
import uvicorn

from router.settings import Settings

EXPECTED_FAILURES: tuple[type[BaseException], ...] = (OSError, ValueError, LookupError)


class CommandLine(typer.Typer):
    """The Typer app, with expected failures reported in one line instead of a traceback."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("prog_name", "provenance-router")
        try:
            return super().__call__(*args, **kwargs)
        except KeyboardInterrupt:
            sys.exit(130)
        except Exception as error:
            if not _expected(error):
                raise
            print(f"error: {_one_line(error)}", file=sys.stderr)
            sys.exit(1)


def _expected(error: Exception) -> bool:
    from sqlalchemy.exc import SQLAlchemyError

    from registry.service import RegistryError
    from router.policy import PolicyError

    return isinstance(error, (*EXPECTED_FAILURES, RegistryError, PolicyError, SQLAlchemyError))


def _one_line(error: Exception) -> str:
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(error, SQLAlchemyError):  # the driver's own words, not SQLAlchemy's wrapping
        cause = getattr(error, "orig", None) or error.__cause__ or error
        return "database: " + " ".join(str(cause).split())
    return " ".join(str(error).split()) or type(error).__name__


app = CommandLine(
    no_args_is_help=True,
    help="OpenAI-compatible gateway with a provenance registry.",
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: whole sentences, no <bool> on every flag
)


def _version(value: bool) -> None:
    if value:
        print(f"provenance-router {package_version('provenance-router')}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """provenance-router: route LLM requests by provenance, lineage, license and hosting."""


class _Server(uvicorn.Server):
    """uvicorn, saying once where it listens (uvicorn's own line is at info level)."""

    def __init__(self, config: uvicorn.Config, key_hint: str) -> None:
        super().__init__(config)
        self._key_hint = key_hint

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            for server in self.servers:
                for sock in server.sockets:
                    host, port = sock.getsockname()[:2]
                    print(
                        f"provenance-router listening on http://{host}:{port} ({self._key_hint})",
                        flush=True,
                    )
                    return


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default from settings: 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default from settings: 8000)."),
    local_model: bool | None = typer.Option(
        None, "--local-model/--no-local-model", help="Start the bundled SmolLM2 model."
    ),
    workers: int | None = typer.Option(
        None,
        min=1,
        help="Serving processes on the one port (default from settings: 1). Each has its own "
        "routing table, breakers and audit writer; the bundled model is started once.",
    ),
) -> None:
    """Start the gateway.

    With no configuration: a SQLite registry in the user data dir, the built-in catalog, the
    default policy and the bundled local model."""
    overrides: dict[str, object] = {}
    if local_model is not None:
        overrides["local_model"] = local_model
    if workers is not None:
        overrides["workers"] = workers
    settings = Settings(**overrides)  # type: ignore[arg-type]
    hint = (
        "admin key: from PROVENANCE_ROUTER_ADMIN_KEY"
        if settings.admin_key
        else "admin key: printed above on first start"
    )
    host, port = host or settings.host, settings.port if port is None else port
    if settings.workers > 1:
        from router.workers import Supervisor

        sys.exit(Supervisor(settings, overrides, host=host, port=port, hint=hint).run())
    from router.asgi import create_app
    from router.server import server_config, tune_allocator

    tune_allocator(settings)
    config = server_config(create_app(settings), settings, host=host, port=port)
    _Server(config, hint).run()


def _register_subcommands() -> None:
    from router.cli_audit import register as register_audit
    from router.cli_backup import register as register_backup
    from router.cli_db import register as register_db
    from router.cli_export import register as register_export
    from router.cli_gitops import register as register_gitops
    from router.cli_import import register as register_import
    from router.cli_keys import register as register_keys
    from router.cli_policy import register as register_policy
    from router.cli_profile import register as register_profile
    from router.cli_receipts import register as register_receipts
    from router.cli_report import register as register_report
    from router.cli_weights import register as register_weights

    register_gitops(app)
    register_export(app)
    register_policy(app)
    register_keys(app)
    register_backup(app)
    register_db(app)
    register_receipts(app)
    register_audit(app)
    register_profile(app)
    register_report(app)
    register_weights(app)
    register_import(app)


_register_subcommands()
