"""The registry write path and reads, on SQLite and PostgreSQL (see ``tests/conftest.py``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert
from sqlalchemy.exc import IntegrityError

from registry.db import session_scope
from registry.keys import generate_key, hash_key, key_prefix
from registry.lineage import effective_provenance
from registry.models import Policy
from registry.reads import table
from registry.service import (
    KINDS,
    ConflictError,
    Evaluation,
    NotFoundError,
    ValidationFailed,
    Writer,
    get_policy,
    insert_decisions,
    list_changes,
    list_decisions,
    list_policies,
    load_snapshot,
    read_all,
    read_one,
    registry_version,
    write_transaction,
)
from tests.registry.conftest import DEPLOYMENT, DISTILL, LLAMA, RAW_ADMIN_KEY

State = Callable[[Engine], dict[str, Any]]

# kind -> (data to create, a change, the key field)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "organization": (
        {"id": "acme", "name": "Acme", "hq_country": "de", "parent": "meta"},
        {"name": "Acme GmbH"},
        "id",
    ),
    "license": ({"id": "apache-2.0", "name": "Apache License 2.0"}, {"open_weights": True}, "id"),
    "model": (
        {
            "id": "acme/tiny",
            "developer": "meta",
            "license": "MIT",
            "lineage": [{"relation": "finetune_of", "model": "meta-llama/Llama-3.1-8B"}],
        },
        {"context_length": 8192},
        "id",
    ),
    "deployment": (
        {"id": "tiny-us", "model": "meta-llama/Llama-3.1-8B", "location_country": "US"},
        {"priority": 5},
        "id",
    ),
    "route": (
        {"name": "chat-fast", "candidates": ["distill-fra"]},
        {"strategy": "weighted"},
        "name",
    ),
    "tenant": ({"id": "team-b", "name": "Team B"}, {"region": "eu"}, "id"),
    "api_key": (
        {"id": "ci", "tenant": "product-x", "scopes": ["inference"], "raw_key": "k" * 32},
        {"enabled": False},
        "id",
    ),
}


def read(engine: Engine, kind: str, id: str) -> dict[str, Any]:
    with session_scope(engine) as session:
        return read_one(session=session, kind=kind, id=id)


def version_of(engine: Engine) -> int:
    with session_scope(engine) as session:
        return registry_version(session=session)


def changes(engine: Engine, **filters: Any) -> list[dict[str, Any]]:
    with session_scope(engine) as session:
        return list_changes(session=session, **filters)


@pytest.mark.parametrize("kind", KINDS)
def test_create_read_update_delete_every_kind(seeded: Engine, kind: str) -> None:
    data, change, key = CASES[kind]
    with write_transaction(engine=seeded, actor="alice") as writer:
        created = writer.create(kind, data)
    assert writer.version == 2 and created["version"] == 2
    entity_id = created[key]
    assert read(seeded, kind, entity_id) == created
    with session_scope(seeded) as session:
        assert created in read_all(session=session, kind=kind)

    with write_transaction(engine=seeded, actor="alice") as writer:
        updated = writer.update(kind, entity_id, change, expected_version=2)
    assert updated["version"] == 3
    assert {name: updated[name] for name in change} == change
    assert updated["created_at"] == created["created_at"]
    assert updated["updated_at"] > created["updated_at"]

    with write_transaction(engine=seeded, actor="alice") as writer:
        writer.delete(kind, entity_id, expected_version=3)
    with pytest.raises(NotFoundError):
        read(seeded, kind, entity_id)
    log = changes(seeded, kind=kind, entity_id=entity_id)
    assert [(c["op"], c["version"], c["actor"]) for c in log] == [
        ("delete", 4, "alice"),
        ("update", 3, "alice"),
        ("create", 2, "alice"),
    ]
    assert log[0]["after"] is None and log[2]["before"] is None
    assert log[1]["before"]["version"] == 2 and log[1]["after"]["version"] == 3


def test_public_shapes_are_flat_and_normalized(seeded: Engine) -> None:
    deployment = read(seeded, "deployment", DEPLOYMENT["id"])
    assert deployment["location_country"] == "DE"
    assert deployment["location_region"] == "eu-central"
    assert deployment["location_eea"] is True  # derived from the country
    assert (
        deployment["hardware_vendor"],
        deployment["accelerator"],
        deployment["accelerator_count"],
    ) == (
        "nvidia",
        "h100",
        8,
    )
    assert deployment["zero_data_retention"] is True and deployment["retention_days"] == 0
    assert "location" not in deployment
    llama = read(seeded, "model", LLAMA["id"])
    assert llama["release_date"] == "2024-07-23"
    assert llama["claim"] == {
        "source": "https://example.org/card",
        "retrieved_at": "2026-11-25",
        "confidence": "reported",
    }
    assert read(seeded, "model", DISTILL["id"])["lineage"] == DISTILL["lineage"]
    assert read(seeded, "license", "MIT")["commercial_use"] == "yes"


def test_moving_a_deployment_rederives_its_eea_flag(seeded: Engine) -> None:
    with write_transaction(engine=seeded, actor="alice") as writer:
        moved = writer.update(
            "deployment", "distill-fra", {"location_country": "US"}, expected_version=1
        )
    assert (moved["location_country"], moved["location_eea"]) == ("US", False)


def test_a_write_that_changes_nothing_creates_no_version(
    seeded: Engine, registry_state: State
) -> None:
    before = registry_state(seeded)
    with write_transaction(engine=seeded, actor="alice") as writer:
        same = writer.update(
            "organization",
            "meta",
            {"hq_country": "us", "name": "Meta Platforms, Inc."},
            expected_version=1,
        )
        writer.update(
            "model", DISTILL["id"], {"lineage": DISTILL["lineage"]}, expected_version=None
        )
        writer.update("api_key", "admin", {"raw_key": RAW_ADMIN_KEY}, expected_version=1)
    assert writer.version is None
    assert same["version"] == 1
    assert registry_state(seeded) == before


def test_versions_increase_once_per_transaction(seeded: Engine) -> None:
    versions = []
    for name in ("one", "two", "three"):
        with write_transaction(engine=seeded, actor="alice") as writer:
            writer.create("tenant", {"id": f"{name}-a"})
            writer.create("tenant", {"id": f"{name}-b"})
            writer.update("tenant", f"{name}-a", {"name": name}, expected_version=None)
        versions.append(writer.version)
    assert versions == [2, 3, 4]
    assert version_of(seeded) == 4
    assert {c["version"] for c in changes(seeded, since_version=1)} == {2, 3, 4}
    assert read(seeded, "tenant", "two-a")["version"] == 3


def test_any_exception_rolls_the_whole_transaction_back(
    seeded: Engine, registry_state: State
) -> None:
    before = registry_state(seeded)
    with pytest.raises(RuntimeError), write_transaction(engine=seeded, actor="alice") as writer:
        writer.create("tenant", {"id": "doomed"})
        writer.update("organization", "meta", {"name": "Renamed"}, expected_version=1)
        raise RuntimeError("caller failed half way")
    assert registry_state(seeded) == before


def test_a_rejected_operation_leaves_the_transaction_usable(seeded: Engine) -> None:
    with write_transaction(engine=seeded, actor="alice") as writer:
        writer.create("tenant", {"id": "first"})
        with pytest.raises(ValidationFailed):
            writer.create("organization", {"id": "bad", "name": "Bad", "hq_country": "XX"})
        with pytest.raises(ConflictError):
            writer.update("organization", "meta", {"name": "M"}, expected_version=99)
        writer.create("tenant", {"id": "second"})
    assert writer.version == 2
    assert {t["id"] for t in read_all_of(seeded, "tenant")} == {"product-x", "first", "second"}
    with pytest.raises(NotFoundError):
        read(seeded, "organization", "bad")


def read_all_of(engine: Engine, kind: str) -> list[dict[str, Any]]:
    with session_scope(engine) as session:
        return read_all(session=session, kind=kind)


def test_stale_expected_version_is_a_conflict(seeded: Engine, registry_state: State) -> None:
    with write_transaction(engine=seeded, actor="alice") as writer:
        writer.update("model", LLAMA["id"], {"family": "llama3"}, expected_version=1)
    before = registry_state(seeded)
    operations: tuple[Callable[[Writer], object], ...] = (
        lambda w: w.update("model", LLAMA["id"], {"family": "llama"}, expected_version=1),
        lambda w: w.delete("route", "chat-default", expected_version=7),
    )
    for operation in operations:
        with (
            pytest.raises(ConflictError, match="version"),
            write_transaction(engine=seeded, actor="bob") as writer,
        ):
            operation(writer)
    assert registry_state(seeded) == before


def test_update_without_expected_version_and_with_its_own_id(seeded: Engine) -> None:
    with write_transaction(engine=seeded, actor="apply") as writer:
        updated = writer.update(
            "model", LLAMA["id"], {"id": LLAMA["id"], "family": "llama3"}, expected_version=None
        )
    assert updated["family"] == "llama3" and updated["version"] == 2
    with (
        pytest.raises(ValidationFailed) as error,
        write_transaction(engine=seeded, actor="apply") as writer,
    ):
        writer.update("model", LLAMA["id"], {"id": "meta-llama/other"}, expected_version=None)
    assert error.value.field == "id"


def test_missing_entities_are_not_found(seeded: Engine) -> None:
    operations: tuple[Callable[[Writer], object], ...] = (
        lambda w: w.update("tenant", "ghost", {"name": "x"}, expected_version=None),
        lambda w: w.delete("tenant", "ghost", expected_version=None),
        lambda w: w.activate_policy(version=42),
    )
    for operation in operations:
        with (
            pytest.raises(NotFoundError),
            write_transaction(engine=seeded, actor="alice") as writer,
        ):
            operation(writer)


def test_change_log_never_holds_a_key_or_its_hash(seeded: Engine) -> None:
    rotated = generate_key()
    with write_transaction(engine=seeded, actor="alice") as writer:
        public, raw = writer.create_api_key(id="ci", tenant="product-x", scopes=["inference"])
        writer.update("api_key", "ci", {"raw_key": rotated}, expected_version=None)
    log = json.dumps(changes(seeded, limit=1000))
    listed = json.dumps(read_all_of(seeded, "api_key"))
    for secret in (
        raw,
        hash_key(raw),
        rotated,
        hash_key(rotated),
        RAW_ADMIN_KEY,
        hash_key(RAW_ADMIN_KEY),
    ):
        assert secret not in log and secret not in listed
    assert "key_hash" not in public and "raw_key" not in public
    assert key_prefix(rotated) in log and read(seeded, "api_key", "ci")["prefix"] == key_prefix(
        rotated
    )
    with session_scope(seeded) as session:
        keys = load_snapshot(session=session).keys_by_hash
    assert hash_key(rotated) in keys and hash_key(raw) not in keys


def test_generated_keys(seeded: Engine) -> None:
    with write_transaction(engine=seeded, actor="alice") as writer:
        public, raw = writer.create_api_key(
            id="gen", tenant="product-x", scopes=["inference", "compliance"]
        )
    assert (
        raw.startswith("pr-")
        and len(raw) == 43
        and raw[3:].replace("-", "").replace("_", "").isalnum()
    )
    assert public["prefix"] == raw[:10] and public["scopes"] == ["inference", "compliance"]
    assert generate_key() != generate_key()
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    with (
        pytest.raises(ValidationFailed) as error,
        write_transaction(engine=seeded, actor="alice") as writer,
    ):
        writer.create("api_key", {"id": "nokey", "tenant": "product-x", "scopes": ["inference"]})
    assert error.value.field == "raw_key"


REFERENCED = [
    ("organization", "meta", "model 'meta-llama/Llama-3.1-8B' (developer)"),
    ("organization", "deepseek", "(developer)"),
    ("license", "MIT", "(license)"),
    ("model", LLAMA["id"], "(lineage)"),
    ("model", DISTILL["id"], "deployment 'distill-fra' (model)"),
    ("deployment", "distill-fra", "route 'chat-default' (candidates)"),
    ("tenant", "product-x", "api_key 'admin' (tenant)"),
]


@pytest.mark.parametrize(("kind", "id", "referrer"), REFERENCED)
def test_delete_is_refused_while_referenced(
    seeded: Engine, registry_state: State, kind: str, id: str, referrer: str
) -> None:
    before = registry_state(seeded)
    with (
        pytest.raises(ValidationFailed, match="still referenced") as error,
        write_transaction(engine=seeded, actor="alice") as writer,
    ):
        writer.delete(kind, id, expected_version=1)
    assert referrer in error.value.message
    assert registry_state(seeded) == before


def test_deleting_a_model_removes_its_lineage(seeded: Engine) -> None:
    with write_transaction(engine=seeded, actor="alice") as writer:
        writer.delete("route", "chat-default", expected_version=1)
        writer.delete("deployment", "distill-fra", expected_version=1)
        writer.delete("model", DISTILL["id"], expected_version=1)
        writer.delete("model", LLAMA["id"], expected_version=1)  # no longer anyone's parent
    with session_scope(seeded) as session:
        assert load_snapshot(session=session).models == {}


def test_policies_are_versioned_and_one_is_active(seeded: Engine) -> None:
    with write_transaction(engine=seeded, actor="carol") as writer:
        first = writer.save_policy(
            name="baseline", format="yaml", source="rules: []", activate=True
        )
    with write_transaction(engine=seeded, actor="carol") as writer:
        second = writer.save_policy(
            name="strict",
            format="cedar",
            source="forbid(principal, action, resource);",
            activate=False,
        )
    assert (first["version"], first["active"], first["created_by"]) == (1, True, "carol")
    assert (second["version"], second["active"]) == (2, False)
    assert active_policy_version(seeded) == 1
    with write_transaction(engine=seeded, actor="carol") as writer:
        switched = writer.activate_policy(version=2)
    assert switched["active"] is True and active_policy_version(seeded) == 2
    assert writer.version == 4  # every policy write moves the registry version: replicas reload
    with write_transaction(engine=seeded, actor="carol") as writer:
        writer.activate_policy(version=2)
    assert writer.version is None
    assert [c["op"] for c in changes(seeded, kind="policy")] == [
        "update",
        "create",
        "update",
        "create",
    ]
    with session_scope(seeded) as session:
        saved = list_policies(session=session)
        assert [(p["version"], p["active"]) for p in saved] == [(2, True), (1, False)]
        assert get_policy(session=session, version=1)["source"] == "rules: []"
        with pytest.raises(NotFoundError):
            get_policy(session=session, version=3)


def test_the_database_itself_allows_one_active_policy(seeded: Engine) -> None:
    with write_transaction(engine=seeded, actor="carol") as writer:
        writer.save_policy(name="baseline", format="yaml", source="rules: []", activate=True)
    row = {"name": "rogue", "format": "yaml", "source": "x", "created_by": "x", "active": True}
    with pytest.raises(IntegrityError), seeded.begin() as connection:
        connection.execute(
            insert(table(Policy)).values(version=2, created_at=datetime.now(UTC), **row)
        )


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"name": " ", "format": "yaml", "source": "x"}, "name"),
        ({"name": "p", "format": "rego", "source": "x"}, "format"),
        ({"name": "p", "format": "yaml", "source": ""}, "source"),
    ],
)
def test_bad_policy_input_is_rejected(
    seeded: Engine, arguments: dict[str, str], field: str
) -> None:
    with (
        pytest.raises(ValidationFailed) as error,
        write_transaction(engine=seeded, actor="carol") as writer,
    ):
        writer.save_policy(activate=True, **arguments)
    assert error.value.field == field
    assert version_of(seeded) == 1


def active_policy_version(engine: Engine) -> int | None:
    with session_scope(engine) as session:
        policy = load_snapshot(session=session).policy
    return policy.version if policy else None


def test_snapshot_holds_the_whole_registry(seeded: Engine) -> None:
    with session_scope(seeded) as session:
        snapshot = load_snapshot(session=session)
    assert snapshot.version == 1
    assert set(snapshot.orgs) == {"meta", "deepseek"}
    distill = snapshot.models[DISTILL["id"]]
    assert [(p.relation, p.parent_id) for p in distill.parents] == [("distilled_from", LLAMA["id"])]
    assert distill.confidence("license_id") == "reported"  # its per-field claim on "license"
    assert snapshot.models[LLAMA["id"]].claim.confidence == "reported"
    assert snapshot.orgs["meta"].confidence("hq_country") == "reported"
    deployment = snapshot.deployments["distill-fra"]
    assert (deployment.model_id, deployment.location_country, deployment.location_eea) == (
        DISTILL["id"],
        "DE",
        True,
    )
    assert deployment.secret_ref == "DISTILL_API_KEY"
    assert snapshot.routes["chat-default"].candidates == ("distill-fra", LLAMA["id"])
    assert snapshot.tenants["product-x"].attributes == {"business_unit": "retail"}
    key = snapshot.keys_by_hash[hash_key(RAW_ADMIN_KEY)]
    assert (key.id, key.tenant_id, key.scopes) == ("admin", "product-x", frozenset({"admin"}))
    assert snapshot.policy is None
    effective = effective_provenance(
        snapshot.models, snapshot.orgs, snapshot.licenses, DISTILL["id"]
    )
    assert effective.developer_countries == {"CN", "US"}
    assert effective.licenses == {"MIT", "LicenseRef-llama3.1"}  # Llama's terms pass to derivatives
    assert effective.complete


def test_change_log_filters(seeded: Engine) -> None:
    with write_transaction(engine=seeded, actor="bob") as writer:
        writer.update("organization", "meta", {"aliases": ["Facebook"]}, expected_version=1)
    assert len(changes(seeded)) == 11
    assert [c["entity_id"] for c in changes(seeded, actor="bob")] == ["meta"]
    assert [c["version"] for c in changes(seeded, since_version=1)] == [2]
    assert {c["entity_id"] for c in changes(seeded, kind="organization")} == {"meta", "deepseek"}
    assert len(changes(seeded, entity_id="meta")) == 2
    assert len(changes(seeded, limit=3)) == 3
    assert changes(seeded)[0]["entity_id"] == "meta"  # newest first


def test_routing_decisions_are_stored_in_bulk_and_filtered(engine: Engine) -> None:
    now = datetime.now(UTC)
    rows = [
        {
            "request_id": "r1",
            "tenant_id": "a",
            "status": "ok",
            "created_at": now - timedelta(hours=2),
        },
        {
            "request_id": "r2",
            "tenant_id": "a",
            "status": "denied",
            "http_status": 403,
            "candidates": [
                {"deployment": "d1", "allowed": False, "rule_ids": ["no-cn"], "reasons": ["CN"]}
            ],
            "created_at": now - timedelta(hours=1),
        },
        {
            "request_id": "r3",
            "tenant_id": "b",
            "status": "ok",
            "total_tokens": 12,
            "created_at": now,
        },
    ]
    insert_decisions(engine=engine, rows=rows)
    with session_scope(engine) as session:

        def ids(**filters: Any) -> list[str]:
            return [d["request_id"] for d in list_decisions(session=session, **filters)]

        assert ids() == ["r3", "r2", "r1"]
        assert ids(tenant_id="a") == ["r2", "r1"]
        assert ids(status="ok") == ["r3", "r1"]
        assert ids(since=now - timedelta(minutes=90)) == ["r3", "r2"]
        assert ids(until=now - timedelta(minutes=90)) == ["r1"]
        assert ids(since=(now - timedelta(minutes=90)).replace(tzinfo=None)) == ["r3", "r2"]
        assert ids(limit=1) == ["r3"]
        denied = list_decisions(session=session, status="denied")[0]
    assert denied["candidates"][0]["rule_ids"] == ["no-cn"] and denied["http_status"] == 403


def test_a_verdict_shared_by_many_decisions_is_stored_once(engine: Engine) -> None:
    verdict = [
        {"deployment": "d-cn", "allowed": False, "rule_ids": ["no-cn"], "reasons": ["denied"]},
        {"deployment": "d-eu", "allowed": True, "rule_ids": ["baseline"], "reasons": ["ok"]},
    ]
    other = [{"deployment": "d-eu", "allowed": True, "rule_ids": ["baseline"], "reasons": []}]
    shared = Evaluation.of(verdict)
    rows: list[dict[str, Any]] = [
        {"request_id": f"r{i}", "status": "ok", "candidates": shared} for i in range(5)
    ]
    rows.append({"request_id": "plain-list", "status": "ok", "candidates": verdict})
    rows.append({"request_id": "other", "status": "ok", "candidates": other})
    rows.append({"request_id": "refused", "status": "error"})  # no candidates at all
    insert_decisions(engine=engine, rows=rows)
    insert_decisions(
        engine=engine, rows=[{"request_id": "later", "status": "ok", "candidates": shared}]
    )

    with engine.connect() as connection:
        stored = (
            connection.exec_driver_sql("SELECT id FROM decision_evaluations ORDER BY id")
            .scalars()
            .all()
        )
        inline = connection.exec_driver_sql(
            "SELECT count(*) FROM routing_decisions WHERE candidates <> '[]'"
            if engine.dialect.name == "sqlite"
            else "SELECT count(*) FROM routing_decisions WHERE candidates <> '[]'::jsonb"
        ).scalar()
    assert stored == sorted({shared.id, Evaluation.of(other).id}) and inline == 0
    with session_scope(engine) as session:
        decisions = {d["request_id"]: d for d in list_decisions(session=session)}
    assert len(decisions) == 9
    for request_id in ("r0", "r4", "plain-list", "later"):
        assert decisions[request_id]["candidates"] == verdict
        assert decisions[request_id]["evaluation_id"] == shared.id
    assert decisions["other"]["candidates"] == other
    assert (
        decisions["refused"]["candidates"] == [] and decisions["refused"]["evaluation_id"] is None
    )


def test_decisions_refuse_unknown_fields(engine: Engine) -> None:
    with pytest.raises(ValueError, match="prompt"):
        insert_decisions(
            engine=engine,
            rows=[
                {"request_id": "r", "status": "ok"},
                {"request_id": "s", "status": "ok", "prompt": "secret"},
            ],
        )
    with pytest.raises(ValueError, match="status"):
        insert_decisions(engine=engine, rows=[{"request_id": "r"}])
    with pytest.raises(ValueError, match="evaluation_id"):  # only ever set with its evaluation
        insert_decisions(
            engine=engine, rows=[{"request_id": "r", "status": "ok", "evaluation_id": "x"}]
        )
    with session_scope(engine) as session:
        assert list_decisions(session=session) == []


def test_tenant_default_classification_must_be_a_known_label(seeded: Engine) -> None:
    with (
        pytest.raises(ValidationFailed) as error,
        write_transaction(engine=seeded, actor="admin") as writer,
    ):
        writer.create("tenant", {"id": "odd", "default_classification": "top-secret"})
    assert error.value.field == "default_classification"
    with write_transaction(engine=seeded, actor="admin") as writer:
        created = writer.create("tenant", {"id": "strict", "default_classification": "restricted"})
    assert created["default_classification"] == "restricted"
