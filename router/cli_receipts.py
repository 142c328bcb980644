"""``provenance-router receipt verify`` and ``provenance-router signing rotate``.

``receipt verify`` checks a response's ``x-provenance-receipt`` offline: against public key
files (``--public-key``), a key directory (``--key-dir``, default: the gateway's
``signing_key_dir``), or the keys a gateway publishes (``--keys-url``). Exit 0 and the payload
on stdout when the signature is valid; exit 1 with the reason on stderr otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer

from router.receipts import ReceiptError, keyring, published_keys, verify_receipt
from router.settings import Settings
from router.signing import public_keys, rotate

receipt_app = typer.Typer(no_args_is_help=True, help="Verify signed response receipts.")
signing_app = typer.Typer(no_args_is_help=True, help="The gateway's receipt signing key.")

KeyDir = Annotated[
    Path | None,
    typer.Option("--key-dir", help="Signing key directory (default: settings' signing_key_dir)."),
]


def register(app: typer.Typer) -> None:
    app.add_typer(receipt_app, name="receipt")
    app.add_typer(signing_app, name="signing")


@receipt_app.command("verify")
def verify_command(
    receipt: Annotated[str, typer.Argument(help="The x-provenance-receipt value ('-': stdin).")],
    public_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--public-key", help="A PEM public key file (repeatable).", exists=True, dir_okay=False
        ),
    ] = None,
    keys_url: Annotated[
        str | None,
        typer.Option(
            "--keys-url",
            help="A gateway's key listing, e.g. "
            "https://gw/.well-known/provenance-router/signing-keys",
        ),
    ] = None,
    key_dir: KeyDir = None,
) -> None:
    """Check a receipt's signature; print its payload when valid, exit 1 when not."""
    text = sys.stdin.read() if receipt == "-" else receipt
    try:
        keys = _keys(public_key or [], keys_url, key_dir)
        payload = verify_receipt(text, keys)
    except (ReceiptError, OSError, httpx.HTTPError, orjson.JSONDecodeError) as error:
        typer.echo(f"receipt NOT valid: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
    typer.echo(f"receipt valid: signed by key {payload['kid']}", err=True)


def _keys(files: list[Path], keys_url: str | None, key_dir: Path | None) -> dict[str, str]:
    keys = keyring([path.read_text("ascii") for path in files])
    if keys_url is not None:
        response = httpx.get(keys_url, timeout=30.0)
        response.raise_for_status()
        keys.update(published_keys(_object(response.content)))
    if key_dir is not None or not (files or keys_url):
        keys.update(keyring(list(public_keys(key_dir or Settings().signing_key_dir).values())))
    return keys


def _object(content: bytes) -> dict[str, Any]:
    value = orjson.loads(content)
    if not isinstance(value, dict):
        raise ReceiptError("the key listing is not a JSON object")
    return value


@signing_app.command("rotate")
def rotate_command(key_dir: KeyDir = None) -> None:
    """Make a new signing key; the old public half stays published, so receipts signed before
    still verify. Running gateways sign with the new key after their next restart."""
    directory = key_dir or Settings().signing_key_dir
    signer = rotate(directory)
    typer.echo(f"new signing key {signer.key_id} in {directory}; restart gateways to use it")


@signing_app.command("keys")
def keys_command(key_dir: KeyDir = None) -> None:
    """List the public keys of a key directory (key id, then PEM)."""
    for key_id, pem in public_keys(key_dir or Settings().signing_key_dir).items():
        typer.echo(f"{key_id}\n{pem}")
