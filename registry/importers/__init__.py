"""Discover what admins already run and import it for review (``docs/import-export.md``).

    read a source (one module each)  ->  Discovery (plain data, ``found``)
    plan against the registry         ->  ImportPlan: the diff (``plan``, ``matching``)
    apply                             ->  one write transaction (``apply``)

Sources: ``gguf`` (files or a folder), ``ollama`` and ``openai`` (a running server's URL),
``hf`` (a Hugging Face snapshot folder), ``litellm`` (a proxy ``config.yaml``). Bad input is
one :class:`ImportFailed` naming the file or URL, raised before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal, get_args

from sqlalchemy import Engine

from registry.importers.apply import ImportResult, apply_discovery, preview, run_import
from registry.importers.errors import ImportFailed
from registry.importers.files import discover_hf, discover_litellm
from registry.importers.found import Discovery
from registry.importers.gguf_file import discover_gguf
from registry.importers.servers import discover_ollama, discover_openai

__all__ = [
    "SOURCES",
    "Discovery",
    "ImportFailed",
    "ImportResult",
    "apply_discovery",
    "discover",
    "import_source",
    "preview",
    "today",
]

Source = Literal["gguf", "ollama", "openai", "hf", "litellm"]
SOURCES: tuple[str, ...] = get_args(Source)


def discover(
    source: str, location: str, *, timeout_s: float, digest_cache: Path | None
) -> Discovery:
    """Read one source (no registry access); ``ImportFailed`` names the file or URL at fault."""
    if source not in SOURCES:
        raise ImportFailed(source, f"not a source; one of {', '.join(SOURCES)}")
    if "\x00" in location:
        raise ImportFailed(repr(location), "a path or URL cannot hold a NUL character")
    try:
        return _READERS[source](location, timeout_s=timeout_s, digest_cache=digest_cache)
    except (OSError, ValueError) as exc:  # a path too long, unreadable, ...
        raise ImportFailed(location, f"cannot read it ({exc})") from exc


_READERS: dict[str, Callable[..., Discovery]] = {
    "gguf": lambda location, *, digest_cache, **_: discover_gguf(
        location, digest_cache=digest_cache
    ),
    "ollama": lambda location, *, timeout_s, **_: discover_ollama(location, timeout_s=timeout_s),
    "openai": lambda location, *, timeout_s, **_: discover_openai(location, timeout_s=timeout_s),
    "hf": lambda location, **_: discover_hf(location),
    "litellm": lambda location, **_: discover_litellm(location),
}


def import_source(
    engine: Engine,
    *,
    source: str,
    location: str,
    apply: bool,
    actor: str,
    timeout_s: float,
    digest_cache: Path | None,
) -> ImportResult:
    """The import service: read ``source`` at ``location``, diff it against the registry, and
    with ``apply`` write the new entries in one transaction (see ``registry.importers.plan``)."""
    found = discover(source, location, timeout_s=timeout_s, digest_cache=digest_cache)
    return run_import(engine, found, apply=apply, actor=actor, today=today())


def today() -> date:
    """The day claims are retrieved on (UTC)."""
    return datetime.now(UTC).date()
