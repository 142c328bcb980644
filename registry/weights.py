"""Verify the weights a local deployment serves: their SHA-256 against the model's published
``weights_digest`` and, where configured, an OpenSSF model-signing bundle against a public key.

    verified     the digest matches (claim source: ``sha256 match against <where the digest
                 was published>``) or the signature verifies (source: the signer's key)
    failed       the digest differs, or a required signature is missing or does not verify:
                 the deployment is blocked (``review_status: blocked``, the reason as that
                 field's claim), so the policy's ``baseline-blocked`` denies it — fails closed
    unverified   nothing to compare with (no published digest, no key), or no weights file

Recording is a registry write (versioned, in the change log): a pass raises the model's
``weights_digest`` claim to ``verified``; a failure blocks the deployment. A block is never
lifted here: after fixing the file, an admin approves the deployment again.

Hashing a file of a few hundred MB at every gateway start would slow it down, so each result
is remembered in ``weights_checks`` while the file keeps its size and modification time.
Sigstore's keyless signatures need the network (Fulcio, Rekor): only key-based bundles are
verified here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from registry.db import session_scope
from registry.models import WeightsCheck
from registry.reads import table
from registry.service import Writer, read_one
from registry.snapshot import ModelSnap

Status = Literal["verified", "failed", "unverified"]
FAILED_PREFIX = "weights verification failed"
MATCH_PREFIX = "sha256 match against "
CHUNK_BYTES = 1 << 20


class WeightsSignatureError(ValueError):
    """A signature bundle is missing, unreadable or does not verify against the key."""


@dataclass(frozen=True, slots=True)
class WeightsResult:
    """The outcome of one deployment's check, in one sentence (``detail``)."""

    deployment_id: str
    model_id: str
    path: str | None
    status: Status
    detail: str
    sha256: str | None = None
    source: str | None = None  # the claim source a pass records


@dataclass(frozen=True, slots=True)
class Signature:
    """Where the signature of a weights file is, and the key it must verify against."""

    bundle: Path | None  # None or missing: no bundle
    public_key: Path | None  # None: signatures are not checked


# ---------------------------------------------------------------------------- file checks


def file_sha256(engine: Engine, path: Path) -> str:
    """The SHA-256 (hex) of ``path``, streamed; remembered while size and mtime hold."""
    return _remembered(engine, f"sha256 {path.resolve()}", path, lambda: sha256_of(path))


def sha256_of(path: Path) -> str:
    """The SHA-256 (hex) of ``path``, read in 1 MiB chunks (never loaded whole)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def signer_identity(engine: Engine, path: Path, signature: Signature) -> str:
    """Verify the model-signing bundle of ``path`` with the public key; returns who signed (the
    key's fingerprint, as model-signing names it). Raises WeightsSignatureError."""
    bundle, key = signature.bundle, signature.public_key
    assert key is not None
    if bundle is None or not bundle.is_file():
        raise WeightsSignatureError(f"no signature bundle at {bundle or 'the configured path'}")
    try:
        identity = _key_identity(key)
        subject = f"model-signing {path.resolve()} bundle={_small_digest(bundle)} key={identity}"
    except (OSError, ValueError) as error:
        raise WeightsSignatureError(f"public key {key}: {error}") from None
    return _remembered(engine, subject, path, lambda: _verify_bundle(path, bundle, key, identity))


def _key_identity(key: Path) -> str:
    """``sha256:<hex>`` of the key's PEM SubjectPublicKeyInfo (model-signing's key hint)."""
    from cryptography.hazmat.primitives import serialization

    public = serialization.load_pem_public_key(key.read_bytes())
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(pem).hexdigest()


def _small_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _verify_bundle(path: Path, bundle: Path, key: Path, identity: str) -> str:
    import model_signing

    verifying = model_signing.verifying.Config()  # type: ignore[no-untyped-call]
    config = verifying.use_elliptic_key_verifier(public_key=key)
    try:
        config.verify(path, bundle)
    except Exception as error:  # model-signing raises ValueError and its dependencies' errors
        message = " ".join(str(error).split())[:300] or type(error).__name__
        raise WeightsSignatureError(
            f"signature bundle {bundle} does not verify: {message}"
        ) from None
    return f"model-signing signature verified with public key {identity}"


def _remembered(engine: Engine, subject: str, path: Path, compute: Callable[[], str]) -> str:
    """``compute()``, or what it gave last time for this subject, size and mtime."""
    stat = path.stat()
    checks = table(WeightsCheck)
    with session_scope(engine) as session:
        row = session.execute(select(checks).where(checks.c.subject == subject)).mappings().first()
    if row is not None and (row["size"], row["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns):
        return str(row["result"])
    result = compute()
    values = {"subject": subject, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
        with session_scope(engine) as session:
            session.execute(delete(checks).where(checks.c.subject == subject))
            session.execute(
                insert(checks).values(**values, result=result, checked_at=datetime.now(UTC))
            )
    except IntegrityError:  # another process remembered it at the same moment: fine
        pass
    return result


# ---------------------------------------------------------------------------- the check


def check_weights(
    engine: Engine,
    *,
    deployment_id: str,
    model: ModelSnap | None,
    model_id: str,
    path: Path | None,
    signature: Signature,
) -> WeightsResult:
    """Check the weights at ``path`` served by ``deployment_id`` (see the module docstring)."""

    def result(status: Status, detail: str, **extra: Any) -> WeightsResult:
        where = str(path) if path is not None else None
        return WeightsResult(deployment_id, model_id, where, status, detail, **extra)

    if path is None or not path.is_file():
        return result("unverified", f"no weights file to check ({path or 'none known'})")
    sha256 = file_sha256(engine, path)
    published = _published_sha256(model)
    if published is not None and published != sha256:
        expected = model.weights_digest if model else None
        return result(
            "failed",
            f"{FAILED_PREFIX}: sha256 of {path} is sha256:{sha256}, "
            f"published {expected} ({_digest_source(model)})",
            sha256=sha256,
        )
    identity = None
    if signature.public_key is not None:
        try:
            identity = signer_identity(engine, path, signature)
        except WeightsSignatureError as error:
            return result("failed", f"{FAILED_PREFIX}: {error}", sha256=sha256)
    if identity is None and published is None:
        return result("unverified", "no published digest and no signature key", sha256=sha256)
    source = identity or f"{MATCH_PREFIX}{_digest_source(model)}"
    return result("verified", source, sha256=sha256, source=source)


def _published_sha256(model: ModelSnap | None) -> str | None:
    """The hex of a ``sha256:<hex>`` (or bare hex) published digest; None when there is none.
    A digest of another algorithm cannot be compared: treated as none."""
    digest = (model.weights_digest or "") if model else ""
    algorithm, _, value = digest.rpartition(":")
    if algorithm.lower() not in ("", "sha256") or len(value) != 64:
        return None
    return value.lower()


def _digest_source(model: ModelSnap | None) -> str:
    if model is None:
        return "no model"
    claim = model.claims.get("weights_digest", model.claim)
    # after a pass the claim reads "sha256 match against <source>": name the source itself
    return (claim.source or "the registry (source not stated)").removeprefix(MATCH_PREFIX)


# ---------------------------------------------------------------------------- recording


def record(writer: Writer, outcome: WeightsResult, *, today: date) -> bool:
    """Write what ``outcome`` establishes (see the module docstring); True when it changed the
    registry."""
    if outcome.status == "verified":
        return _raise_digest_claim(writer, outcome, today)
    if outcome.status == "failed":
        return _block(writer, outcome, today)
    return False


def _raise_digest_claim(writer: Writer, outcome: WeightsResult, today: date) -> bool:
    model = _read(writer, "model", outcome.model_id)
    claims: dict[str, Any] = dict(model["claims"])
    current = claims.get("weights_digest") or {}
    if (current.get("confidence"), current.get("source")) == ("verified", outcome.source):
        return False
    claims["weights_digest"] = _claim(outcome.source, today)
    changes: dict[str, Any] = {"claims": claims}
    if model["weights_digest"] is None:  # a signature vouched for the file: publish its digest
        changes["weights_digest"] = f"sha256:{outcome.sha256}"
    writer.update("model", outcome.model_id, changes, expected_version=model["version"])
    return True


def _block(writer: Writer, outcome: WeightsResult, today: date) -> bool:
    deployment = _read(writer, "deployment", outcome.deployment_id)
    claims: dict[str, Any] = dict(deployment["claims"])
    current = claims.get("review_status") or {}
    if deployment["review_status"] == "blocked" and current.get("source") == outcome.detail:
        return False
    claims["review_status"] = _claim(outcome.detail, today)
    writer.update(
        "deployment",
        outcome.deployment_id,
        {"review_status": "blocked", "claims": claims},
        expected_version=deployment["version"],
    )
    return True


def _read(writer: Writer, kind: str, id: str) -> Mapping[str, Any]:
    with writer.reading() as session:
        return read_one(session=session, kind=kind, id=id)


def _claim(source: str | None, today: date) -> dict[str, Any]:
    return {"source": source, "retrieved_at": today.isoformat(), "confidence": "verified"}


def describe(outcome: WeightsResult) -> str:
    """One line for a terminal or a log."""
    return f"{outcome.deployment_id} ({outcome.model_id}): {outcome.status}: {outcome.detail}"
