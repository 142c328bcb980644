"""The gateway's Ed25519 signing key: what signs audit checkpoints and response receipts.

A key directory (``Settings.signing_key_dir``) holds::

    current.pem            the private key in use (PKCS#8 PEM, mode 0600); it never leaves the
                           directory: not returned, logged or exported
    public/<key_id>.pem    the public half of every key this directory ever used, so that what
                           was signed before a rotation still verifies afterwards

``key_id`` is the first 16 hex digits of the SHA-256 of the raw 32-byte public key. The key is
generated at first start; replicas that must sign with one key share the directory the way they
share any other secret (a mounted secret volume). ``rotate`` makes a new current key and keeps
the old public half. All cryptography is the ``cryptography`` package's; nothing here is
hand-written crypto.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

CURRENT = "current.pem"
PUBLIC = "public"
log = logging.getLogger("provenance_router.signing")


@dataclass(frozen=True, slots=True)
class Signer:
    """One private key, ready to sign. ``repr`` never shows the key."""

    key_id: str
    _private: Ed25519PrivateKey = field(repr=False)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self._private.sign(message)

    def public_pem(self) -> str:
        return public_pem(self._private.public_key())


def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_or_create_signer(directory: Path) -> Signer:
    """The current key of ``directory``, generated on first use. Safe when several processes
    start at once: exactly one creates the key, the others load it."""
    current = directory / CURRENT
    if not current.exists():
        directory.mkdir(parents=True, exist_ok=True)
        staged = directory / f".{CURRENT}.{os.getpid()}.{threading.get_ident()}"
        _write_private(staged, Ed25519PrivateKey.generate())
        with contextlib.suppress(FileExistsError):
            os.link(staged, current)  # atomic, and fails when another process was first
        staged.unlink()
    signer = _load(current)
    _publish(directory, signer)
    return signer


def rotate(directory: Path) -> Signer:
    """Replace the current key with a new one; the old public half stays in ``public/``."""
    load_or_create_signer(directory)  # make sure the outgoing key's public half is kept
    staged = directory / f".{CURRENT}.{os.getpid()}.{threading.get_ident()}"
    _write_private(staged, Ed25519PrivateKey.generate())
    os.replace(staged, directory / CURRENT)
    signer = _load(directory / CURRENT)
    _publish(directory, signer)
    return signer


def public_keys(directory: Path) -> dict[str, str]:
    """Every public key the directory has signed with: key id -> PEM (the current key's
    included even where ``public/`` could not be written, e.g. a read-only secret mount)."""
    folder = directory / PUBLIC
    keys = (
        {path.stem: path.read_text("ascii") for path in sorted(folder.glob("*.pem"))}
        if folder.is_dir()
        else {}
    )
    current = directory / CURRENT
    if current.exists():
        signer = _load(current)
        keys.setdefault(signer.key_id, signer.public_pem())
    return keys


def verify(public_key_pem: str, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` by that key."""
    public = serialization.load_pem_public_key(public_key_pem.encode("ascii"))
    if not isinstance(public, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    try:
        public.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _write_private(path: Path, key: Ed25519PrivateKey) -> None:
    """Write the whole key to a private file before anyone can read it under its real name."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
        file.flush()
        os.fsync(file.fileno())


def _load(path: Path) -> Signer:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return Signer(key_id_of(key.public_key()), key)


def _publish(directory: Path, signer: Signer) -> None:
    """Keep the public half in ``public/``. A directory the gateway may not write (a secret
    mounted read-only) is fine: ``public_keys`` reads the current key itself; keys retired
    earlier are then whatever ``public/`` the mount provides."""
    folder = directory / PUBLIC
    target = folder / f"{signer.key_id}.pem"
    if target.exists():
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staged = folder / f".{signer.key_id}.{os.getpid()}.{threading.get_ident()}"
        staged.write_text(signer.public_pem(), "ascii")
        os.replace(staged, target)
    except OSError as error:
        log.warning(
            "signing: cannot keep the public key in %s (%s); serving the current key only",
            folder,
            error.strerror or error,
        )
