"""``provenance-router keys ...``: create, list, show, revoke and rotate API keys.

    provenance-router keys create ci-bot --tenant product-x --scope inference --expires-in 90d
    provenance-router keys list [--tenant T] [--json]
    provenance-router keys show ci-bot [--json]
    provenance-router keys rotate ci-bot [--grace 24h] [--json]
    provenance-router keys revoke ci-bot

Like ``apply`` and ``policy``, the commands work on the registry database itself
(``--database-url``, default from settings; migrations run first), through the same service
functions as the admin API: every change is versioned, logged with its actor and signalled to
running gateways, which reload at once. A raw key is printed once, by ``create`` and
``rotate``, and is never stored: only its hash. ``list`` and ``show`` print no hash.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from registry.db import make_engine, migrate, session_scope
from registry.models import as_utc, utcnow
from registry.service import DEFAULT_GRACE_S, read_all, read_one, write_transaction
from router.settings import Settings

DEFAULT_GRACE = f"{DEFAULT_GRACE_S / 3600:g}h"
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")

keys_app = typer.Typer(no_args_is_help=True, help="Create, list, show, revoke and rotate API keys.")

DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="Registry database (default: settings).")
]
Actor = Annotated[
    str, typer.Option("--actor", help="Who acts, as recorded in the registry change log.")
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]
KeyId = Annotated[str, typer.Argument(help="The key's id (a slug, e.g. ci-bot).")]


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``15m``, ``90s``, ``2w``, or several (``1d12h``); ``0`` is none."""
    compact = text.strip().lower().replace(" ", "")
    if compact == "0":
        return timedelta(0)
    parts = DURATION.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise typer.BadParameter(f"{text!r} is not a duration like 30d, 12h, 15m or 90s")
    return timedelta(seconds=sum(float(n) * UNITS[u] for n, u in parts))


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is UTC."""
    try:
        return as_utc(datetime.fromisoformat(text))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 time") from None


@contextmanager
def _registry(database_url: str | None) -> Iterator[Engine]:
    engine = make_engine(database_url or Settings().database_url)
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()


@keys_app.command()
def create(
    id: KeyId,
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant the key belongs to.")],
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            help="inference, admin, compliance or compliance_org; repeat for several "
            "(default: inference).",
        ),
    ] = None,
    owner: Annotated[str | None, typer.Option(help="Who holds the key (free text).")] = None,
    description: Annotated[str | None, typer.Option(help="What the key is for.")] = None,
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="Expire after this long: 30d, 12h, ...")
    ] = None,
    expires_at: Annotated[
        str | None, typer.Option("--expires-at", help="Expire at this ISO 8601 time (UTC if bare).")
    ] = None,
    allow_route: Annotated[
        list[str] | None,
        typer.Option("--allow-route", help="Only this route (repeat for several)."),
    ] = None,
    allow_model: Annotated[
        list[str] | None,
        typer.Option("--allow-model", help="Only this model id (repeat for several)."),
    ] = None,
    database_url: DatabaseUrl = None,
    actor: Actor = "cli",
    as_json: Json = False,
) -> None:
    """Create a key and print it, once: store it now, it cannot be shown again."""
    if expires_in is not None and expires_at is not None:
        raise typer.BadParameter("give --expires-in or --expires-at, not both")
    fields: dict[str, Any] = {
        "owner": owner,
        "description": description,
        "expires_at": parse_time(expires_at) if expires_at else None,
        "allowed_routes": allow_route or None,
        "allowed_models": allow_model or None,
    }
    if expires_in is not None:
        fields["expires_at"] = utcnow() + parse_duration(expires_in)
    with _registry(database_url) as engine, write_transaction(engine=engine, actor=actor) as w:
        public, raw = w.create_api_key(
            id=id,
            tenant=tenant,
            scopes=scope or ["inference"],
            **{name: value for name, value in fields.items() if value is not None},
        )
    _print_new_key(public, raw, as_json=as_json, verb="created")


@keys_app.command("list")
def list_keys(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    database_url: DatabaseUrl = None,
    as_json: Json = False,
) -> None:
    """Every key (or one tenant's), without hashes: id, tenant, scopes, state, dates."""
    with _registry(database_url) as engine, session_scope(engine) as session:
        every = read_all(session=session, kind="api_key")
    keys = [key for key in every if tenant in (None, key["tenant"])]
    if as_json:
        print(json.dumps(keys, indent=2))
        return
    table = Table("id", "tenant", "scopes", "state", "prefix", "expires", "last used", "owner")
    for key in keys:
        table.add_row(
            key["id"],
            key["tenant"],
            ",".join(key["scopes"]),
            _state(key),
            key["prefix"] + "…",
            key["expires_at"] or "never",
            key["last_used_at"] or "-",
            key["owner"] or "",
        )
    Console(soft_wrap=True).print(table)


@keys_app.command()
def show(id: KeyId, database_url: DatabaseUrl = None, as_json: Json = False) -> None:
    """One key, every field (no hash)."""
    with _registry(database_url) as engine, session_scope(engine) as session:
        key = read_one(session=session, kind="api_key", id=id)
    if as_json:
        print(json.dumps(key, indent=2))
        return
    for name, value in key.items():
        print(f"{name}: {_text(value)}")
    print(f"state: {_state(key)}")


@keys_app.command()
def revoke(id: KeyId, database_url: DatabaseUrl = None, actor: Actor = "cli") -> None:
    """Disable a key: it fails at once, on every gateway (they reload on the change). The key
    stays in the registry (its audit trail names it); ``enabled: true`` would restore it."""
    with _registry(database_url) as engine, write_transaction(engine=engine, actor=actor) as w:
        w.update("api_key", id, {"enabled": False}, expected_version=None)
    print(f"revoked key {id}")


@keys_app.command()
def rotate(
    id: KeyId,
    grace: Annotated[
        str,
        typer.Option(help="How long the old key keeps working: 24h, 30m, ... (0: stops now)."),
    ] = DEFAULT_GRACE,
    database_url: DatabaseUrl = None,
    actor: Actor = "cli",
    as_json: Json = False,
) -> None:
    """Give a key a new raw key, printed once; the old one works for the grace period. The key
    keeps its id, tenant, scopes, allow-lists and audit trail."""
    grace_s = parse_duration(grace).total_seconds()
    with _registry(database_url) as engine, write_transaction(engine=engine, actor=actor) as w:
        public, raw = w.rotate_api_key(id=id, grace_s=grace_s)
    _print_new_key(public, raw, as_json=as_json, verb="rotated")
    if not as_json:
        until = public["previous_valid_until"]
        print(f"the old key works until {until}" if until else "the old key stopped working")


def _print_new_key(public: dict[str, Any], raw: str, *, as_json: bool, verb: str) -> None:
    if as_json:
        print(json.dumps({**public, "key": raw}, indent=2))
        return
    print(f"{verb} key {public['id']} (tenant {public['tenant']}, scopes {public['scopes']})")
    print(f"key: {raw}")
    print("This is the only time the key is shown: store it now.")


def _state(key: dict[str, Any]) -> str:
    if not key["enabled"]:
        return "revoked"
    expires = key["expires_at"]
    if expires is not None and datetime.fromisoformat(expires) <= utcnow():
        return "expired"
    return "active"


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)
