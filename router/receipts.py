"""Signed receipts: proof, for the client, of which deployment and policy served a response.

Every ``/v1`` response (success, denial, upstream error; a stream in its headers) carries::

    x-provenance-receipt: base64url(payload) "." base64url(signature)

``payload`` is canonical JSON (keys sorted, no whitespace, UTF-8) and the Ed25519 signature
(:mod:`router.signing`) covers exactly those payload bytes, so a verifier needs no JSON
canonicalisation of its own: it checks the signature over the decoded bytes, then reads them.
base64url is unpadded (RFC 7515 style), so the header is plain ASCII.

Payload fields (``docs/receipts.md``)::

    v                 receipt format version (1)
    kid               id of the signing key (router.signing.key_id_of)
    rid               request id (the x-request-id header and the audit row's request_id)
    tenant            the caller's tenant; null when the key was not recognised
    model             the requested model or route; null when the body could not be read
    deployment        the deployment that served the response; null when none did
    policy_version    the active policy version
    registry_version  the registry version the request was routed on
    decision          hex BLAKE2b-128 digest of the candidates' verdicts (the audit row's
                      evaluation_id); null when nothing was decided (bad key, bad body, unknown
                      model)
    status            the HTTP status of the response the receipt rides on
    iat               issue time, unix seconds

Issuing costs one small JSON encoding and one signature (see ``bench/receipt_cost.py``).
Verifying imports nothing of the gateway but :mod:`router.signing`.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from router.signing import Signer, key_id_of, verify

HEADER = b"x-provenance-receipt"
FORMAT_VERSION = 1


class ReceiptError(ValueError):
    """A receipt that is malformed, signed by an unknown key, or whose signature is wrong."""


def issue(
    signer: Signer,
    *,
    rid: str,
    tenant: str | None,
    model: str | None,
    deployment: str | None,
    policy_version: int,
    registry_version: int,
    decision: str | None,
    status: int,
) -> bytes:
    """The receipt (ASCII bytes, ready to be a header value)."""
    payload = orjson.dumps(
        {
            "v": FORMAT_VERSION,
            "kid": signer.key_id,
            "rid": rid,
            "tenant": tenant,
            "model": model,
            "deployment": deployment,
            "policy_version": policy_version,
            "registry_version": registry_version,
            "decision": decision,
            "status": status,
            "iat": int(time.time()),
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return _b64(payload) + b"." + _b64(signer.sign(payload))


def split(receipt: str) -> tuple[bytes, bytes, dict[str, Any]]:
    """The signed payload bytes, the signature and the decoded payload (not yet verified)."""
    parts = receipt.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ReceiptError("not a receipt: expected base64url(payload).base64url(signature)")
    payload, signature = (_unb64(part) for part in parts)
    try:
        claims = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise ReceiptError("the receipt's payload is not JSON") from None
    if not isinstance(claims, dict) or not isinstance(claims.get("kid"), str):
        raise ReceiptError("the receipt's payload has no key id (kid)")
    return payload, signature, claims


def verify_receipt(receipt: str, public_keys: Mapping[str, str]) -> dict[str, Any]:
    """The payload of ``receipt`` once its signature checks out against the public key (PEM)
    named by its ``kid`` in ``public_keys``; :class:`ReceiptError` otherwise."""
    payload, signature, claims = split(receipt)
    key_id = claims["kid"]
    pem = public_keys.get(key_id)
    if pem is None:
        known = ", ".join(sorted(public_keys)) or "none"
        raise ReceiptError(f"signed by key {key_id}, which is not among the keys given ({known})")
    if claims.get("v") != FORMAT_VERSION:
        raise ReceiptError(f"unsupported receipt format version {claims.get('v')!r}")
    if not verify(pem, payload, signature):
        raise ReceiptError(f"the signature does not match: the receipt was altered ({key_id})")
    return claims


def keyring(pems: list[str]) -> dict[str, str]:
    """Public keys (PEM) by their key id, as ``verify_receipt`` wants them."""
    keys = {}
    for pem in pems:
        try:
            public = serialization.load_pem_public_key(pem.encode("ascii"))
        except ValueError:
            raise ReceiptError("not a PEM public key") from None
        if not isinstance(public, Ed25519PublicKey):
            raise ReceiptError("not an Ed25519 public key")
        keys[key_id_of(public)] = pem
    return keys


def published_keys(listing: Mapping[str, Any]) -> dict[str, str]:
    """The keys of a ``GET /admin/signing-keys`` (or ``/.well-known/...``) answer, checked:
    each key id must be the id of the key it names (a listing cannot vouch for itself)."""
    data = listing.get("data")
    if not isinstance(data, list):
        raise ReceiptError("not a signing-key listing (no data)")
    keys = keyring([str(item.get("public_key", "")) for item in data if isinstance(item, dict)])
    listed = {str(item.get("key_id")) for item in data if isinstance(item, dict)}
    if listed != set(keys):
        raise ReceiptError("the listing's key ids do not match its keys")
    return keys


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(text: str) -> bytes:
    """Strict: only the canonical unpadded encoding of some bytes is accepted, so no two
    different receipt strings carry the same signed bytes (the decoder would otherwise skip
    foreign characters and ignore the unused low bits of the last character)."""
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ReceiptError("the receipt is not base64url") from None
    if _b64(data) != text.encode("ascii", "replace"):
        raise ReceiptError("the receipt is not canonical base64url")
    return data
