"""Signed receipts: proof, for the client, of which deployment and policy served a response.

Every ``/v1`` response (success, denial, upstream error; a stream in its headers) carries::

    x-provenance-receipt: base64url(payload) "." base64url(signature) "." base64url(proof)

``payload`` is canonical JSON (keys sorted, no whitespace, UTF-8). Receipts are signed in
batches (format 2): every receipt asked for in one turn of the event loop is a leaf of one
Merkle tree (:mod:`router.merkle`, RFC 9162), and one Ed25519 signature (:mod:`router.signing`)
covers the tree's head; ``proof`` is what a verifier needs to recompute that head from the
payload alone::

    proof     = salt (16 bytes) || leaf index (u32, big-endian) || tree size (u32) || path
    leaf      = SHA-256(0x00 || salt || payload)
    signature = Ed25519(CONTEXT || tree size (u32) || tree head)

The salt is random per receipt, so the sibling hashes in one client's proof reveal nothing
about the other responses of its batch. At one request at a time a batch is one receipt (an
empty path; the head is the leaf); under load one signature covers every response that starts
in the same loop turn, so a receipt costs a few hashes instead of a signature each (measured in
``bench/receipt_cost.py``). Format 1 receipts (``payload.signature``, the signature over the
payload bytes) issued by earlier versions still verify.

Payload fields (``docs/receipts.md``)::

    v                 receipt format version (2)
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

Verifying imports nothing of the gateway but :mod:`router.signing` and :mod:`router.merkle`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import struct
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from router.merkle import HASH_SIZE, leaf_hash, root_and_paths, root_from_path
from router.signing import Signer, key_id_of, verify

HEADER = b"x-provenance-receipt"
FORMAT_VERSION = 2
CONTEXT = b"provenance-router receipt batch v2\n"
SALT_SIZE = 16
_INDEX_AND_SIZE = struct.Struct(">II")


class ReceiptError(ValueError):
    """A receipt that is malformed, signed by an unknown key, or whose signature is wrong."""


def payload(
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
    """A receipt's canonical payload (the bytes its leaf covers)."""
    return orjson.dumps(
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


def sign_batch(signer: Signer, payloads: Sequence[bytes]) -> list[bytes]:
    """The receipts of ``payloads`` (ASCII bytes, ready to be header values), all under one
    signature of their Merkle tree's head."""
    random = os.urandom(SALT_SIZE * len(payloads))  # one system call per batch
    salts = [random[i : i + SALT_SIZE] for i in range(0, len(random), SALT_SIZE)]
    leaves = [leaf_hash(salt + data) for salt, data in zip(salts, payloads, strict=True)]
    head, paths = root_and_paths(leaves)
    size = len(payloads)
    signature = _b64(signer.sign(_signed_message(size, head)))
    return [
        b".".join(
            (_b64(data), signature, _b64(salt + _INDEX_AND_SIZE.pack(index, size) + b"".join(path)))
        )
        for index, (data, salt, path) in enumerate(zip(payloads, salts, paths, strict=True))
    ]


def _signed_message(size: int, head: bytes) -> bytes:
    return CONTEXT + size.to_bytes(4, "big") + head


class BatchSigner:
    """Signs every receipt asked for in one turn of the event loop with one signature: the
    first request of a turn schedules the signing for the end of the turn (``call_soon``: after
    every task already woken in it), each request awaits its own receipt. No request waits
    longer than that one turn, and none waits for a timer."""

    def __init__(self, signer: Signer) -> None:
        self.signer = signer
        self._pending: list[tuple[bytes, asyncio.Future[bytes]]] = []

    def receipt(self, payload: bytes) -> asyncio.Future[bytes]:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bytes] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._sign_pending)
        self._pending.append((payload, waiter))
        return waiter

    def _sign_pending(self) -> None:
        batch, self._pending = self._pending, []
        try:
            receipts = sign_batch(self.signer, [data for data, _ in batch])
        except Exception as error:  # a failed signature fails those responses, loudly
            for _, waiter in batch:
                if not waiter.done():
                    waiter.set_exception(error)
            return
        for (_, waiter), receipt in zip(batch, receipts, strict=True):
            if not waiter.done():  # a request cancelled meanwhile (client gone)
                waiter.set_result(receipt)


def split(receipt: str) -> tuple[bytes, bytes, dict[str, Any]]:
    """The payload bytes, the signature and the decoded payload (not yet verified)."""
    return _decoded(_parts(receipt))


def _decoded(parts: list[str]) -> tuple[bytes, bytes, dict[str, Any]]:
    payload, signature = _unb64(parts[0]), _unb64(parts[1])
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
    parts = _parts(receipt)
    payload, signature, claims = _decoded(parts)
    key_id = claims["kid"]
    pem = public_keys.get(key_id)
    if pem is None:
        known = ", ".join(sorted(public_keys)) or "none"
        raise ReceiptError(f"signed by key {key_id}, which is not among the keys given ({known})")
    if not verify(pem, _signed_by(claims.get("v"), parts, payload), signature):
        raise ReceiptError(f"the signature does not match: the receipt was altered ({key_id})")
    return claims


def _parts(receipt: str) -> list[str]:
    parts = receipt.strip().split(".")
    if len(parts) not in (2, 3) or not all(parts):
        raise ReceiptError(
            "not a receipt: expected base64url(payload).base64url(signature).base64url(proof)"
        )
    return parts


def _signed_by(version: object, parts: list[str], payload: bytes) -> bytes:
    """The message the receipt's signature must cover: format 2 (three parts) signs the head
    its proof leads to, format 1 (two parts) the payload itself."""
    if version == FORMAT_VERSION and len(parts) == 3:
        return _proven_head(_unb64(parts[2]), payload)
    if version == 1 and len(parts) == 2:
        return payload
    raise ReceiptError(f"unsupported receipt format version {version!r} for {len(parts)} parts")


def _proven_head(proof: bytes, payload: bytes) -> bytes:
    fixed = SALT_SIZE + _INDEX_AND_SIZE.size
    path = proof[fixed:]
    if len(proof) < fixed or len(path) % HASH_SIZE:
        raise ReceiptError("the receipt's proof is malformed")
    salt = proof[:SALT_SIZE]
    index, size = _INDEX_AND_SIZE.unpack(proof[SALT_SIZE:fixed])
    siblings = [path[i : i + HASH_SIZE] for i in range(0, len(path), HASH_SIZE)]
    head = root_from_path(index, size, leaf_hash(salt + payload), siblings)
    if head is None:
        raise ReceiptError("the receipt's proof is malformed")
    return _signed_message(size, head)


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
