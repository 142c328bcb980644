"""``provenance-router import <source> <path-or-url>``: discover what admins already run and
import it for review (``docs/import-export.md``).

    provenance-router import gguf PATH        a .gguf file or a folder of them
    provenance-router import ollama URL       a running Ollama
    provenance-router import openai URL       an OpenAI-compatible server (vLLM, llama.cpp, ...)
    provenance-router import hf PATH          a Hugging Face snapshot folder
    provenance-router import litellm FILE     a LiteLLM proxy config.yaml

Each prints the diff and changes nothing; ``--apply`` writes it (one transaction, new entries
``under_review``); ``--json`` prints the admin API's JSON. Bad input: one line on stderr naming
the file or URL, exit status 1, nothing imported.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from registry.db import make_engine, migrate
from registry.importers import import_source
from registry.importers.apply import ImportResult
from router.settings import Settings

ApplyOption = Annotated[
    bool, typer.Option("--apply", help="Write the diff (default: show it, change nothing).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the diff as JSON.")]
DatabaseOption = Annotated[
    str | None, typer.Option("--database-url", help="Registry database (default: settings).")
]
ActorOption = Annotated[
    str, typer.Option("--actor", help="Who imports, as recorded in the registry change log.")
]
_MARKS = {"create": ("+", "green"), "unchanged": ("=", "dim"), "exists": ("!", "yellow")}

import_app = typer.Typer(
    no_args_is_help=True,
    help="Import what you already run, for review.\n\nGGUF files, Ollama, OpenAI-compatible "
    "servers, Hugging Face snapshots or a LiteLLM config: a dry-run diff first, --apply to "
    "write.",
    rich_markup_mode=None,
)


def register(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")


def _run(
    source: str, location: str, apply: bool, as_json: bool, database_url: str | None, actor: str
) -> None:
    settings = Settings()
    engine = make_engine(database_url or settings.database_url)
    try:
        migrate(engine)
        result = import_source(
            engine,
            source=source,
            location=location,
            apply=apply,
            actor=actor,
            timeout_s=settings.import_timeout_s,
            digest_cache=settings.import_digest_cache,
        )
    finally:
        engine.dispose()
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
        return
    console = Console(highlight=False, soft_wrap=True)
    for line in diff_lines(result):
        console.print(line)


@import_app.command("gguf")
def gguf_command(
    path: Annotated[str, typer.Argument(help="A .gguf file or a folder of them.")],
    apply: ApplyOption = False,
    as_json: JsonOption = False,
    database_url: DatabaseOption = None,
    actor: ActorOption = "cli:import",
) -> None:
    """GGUF files: header facts, SHA-256 of the weights, quantized_from their base."""
    _run("gguf", path, apply, as_json, database_url, actor)


@import_app.command("ollama")
def ollama_command(
    url: Annotated[str, typer.Argument(help="The Ollama server, e.g. http://127.0.0.1:11434")],
    apply: ApplyOption = False,
    as_json: JsonOption = False,
    database_url: DatabaseOption = None,
    actor: ActorOption = "cli:import",
) -> None:
    """A running Ollama: /api/tags and /api/show -> models and deployments."""
    _run("ollama", url, apply, as_json, database_url, actor)


@import_app.command("openai")
def openai_command(
    url: Annotated[str, typer.Argument(help="The server, e.g. http://127.0.0.1:8000 (or .../v1)")],
    apply: ApplyOption = False,
    as_json: JsonOption = False,
    database_url: DatabaseOption = None,
    actor: ActorOption = "cli:import",
) -> None:
    """An OpenAI-compatible server: /v1/models -> deployments (LoRA adapters: adapter_of)."""
    _run("openai", url, apply, as_json, database_url, actor)


@import_app.command("hf")
def hf_command(
    path: Annotated[str, typer.Argument(help="A Hugging Face snapshot folder.")],
    apply: ApplyOption = False,
    as_json: JsonOption = False,
    database_url: DatabaseOption = None,
    actor: ActorOption = "cli:import",
) -> None:
    """A Hugging Face snapshot: model card front matter and config.json."""
    _run("hf", path, apply, as_json, database_url, actor)


@import_app.command("litellm")
def litellm_command(
    path: Annotated[str, typer.Argument(help="A LiteLLM proxy config.yaml.")],
    apply: ApplyOption = False,
    as_json: JsonOption = False,
    database_url: DatabaseOption = None,
    actor: ActorOption = "cli:import",
) -> None:
    """A LiteLLM proxy config: model_list -> deployments and routes; secrets stay references."""
    _run("litellm", path, apply, as_json, database_url, actor)


def diff_lines(result: ImportResult) -> Iterator[Text]:
    """The diff for a terminal: entries, matches, ambiguities, what was left unset, warnings."""
    diff = result.to_dict()
    for entry in diff["entries"]:
        mark, style = _MARKS[entry["op"]]
        note = {"unchanged": " (unchanged)", "exists": " (exists with other values: not changed)"}
        yield Text(f"{mark} {entry['kind']}[{entry['id']}]{note.get(entry['op'], '')}", style=style)
        if entry["op"] == "create":
            for name, value in entry["fields"].items():
                source = entry["sources"].get(name)
                yield Text(f"    {name}: {_show(value)}" + (f"   <- {source}" if source else ""))
        for name, values in entry.get("differs", {}).items():
            yield Text(
                f"    {name}: stored {_show(values['stored'])}, found {_show(values['found'])}"
            )
    for match in diff["matches"]:
        told = f"{match['name']} -> {match['model']} ({match['relation']}; rule {match['rule']}"
        told += f", confidence {match['confidence']}"
        if match["applied"]:
            yield Text(f"match {told})", style="cyan")
        else:
            yield Text(f"suggestion {told}; not applied: only an exact id names a served model)")
    for item in diff["ambiguous"]:
        yield Text(
            f"ambiguous {item['name']}: {', '.join(item['candidates'])} ({item['rule']}; "
            "not applied: set the lineage yourself)",
            style="yellow",
        )
    for text in (*diff["unresolved"], *diff["warnings"]):
        yield Text(f"warning: {text}", style="yellow")
    yield Text(_summary(result), style="bold")


def _summary(result: ImportResult) -> str:
    counts = result.plan.to_dict()["summary"]
    told = f"{counts['create']} to create, {counts['unchanged']} unchanged, {counts['exists']} "
    told += "existing with other values (never changed by an import)"
    if result.applied:
        version = result.version
        return (
            f"Applied: {told}; registry version {version}." if version else "Applied: nothing new."
        )
    return f"Dry run: {told}. Nothing was changed; --apply writes it."


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)
