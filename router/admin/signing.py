"""The public halves of the gateway's signing keys: what verifies receipts and checkpoints.

    GET /admin/signing-keys                           admin, compliance or compliance_org key
    GET /.well-known/provenance-router/signing-keys   no key: public keys are public

Both list every key id the key directory ever signed with (``router.signing.public_keys``),
the one this gateway signs with now marked ``current``. A receipt made before a rotation still
verifies against its old key, which stays listed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter

from router.deps import AuditCaller, ContextDep
from router.signing import Signer, public_keys

WELL_KNOWN = "/.well-known/provenance-router/signing-keys"


def signing_router(current_signer: Callable[[], Signer | None]) -> APIRouter:
    """``current_signer`` returns the key the gateway signs with now (None before start)."""
    router = APIRouter(tags=["audit"])

    @router.get("/admin/signing-keys", summary="Public keys that verify receipts")
    def admin_keys(context: ContextDep, _caller: AuditCaller) -> dict[str, Any]:
        return _listing(context, current_signer())

    @router.get(WELL_KNOWN, summary="Public keys that verify receipts (no API key needed)")
    def well_known_keys(context: ContextDep) -> dict[str, Any]:
        return _listing(context, current_signer())

    return router


def _listing(context: ContextDep, signer: Signer | None) -> dict[str, Any]:
    keys = public_keys(context.settings.signing_key_dir)
    if signer is not None:
        keys.setdefault(signer.key_id, signer.public_pem())
    current = signer.key_id if signer is not None else None
    return {
        "object": "list",
        "current": current,
        "data": [
            {
                "key_id": key_id,
                "algorithm": "Ed25519",
                "public_key": pem,
                "current": key_id == current,
            }
            for key_id, pem in keys.items()
        ],
    }
