"""Structured provenance facts (issue 19): training hardware, data origin, compute, behavioural
evidence, listings on named lists, the control chain; their canonical forms, the refusals, and
migration 0005, which converts registries written with the old single-value fields."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, text

from registry.db import migrate, run_alembic, session_scope
from registry.lineage import training_hardware_vendors
from registry.service import ValidationFailed, load_snapshot, write_transaction
from tests.registry.conftest import CLAIM, DISTILL, LLAMA, seed


def _update(engine: Engine, kind: str, id: str, changes: dict[str, Any]) -> dict[str, Any]:
    with write_transaction(engine=engine, actor="test") as writer:
        return writer.update(kind, id, changes, expected_version=None)


def _refused(engine: Engine, kind: str, id: str, changes: dict[str, Any]) -> str:
    with pytest.raises(ValidationFailed) as caught:
        _update(engine, kind, id, changes)
    return str(caught.value)


def test_model_facts_are_stored_in_canonical_form(seeded: Engine) -> None:
    stored = _update(
        seeded,
        "model",
        DISTILL["id"],
        {
            "training_hardware": [
                {"accelerator": "Huawei Ascend 910B", "share": 0.25},
                {"vendor": "NVIDIA Corporation", "accelerator": "H800 SXM"},
            ],
            "training_data_countries": ["cn", "United States"],
            "training_compute": {"gpu_hours": 2_788_000},
            "behavioral_restrictions": [
                {
                    "topic": "Tiananmen 1989",
                    "evidence_url": "https://example.org/eval",
                    "observed_at": "2026-11-01",
                    "observed_on": "weights",
                }
            ],
        },
    )
    assert stored["training_hardware"] == [
        {"vendor": "huawei", "accelerator": "ascend-910b", "share": 0.25},
        {"vendor": "nvidia", "accelerator": "h800", "share": None},
    ]
    assert stored["training_data_countries"] == ["CN", "US"]
    assert stored["behavioral_restrictions"][0]["topic"] == "tiananmen-1989"
    with session_scope(seeded) as session:
        snapshot = load_snapshot(session=session)
    model = snapshot.models[DISTILL["id"]]
    assert model.training_hardware_vendors == {"huawei", "nvidia"}
    assert model.training_gpu_hours == 2_788_000
    # the distill's ancestor (Llama) states no hardware: the lineage set is the distill's own
    assert training_hardware_vendors(snapshot.models, DISTILL["id"]) == {"huawei", "nvidia"}


def test_training_hardware_vendors_follow_the_lineage(seeded: Engine) -> None:
    """What the exposure report groups by: a model's own vendors and its ancestors'."""
    _update(seeded, "model", LLAMA["id"], {"training_hardware": [{"accelerator": "H100"}]})
    _update(seeded, "model", DISTILL["id"], {"training_hardware": [{"vendor": "amd"}]})
    with session_scope(seeded) as session:
        snapshot = load_snapshot(session=session)
    assert training_hardware_vendors(snapshot.models, DISTILL["id"]) == {"amd", "nvidia"}
    assert training_hardware_vendors(snapshot.models, DISTILL["id"], lineage=False) == {"amd"}
    assert training_hardware_vendors(snapshot.models, LLAMA["id"]) == {"nvidia"}
    assert training_hardware_vendors(snapshot.models, "no/such-model") == frozenset()


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"training_hardware": [{"vendor": "nvida"}]}, "did you mean 'nvidia'"),
        ({"training_hardware": [{"vendor": "nvidia", "accelerator": "910b"}]}, "made by huawei"),
        ({"training_hardware": [{"share": 0.5}]}, "neither a vendor nor an accelerator"),
        ({"training_hardware": [{"vendor": "nvidia", "share": 1.5}]}, "less than or equal to 1"),
        (
            {
                "training_hardware": [
                    {"vendor": "nvidia", "share": 0.7},
                    {"vendor": "huawei", "share": 0.7},
                ]
            },
            "add up to more than 1",
        ),
        ({"training_data_countries": ["Atlantis"]}, "not an ISO 3166-1"),
        ({"training_compute": {"flops": -1}}, "greater than or equal to 0"),
        ({"behavioral_restrictions": [{"topic": "x", "observed_on": "a b"}]}, "neither 'weights'"),
        ({"behavioral_restrictions": [{"topic": "!!"}]}, "not a valid topic"),
        ({"behavioral_restrictions": ["Tiananmen"]}, "behavioral_restrictions.0"),
    ],
)
def test_model_facts_refused_with_a_clear_message(
    seeded: Engine, changes: dict[str, Any], needle: str
) -> None:
    assert needle in _refused(seeded, "model", DISTILL["id"], changes)


def test_listings_name_a_known_list_and_the_error_lists_them(seeded: Engine) -> None:
    stored = _update(
        seeded,
        "organization",
        "deepseek",
        {
            "listings": [
                {"list": "Entity List", "since": "2025-01-15", "source": "https://example.org/fr"}
            ]
        },
    )
    assert stored["listings"] == [
        {"list": "us-entity-list", "since": "2025-01-15", "source": "https://example.org/fr"}
    ]
    message = _refused(seeded, "organization", "deepseek", {"listings": [{"list": "naughty-list"}]})
    for name in ("us-entity-list", "us-ofac-sdn", "us-1260h", "eu-sanctions", "uk-sanctions"):
        assert name in message
    twice = [{"list": "us-1260h"}, {"list": "1260H"}]
    assert "same list twice" in _refused(seeded, "organization", "deepseek", {"listings": twice})


def test_a_jurisdiction_tag_naming_a_list_is_refused(seeded: Engine) -> None:
    """One canonical form: a list is a listing, never also a tag no listing rule would see."""
    message = _refused(
        seeded, "organization", "deepseek", {"jurisdiction_tags": ["US Entity List"]}
    )
    assert "write it under listings" in message


def test_control_chain_follows_parents_and_cycles_are_refused(seeded: Engine) -> None:
    with write_transaction(engine=seeded, actor="test") as writer:
        writer.create("organization", {"id": "high-flyer", "name": "High-Flyer", "claim": CLAIM})
        writer.update("organization", "deepseek", {"parent": "high-flyer"}, expected_version=None)
    with session_scope(seeded) as session:
        snapshot = load_snapshot(session=session)
    assert snapshot.control_chain("deepseek") == ("deepseek", "high-flyer")
    assert snapshot.same_group("high-flyer", "deepseek") is True
    assert snapshot.same_group("meta", "deepseek") is False
    assert snapshot.same_group("nobody", "deepseek") is None
    assert "cycle" in _refused(seeded, "organization", "high-flyer", {"parent": "deepseek"})


def test_migration_0005_converts_the_old_fields(engine: Engine) -> None:
    """A registry written with one training vendor, free-text restrictions and a list named
    as a jurisdiction tag comes out in the structured form, each change in the change log."""
    seed(engine)
    run_alembic(engine, "downgrade", "0004")
    claims = orjson.dumps({"training_hardware_vendor": CLAIM}).decode()
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE models SET training_hardware_vendor = 'nvidia', claims = :claims, "
                "behavioral_restrictions = :restrictions WHERE id = :id"
            ),
            {
                "claims": claims,
                "restrictions": '["Tiananmen 1989", "!!!"]',
                "id": DISTILL["id"],
            },
        )
        connection.execute(
            text("UPDATE organizations SET jurisdiction_tags = :tags WHERE id = 'deepseek'"),
            {"tags": '["eu", "us-entity-list"]'},
        )
        version = connection.execute(text("SELECT version FROM registry_state")).scalar()
    migrate(engine)
    with session_scope(engine) as session:
        snapshot = load_snapshot(session=session)
        changes = session.execute(
            text("SELECT kind, entity_id FROM registry_changes WHERE actor = 'migration:0005'")
        ).all()
    model = snapshot.models[DISTILL["id"]]
    assert model.training_hardware_vendors == {"nvidia"}
    assert model.confidence("training_hardware") == "reported"  # the claim moved along
    assert [r.topic for r in model.behavioral_restrictions] == ["tiananmen-1989"]
    assert model.behavioral_restrictions[0].observed_on is None  # not stated: never guessed
    deepseek = snapshot.orgs["deepseek"]
    assert deepseek.jurisdiction_tags == frozenset({"eu"})
    assert [listing.list for listing in deepseek.listings] == ["us-entity-list"]
    assert deepseek.listings[0].source == CLAIM["source"]
    assert snapshot.version == version + 1
    assert set(changes) == {("model", DISTILL["id"]), ("organization", "deepseek")}


def test_migration_0005_downgrades(engine: Engine) -> None:
    seed(engine)
    _update(engine, "model", DISTILL["id"], {"training_hardware": [{"vendor": "huawei"}]})
    _update(engine, "organization", "deepseek", {"listings": [{"list": "us-1260h"}]})
    run_alembic(engine, "downgrade", "0004")
    with engine.begin() as connection:
        vendor = connection.execute(
            text("SELECT training_hardware_vendor FROM models WHERE id = :id"),
            {"id": DISTILL["id"]},
        ).scalar()
        tags = connection.execute(
            text("SELECT jurisdiction_tags FROM organizations WHERE id = 'deepseek'")
        ).scalar()
    assert vendor == "huawei"
    assert (orjson.loads(tags) if isinstance(tags, str) else tags) == ["us-1260h"]
    migrate(engine)
