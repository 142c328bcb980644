"""Console sessions and CSRF tokens, signed with the gateway's Ed25519 key (``router.signing``).

A session is a cookie holding ``<payload>.<signature>``: the payload names the API key that
signed in, a random nonce and an expiry; the signature is the gateway's (Ed25519 signatures are
deterministic, so a replica or worker sharing the signing key directory checks it by signing the
payload again). Nothing secret is in the cookie: not the API key, not a hash of it. Every request
re-reads the key, so a disabled key ends its sessions at once; the expiry ends them anyway.
Logging out drops the cookie and remembers the nonce as revoked in this process until it would
have expired.

CSRF: every write form carries ``csrf_token(nonce)``, a value derived from the session's nonce
by the same key; a write whose token does not match its session's is refused (403). The sign-in
form, before any session, carries the token of a short-lived ``login`` cookie's nonce instead.
The cookies are HTTP-only and ``SameSite=Strict``, and ``Secure`` over HTTPS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from router.signing import Signer

SESSION_COOKIE = "pr_console"
LOGIN_COOKIE = "pr_console_login"
LOGIN_TTL_S = 3600
_SESSION = b"provenance-router console session\0"
_CSRF = b"provenance-router console csrf\0"


@dataclass(frozen=True, slots=True)
class Session:
    key_id: str
    nonce: str
    expires_at: float  # seconds since the epoch


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(slots=True)
class SessionSigner:
    """Issues and checks session tokens; ``signer`` returns the gateway's current key."""

    signer: Callable[[], Signer | None]
    ttl_s: float
    clock: Callable[[], float] = time.time
    _revoked: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _sign(self, purpose: bytes, payload: bytes) -> bytes:
        signer = self.signer()
        if signer is None:
            raise RuntimeError("the gateway's signing key is not loaded yet")
        return signer.sign(purpose + payload)

    def issue(self, key_id: str) -> tuple[str, Session]:
        session = Session(key_id, secrets.token_urlsafe(16), self.clock() + self.ttl_s)
        payload = orjson.dumps({"k": key_id, "n": session.nonce, "e": session.expires_at})
        return f"{_b64(payload)}.{_b64(self._sign(_SESSION, payload))}", session

    def check(self, token: str | None) -> Session | None:
        """The session of a valid, unexpired, unrevoked token; otherwise None."""
        if not token or token.count(".") != 1:
            return None
        encoded, signature = token.split(".")
        try:
            payload, given = _unb64(encoded), _unb64(signature)
            data = orjson.loads(payload)
            session = Session(str(data["k"]), str(data["n"]), float(data["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        if not hmac.compare_digest(given, self._sign(_SESSION, payload)):
            return None
        if session.expires_at <= self.clock() or self._is_revoked(session.nonce):
            return None
        return session

    def revoke(self, session: Session) -> None:
        now = self.clock()
        with self._lock:
            self._revoked = {n: e for n, e in self._revoked.items() if e > now}
            self._revoked[session.nonce] = session.expires_at

    def _is_revoked(self, nonce: str) -> bool:
        with self._lock:
            return nonce in self._revoked

    def csrf_token(self, nonce: str) -> str:
        return _b64(hashlib.sha256(self._sign(_CSRF, nonce.encode())).digest())

    def csrf_ok(self, nonce: str | None, token: str | None) -> bool:
        if not nonce or not token:
            return False
        return hmac.compare_digest(token.encode(), self.csrf_token(nonce).encode())


def new_nonce() -> str:
    return secrets.token_urlsafe(16)
