"""The signing key: generated once, kept private, rotated without losing old public halves."""

from __future__ import annotations

import shutil
import stat
import threading
from pathlib import Path

import pytest

from router.signing import load_or_create_signer, public_keys, rotate, verify


def test_first_use_creates_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    signer = load_or_create_signer(tmp_path / "signing")
    current = tmp_path / "signing" / "current.pem"
    assert stat.S_IMODE(current.stat().st_mode) == 0o600
    assert "PRIVATE" not in repr(signer) and len(signer.key_id) == 16
    assert public_keys(tmp_path / "signing") == {signer.key_id: signer.public_pem()}
    assert load_or_create_signer(tmp_path / "signing").key_id == signer.key_id


def test_a_signature_verifies_and_a_changed_byte_does_not(tmp_path: Path) -> None:
    signer = load_or_create_signer(tmp_path)
    signature = signer.sign(b"receipt")
    assert verify(signer.public_pem(), b"receipt", signature)
    assert not verify(signer.public_pem(), b"receipT", signature)
    assert not verify(signer.public_pem(), b"receipt", bytes([signature[0] ^ 1]) + signature[1:])


def test_processes_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    ids: list[str] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        ids.append(load_or_create_signer(tmp_path / "shared").key_id)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 1 and len(ids) == 8


def test_rotation_keeps_the_old_public_half(tmp_path: Path) -> None:
    old = load_or_create_signer(tmp_path)
    signature = old.sign(b"before")
    new = rotate(tmp_path)
    assert new.key_id != old.key_id
    assert load_or_create_signer(tmp_path).key_id == new.key_id
    keys = public_keys(tmp_path)
    assert set(keys) == {old.key_id, new.key_id}
    assert verify(keys[old.key_id], b"before", signature)


def test_a_key_directory_the_gateway_cannot_write_still_serves_its_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A signing key mounted as a read-only secret: ``public/`` cannot be created. Tests run
    as root, which writes through file modes, so a file where the folder would go stands in
    for the read-only mount (the same OSError path)."""
    first = load_or_create_signer(tmp_path)
    shutil.rmtree(tmp_path / "public")
    (tmp_path / "public").write_text("not a folder")
    signer = load_or_create_signer(tmp_path)  # before: NotADirectoryError, start-up failed
    assert signer.key_id == first.key_id
    assert "serving the current key only" in caplog.text
    assert public_keys(tmp_path) == {signer.key_id: signer.public_pem()}
