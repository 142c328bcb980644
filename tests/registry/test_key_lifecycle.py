"""API key lifecycle in the registry service (issue 22), on SQLite and PostgreSQL: metadata,
expiry, allow-lists checked like every reference, rotation keeping the key id, last use
written without a registry change, and the file format round trip (no secret in an export)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from registry.db import session_scope
from registry.gitops import apply, export
from registry.key_use import record_key_use
from registry.keys import hash_key, key_prefix
from registry.service import (
    ValidationFailed,
    find_key_snap,
    list_changes,
    load_snapshot,
    read_one,
    registry_version,
    write_transaction,
)
from tests.registry.conftest import RAW_ADMIN_KEY

LLAMA = "meta-llama/Llama-3.1-8B"


def _key(engine: Engine, id: str = "ci") -> dict[str, Any]:
    with session_scope(engine) as session:
        return read_one(session=session, kind="api_key", id=id)


def _create(engine: Engine, **fields: Any) -> str:
    with write_transaction(engine=engine, actor="alice") as writer:
        _, raw = writer.create_api_key(id="ci", tenant="product-x", scopes=["inference"], **fields)
    return raw


def test_metadata_expiry_and_allow_lists_are_stored_and_public(seeded: Engine) -> None:
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    raw = _create(
        seeded,
        owner="Team CI",
        description="builds",
        expires_at="2030-01-02T04:04:05+01:00",  # another zone: stored as the same instant
        allowed_routes=["chat-default"],
        allowed_models=[LLAMA],
    )
    public = _key(seeded)
    assert public["owner"] == "Team CI" and public["description"] == "builds"
    assert datetime.fromisoformat(public["expires_at"]) == expires
    assert public["allowed_routes"] == ["chat-default"] and public["allowed_models"] == [LLAMA]
    assert public["last_used_at"] is None and public["previous_valid_until"] is None
    assert not {"key_hash", "previous_key_hash", "raw_key"} & set(public)
    with session_scope(seeded) as session:
        snap = load_snapshot(session=session).keys_by_hash[hash_key(raw)]
    assert snap.valid_until == expires.timestamp() and not snap.rotated
    assert snap.allowed_routes == {"chat-default"} and snap.allowed_models == {LLAMA}


def test_a_time_without_zone_is_utc(seeded: Engine) -> None:
    _create(seeded, expires_at="2030-01-02T03:04:05")
    assert _key(seeded)["expires_at"] == "2030-01-02T03:04:05Z"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"allowed_routes": ["chat-defualt"]}, "allowed_routes: no route 'chat-defualt'"),
        ({"allowed_models": ["meta-llama/llama-3.1-8b"]}, "did you mean 'meta-llama/Llama-3.1-8B'"),
        ({"allowed_routes": ["chat-default", "chat-default"]}, "duplicates"),
        ({"owner": ""}, "owner"),
    ],
)
def test_bad_key_fields_are_refused(seeded: Engine, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationFailed, match=message):
        _create(seeded, **fields)


def test_a_route_a_key_names_cannot_be_deleted(seeded: Engine) -> None:
    """Else a route created again under that name would silently be allowed to the key."""
    _create(seeded, allowed_routes=["chat-default"])
    with (
        pytest.raises(ValidationFailed, match="api_key 'ci' \\(allowed_routes\\)"),
        write_transaction(engine=seeded, actor="alice") as writer,
    ):
        writer.delete("route", "chat-default", expected_version=None)


def test_rotation_keeps_the_key_and_the_old_hash_for_the_grace_period(seeded: Engine) -> None:
    old = _create(seeded, allowed_models=[LLAMA])
    before = _key(seeded)
    started = datetime.now(UTC)
    with write_transaction(engine=seeded, actor="alice") as writer:
        public, new = writer.rotate_api_key(id="ci", grace_s=3600)
    assert new != old and public["id"] == "ci" and public["version"] > before["version"]
    assert public["prefix"] == key_prefix(new) and public["previous_prefix"] == key_prefix(old)
    until = datetime.fromisoformat(public["previous_valid_until"])
    assert started + timedelta(seconds=3600) <= until <= datetime.now(UTC) + timedelta(hours=1)
    with session_scope(seeded) as session:
        keys = load_snapshot(session=session).keys_by_hash
        found = find_key_snap(session=session, key_hash=hash_key(old))
    current, previous = keys[hash_key(new)], keys[hash_key(old)]
    assert (current.id, previous.id) == ("ci", "ci")
    assert not current.rotated and current.valid_until is None
    assert previous.rotated and previous.valid_until == until.timestamp()
    assert previous.allowed_models == {LLAMA}  # the old key is the same key
    assert found == previous
    with session_scope(seeded) as session:
        change = list_changes(session=session, kind="api_key", entity_id="ci")[0]
    assert change["op"] == "update" and change["actor"] == "alice"
    text = repr(change)
    for secret in (old, new, hash_key(old), hash_key(new)):
        assert secret not in text


def test_rotation_without_grace_and_twice(seeded: Engine) -> None:
    first = _create(seeded)
    with write_transaction(engine=seeded, actor="alice") as writer:
        _, second = writer.rotate_api_key(id="ci", grace_s=3600)
        _, third = writer.rotate_api_key(id="ci", grace_s=3600)  # ends the first grace
    with session_scope(seeded) as session:
        keys = load_snapshot(session=session).keys_by_hash
    assert hash_key(first) not in keys and keys[hash_key(second)].rotated
    with write_transaction(engine=seeded, actor="alice") as writer:
        public, fourth = writer.rotate_api_key(id="ci", grace_s=0)
    with session_scope(seeded) as session:
        keys = load_snapshot(session=session).keys_by_hash
    assert set(keys) == {hash_key(RAW_ADMIN_KEY), hash_key(fourth)}
    assert public["previous_prefix"] is None and public["previous_valid_until"] is None
    assert third not in repr(keys)


@pytest.mark.parametrize("grace_s", [-1.0, 31 * 86_400.0])
def test_rotation_refuses_a_bad_grace(seeded: Engine, grace_s: float) -> None:
    _create(seeded)
    version = _key(seeded)["version"]
    with (
        pytest.raises(ValidationFailed, match="grace_s"),
        write_transaction(engine=seeded, actor="alice") as writer,
    ):
        writer.rotate_api_key(id="ci", grace_s=grace_s)
    assert _key(seeded)["version"] == version


def test_a_replaced_hash_cannot_be_registered_again(seeded: Engine) -> None:
    old = _create(seeded)
    with write_transaction(engine=seeded, actor="alice") as writer:
        writer.rotate_api_key(id="ci", grace_s=60)
    with (
        pytest.raises(ValidationFailed, match="already registered"),
        write_transaction(engine=seeded, actor="alice") as writer,
    ):
        writer.create_api_key(id="other", tenant="product-x", scopes=["inference"], raw_key=old)


def test_last_use_is_written_without_a_registry_change(seeded: Engine) -> None:
    _create(seeded)
    with session_scope(seeded) as session:
        version = registry_version(session=session)
    later = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    record_key_use(engine=seeded, last_used={"ci": later, "gone": later})
    record_key_use(engine=seeded, last_used={"ci": later - 60})  # never goes backwards
    public = _key(seeded)
    assert public["last_used_at"] == "2030-01-01T00:00:00Z"
    with session_scope(seeded) as session:
        assert registry_version(session=session) == version


def test_key_metadata_round_trips_through_a_registry_file(seeded: Engine) -> None:
    raw = _create(
        seeded,
        owner="Team CI",
        expires_at="2030-01-02T03:04:05Z",
        allowed_routes=["chat-default"],
    )
    text = export(seeded)
    assert "owner: Team CI" in text and "chat-default" in text
    for secret in (raw, hash_key(raw), key_prefix(raw)):
        assert secret not in text
    assert not apply(seeded, text).changes  # the export applies back as no change
