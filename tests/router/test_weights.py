"""Weights verification of local deployments (``registry.weights``, ``router.weights``) with the
real bundled SmolLM2 GGUF: a digest match raises the model's digest claim to ``verified``; a
tampered copy blocks the deployment, so a request through the real gateway (official SDK) is
refused and the audit and the profile say why; an OpenSSF model-signing bundle made here with a
freshly generated EC key verifies, and the wrong key fails. Registry tests run on SQLite and
PostgreSQL (``engine``)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import model_signing
import openai
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine

import registry.weights
from adapters.local_llamacpp import bundled_gguf_digest, find_bundled_gguf
from registry.db import session_scope
from registry.service import read_one
from registry.weights import file_sha256
from router.bootstrap import LOCAL_DEPLOYMENT, LOCAL_MODEL, LOCAL_ROUTE, bootstrap
from router.settings import Settings
from router.weights import verify_local_weights
from tests.router.conftest import RunningGateway

ADMIN_KEY = "pr-test-admin-weights-0123456789abcdefghij"


def settings_for(engine: Engine, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": engine.url.render_as_string(hide_password=False),
        "admin_key": ADMIN_KEY,
        "load_catalog": False,
        "signing_key_dir": tmp_path / "signing",
        "audit_journal_dir": tmp_path / "journal",
        **overrides,
    }
    return Settings(**values)


def tampered_copy(tmp_path: Path) -> Path:
    """The bundled GGUF with one byte of its last tensor flipped (it still loads)."""
    copy = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    shutil.copyfile(find_bundled_gguf(), copy)
    with copy.open("r+b") as handle:
        handle.seek(-100, 2)
        byte = handle.read(1)
        handle.seek(-100, 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    return copy


def model_of(engine: Engine) -> dict[str, Any]:
    with session_scope(engine) as session:
        return read_one(session=session, kind="model", id=LOCAL_MODEL)


def deployment_of(engine: Engine) -> dict[str, Any]:
    with session_scope(engine) as session:
        return read_one(session=session, kind="deployment", id=LOCAL_DEPLOYMENT)


def ec_key_pair(folder: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / f"{name}.pem", folder / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


# ---------------------------------------------------------------------------- digests


def test_the_published_digest_is_the_wheels_record_and_the_bundled_file_matches(
    engine: Engine, tmp_path: Path
) -> None:
    bootstrap(engine, settings_for(engine, tmp_path))  # registers, then verifies at start
    published = bundled_gguf_digest()
    assert published is not None
    model = model_of(engine)
    assert model["weights_digest"] == published[0]
    assert model["weights_digest"] == "sha256:" + file_sha256(engine, find_bundled_gguf())
    claim = model["claims"]["weights_digest"]
    assert claim["confidence"] == "verified"
    assert claim["source"] == f"sha256 match against {published[1]}"
    assert deployment_of(engine)["review_status"] == "approved"
    again = verify_local_weights(engine, settings_for(engine, tmp_path))
    assert [(r.deployment_id, r.status) for r in again] == [(LOCAL_DEPLOYMENT, "verified")]
    assert model_of(engine)["claims"]["weights_digest"] == claim  # same source, no rewrite


def test_a_tampered_copy_blocks_the_deployment(engine: Engine, tmp_path: Path) -> None:
    bootstrap(engine, settings_for(engine, tmp_path, verify_weights_at_start=False))
    tampered = settings_for(engine, tmp_path, local_model_gguf=tampered_copy(tmp_path))
    (result,) = verify_local_weights(engine, tampered)
    assert result.status == "failed"
    deployment = deployment_of(engine)
    assert deployment["review_status"] == "blocked"
    reason = deployment["claims"]["review_status"]["source"]
    assert reason.startswith("weights verification failed: sha256 of ")
    assert str(tampered.local_model_gguf) in reason and "published sha256:" in reason
    assert model_of(engine)["claims"].get("weights_digest", {}).get("confidence") != "verified"
    # The original weights pass again, but a block is lifted only by an admin's approval.
    (again,) = verify_local_weights(engine, settings_for(engine, tmp_path))
    assert again.status == "verified"
    assert deployment_of(engine)["review_status"] == "blocked"


def test_digests_are_remembered_while_size_and_mtime_hold(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"weights" * 1000)
    first = file_sha256(engine, weights)
    calls: list[Path] = []
    monkeypatch.setattr(registry.weights, "sha256_of", lambda path: calls.append(path) or "x" * 64)
    assert file_sha256(engine, weights) == first and calls == []  # remembered
    weights.write_bytes(b"weights" * 1000 + b"!")  # another size (and mtime): hashed again
    assert file_sha256(engine, weights) == "x" * 64 and calls == [weights]


# ---------------------------------------------------------------------------- signatures


def test_a_model_signing_bundle_verifies_with_its_key_and_fails_with_another(
    engine: Engine, tmp_path: Path
) -> None:
    private, public = ec_key_pair(tmp_path, "publisher")
    _, other = ec_key_pair(tmp_path, "someone-else")
    gguf, bundle = find_bundled_gguf(), tmp_path / "weights.sig"
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private).sign(gguf, bundle)
    bootstrap(engine, settings_for(engine, tmp_path, verify_weights_at_start=False))

    good = settings_for(engine, tmp_path, weights_signature=bundle, weights_public_key=public)
    (passed,) = verify_local_weights(engine, good)
    assert passed.status == "verified", passed.detail
    assert passed.detail.startswith("model-signing signature verified with public key sha256:")
    claim = model_of(engine)["claims"]["weights_digest"]
    assert (claim["confidence"], claim["source"]) == ("verified", passed.detail)

    wrong = settings_for(engine, tmp_path, weights_signature=bundle, weights_public_key=other)
    (failed,) = verify_local_weights(engine, wrong)
    assert failed.status == "failed"
    assert "does not verify" in failed.detail
    assert deployment_of(engine)["review_status"] == "blocked"


def test_a_configured_key_without_a_bundle_fails_closed(engine: Engine, tmp_path: Path) -> None:
    _, public = ec_key_pair(tmp_path, "publisher")
    bootstrap(engine, settings_for(engine, tmp_path, verify_weights_at_start=False))
    (result,) = verify_local_weights(
        engine,
        settings_for(engine, tmp_path, weights_public_key=public),  # <gguf>.sig: absent
    )
    assert result.status == "failed" and "no signature bundle" in result.detail
    assert deployment_of(engine)["review_status"] == "blocked"


# ---------------------------------------------------------------------------- the gateway


@pytest.mark.slow
def test_a_gateway_serving_tampered_weights_refuses_and_says_why(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    gw = gateway_factory(local_model=True, local_model_gguf=tampered_copy(tmp_path))
    client = gw.openai()
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.chat.completions.create(
            model=LOCAL_ROUTE, messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
    assert denied.value.code == "provenance_policy_denied"
    request_id = denied.value.response.headers["x-request-id"]
    row = gw.decision(request_id)
    (candidate,) = row["candidates"]
    assert candidate["deployment"] == LOCAL_DEPLOYMENT and not candidate["allowed"]
    assert candidate["rule_ids"] == ["baseline-blocked"]
    (reason,) = candidate["reasons"]
    assert "weights verification failed: sha256 of " in reason
    with gw.http(gw.admin_key) as http:
        profile = http.get(f"/admin/profile/{LOCAL_DEPLOYMENT}").json()
    serving = {(f["entity"], f["fact"]): f for r in profile["rows"] for f in r["facts"]}
    status = serving[(f"deployment {LOCAL_DEPLOYMENT}", "review_status")]
    assert status["value"] == "blocked"
    assert status["source"].startswith("weights verification failed")


def test_the_command_line_reports_each_deployment_and_fails_on_a_mismatch(
    engine: Engine, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from router.cli import app as cli

    bootstrap(engine, settings_for(engine, tmp_path, verify_weights_at_start=False))
    env = {"PROVENANCE_ROUTER_DATABASE_URL": engine.url.render_as_string(hide_password=False)}
    passed = CliRunner().invoke(cli, ["verify-weights"], env=env)
    assert passed.exit_code == 0, passed.output
    assert passed.output.startswith(f"{LOCAL_DEPLOYMENT} ({LOCAL_MODEL}): verified: sha256 match")
    env["PROVENANCE_ROUTER_LOCAL_MODEL_GGUF"] = str(tampered_copy(tmp_path))
    failed = CliRunner().invoke(cli, ["verify-weights", LOCAL_DEPLOYMENT], env=env)
    assert failed.exit_code == 1
    assert "failed: weights verification failed: sha256 of" in failed.output
    assert deployment_of(engine)["review_status"] == "blocked"
    unknown = CliRunner().invoke(cli, ["verify-weights", "no-such-deployment"], env=env)
    assert isinstance(unknown.exception, LookupError)
