"""API keys: generation, hashing, display prefix.

Only the SHA-256 of a key is stored. A fast hash is right here, unlike for passwords: keys are
generated with 240 bits of entropy (40 url-safe characters), so brute-forcing a stored hash is
infeasible however fast the hash is, and a fast hash lets the gateway authenticate every request
with one dictionary lookup instead of a deliberately slow KDF. User-supplied keys must therefore
be long (``MIN_KEY_LENGTH``) so they stay out of reach of guessing too.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "pr-"
KEY_BODY_LENGTH = 40
DISPLAY_PREFIX_LENGTH = 10  # "pr-" + 7 random characters: enough to recognize, useless to guess
MIN_KEY_LENGTH = 24


def generate_key() -> str:
    """A new key: ``pr-`` followed by 40 url-safe characters."""
    body = ""
    while len(body) < KEY_BODY_LENGTH:
        body += secrets.token_urlsafe(KEY_BODY_LENGTH)
    return KEY_PREFIX + body[:KEY_BODY_LENGTH]


def hash_key(raw: str) -> str:
    """SHA-256 hex digest of the raw key: what the registry stores and looks keys up by."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def key_prefix(raw: str) -> str:
    """The part of a key that may be shown after creation, to tell keys apart."""
    return raw[:DISPLAY_PREFIX_LENGTH]
