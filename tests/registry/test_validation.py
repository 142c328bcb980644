"""Every kind of bad input is rejected with an error naming the field, and changes nothing:
not the registry version, not a row, not the change log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine

from registry.service import (
    ConflictError,
    ValidationFailed,
    Writer,
    write_transaction,
)
from registry.validation import (
    check_country,
    check_license_id,
    country_codes,
    eea_countries,
    spdx_ids,
)
from tests.registry.conftest import DEPLOYMENT, DISTILL, LLAMA

State = Callable[[Engine], dict[str, Any]]
Operation = Callable[[Writer], object]


def create(kind: str, data: dict[str, Any]) -> Operation:
    return lambda writer: writer.create(kind, data)


def update(kind: str, id: str, changes: dict[str, Any]) -> Operation:
    return lambda writer: writer.update(kind, id, changes, expected_version=None)


def org(**fields: Any) -> dict[str, Any]:
    return {"id": "acme", "name": "Acme", **fields}


def model(**fields: Any) -> dict[str, Any]:
    return {"id": "acme/tiny", **fields}


def deployment(**fields: Any) -> dict[str, Any]:
    return {**DEPLOYMENT, "id": "tiny-2", **fields}


REJECTED: dict[str, tuple[Operation, str | None]] = {
    # countries: ISO 3166-1 alpha-2 only
    "unknown country": (create("organization", org(hq_country="XX")), "hq_country"),
    "country name": (
        create("organization", org(incorporation_country="Deutschland")),
        "incorporation_country",
    ),
    "nested location country": (
        create("deployment", deployment(location={"country": "ZZ"})),
        "location_country",
    ),
    "update to bad country": (update("organization", "meta", {"hq_country": "EU"}), "hq_country"),
    "eea contradicts country": (
        create("deployment", deployment(location={"country": "US", "eea": True})),
        "location_eea",
    ),
    # licenses: SPDX ids or LicenseRef-*
    "not an SPDX id": (create("license", {"id": "Llama-3-Community", "name": "x"}), "id"),
    "empty LicenseRef": (create("license", {"id": "LicenseRef-", "name": "x"}), "id"),
    "bad LicenseRef": (create("license", {"id": "LicenseRef-a b", "name": "x"}), "id"),
    "model license not SPDX": (create("model", model(license="GPL-99")), "license"),
    # enums
    "confidence": (create("organization", org(claim={"confidence": "sure"})), "claim.confidence"),
    "claim retrieved_at": (
        create("organization", org(claim={"retrieved_at": "yesterday"})),
        "claim.retrieved_at",
    ),
    "review status": (create("model", model(review_status="ok")), "review_status"),
    "hosting": (create("deployment", deployment(hosting="cloud")), "hosting"),
    "adapter": (create("deployment", deployment(adapter="grpc")), "adapter"),
    "strategy": (
        create("route", {"name": "r", "strategy": "random", "candidates": ["distill-fra"]}),
        "strategy",
    ),
    "commercial use": (
        create("license", {"id": "0BSD", "name": "x", "commercial_use": "maybe"}),
        "commercial_use",
    ),
    "lineage relation": (
        create("model", model(lineage=[{"relation": "inspired_by", "model": LLAMA["id"]}])),
        "lineage.0.relation",
    ),
    "scope": (
        create(
            "api_key", {"id": "k", "tenant": "product-x", "scopes": ["root"], "raw_key": "k" * 32}
        ),
        "scopes.0",
    ),
    "no scope": (
        create("api_key", {"id": "k", "tenant": "product-x", "scopes": [], "raw_key": "k" * 32}),
        "scopes",
    ),
    "update to bad enum": (
        update("deployment", "distill-fra", {"review_status": "maybe"}),
        "review_status",
    ),
    # ids and names
    "org id not a slug": (create("organization", org(id="Not A Slug")), "id"),
    "model id without org": (create("model", {"id": "tiny"}), "id"),
    "deployment id with slash": (create("deployment", deployment(id="a/b")), "id"),
    "route name": (create("route", {"name": " spaced", "candidates": []}), "name"),
    "empty org name": (create("organization", org(name="")), "name"),
    # shapes
    "unknown field": (create("organization", org(colour="red")), "colour"),
    "unknown nested field": (
        create("deployment", deployment(location={"planet": "earth"})),
        "location.planet",
    ),
    "claims for no field": (
        create("model", model(claims={"weights": {"confidence": "verified"}})),
        "claims",
    ),
    "negative parameters": (create("model", model(parameters_total=-1)), "parameters_total"),
    "zero timeout": (create("deployment", deployment(timeout_s=0)), "timeout_s"),
    "secret instead of its name": (
        create("deployment", deployment(secret_ref="sk-live-1234")),
        "secret_ref",
    ),
    "endpoint not a URL": (
        create("deployment", deployment(endpoint_url="localhost:8080")),
        "endpoint_url",
    ),
    "short raw key": (
        create(
            "api_key", {"id": "k", "tenant": "product-x", "scopes": ["admin"], "raw_key": "short"}
        ),
        "raw_key",
    ),
    "duplicate scopes": (
        create(
            "api_key",
            {"id": "k", "tenant": "product-x", "scopes": ["admin", "admin"], "raw_key": "k" * 32},
        ),
        "scopes",
    ),
    "duplicate candidates": (
        create("route", {"name": "r", "candidates": ["distill-fra", "distill-fra"]}),
        "candidates",
    ),
    "unknown kind": (create("dataset", {"id": "x"}), "kind"),
    # dangling references
    "developer": (create("model", model(developer="nobody")), "developer"),
    "publisher": (create("model", model(publisher="nobody")), "publisher"),
    "declared license": (create("model", model(license="LicenseRef-unknown")), "license"),
    "lineage parent": (
        create("model", model(lineage=[{"relation": "finetune_of", "model": "meta/ghost"}])),
        "lineage",
    ),
    "deployment model": (create("deployment", deployment(model="meta/ghost")), "model"),
    "operator": (create("deployment", deployment(operator="nobody")), "operator"),
    "parent org": (create("organization", org(parent="nobody")), "parent"),
    "route candidate": (
        create("route", {"name": "r", "candidates": ["distill-fra", "ghost"]}),
        "candidates",
    ),
    "key tenant": (
        create(
            "api_key", {"id": "k", "tenant": "nobody", "scopes": ["admin"], "raw_key": "k" * 32}
        ),
        "tenant",
    ),
    "update to dangling": (update("model", LLAMA["id"], {"developer": "nobody"}), "developer"),
    # lineage and control-chain cycles
    "lineage self loop": (
        create("model", model(lineage=[{"relation": "merge_of", "model": "acme/tiny"}])),
        "lineage",
    ),
    "2-node lineage cycle": (
        update(
            "model", LLAMA["id"], {"lineage": [{"relation": "finetune_of", "model": DISTILL["id"]}]}
        ),
        "lineage",
    ),
    "org parent self": (update("organization", "meta", {"parent": "meta"}), "parent"),
}


@pytest.mark.parametrize("case", REJECTED)
def test_bad_input_is_rejected_and_changes_nothing(
    seeded: Engine, registry_state: State, case: str
) -> None:
    operation, field = REJECTED[case]
    before = registry_state(seeded)
    with (
        pytest.raises(ValidationFailed) as error,
        write_transaction(engine=seeded, actor="mallory") as writer,
    ):
        operation(writer)
    assert error.value.field == field
    if field is not None and field != "kind":
        assert error.value.message.startswith(field.split(".")[0])  # the message names the field
    assert registry_state(seeded) == before


def test_a_three_node_lineage_cycle_is_rejected(seeded: Engine, registry_state: State) -> None:
    with write_transaction(engine=seeded, actor="alice") as writer:
        writer.create("model", {"id": "x/a"})
        writer.create(
            "model", {"id": "x/b", "lineage": [{"relation": "finetune_of", "model": "x/a"}]}
        )
        writer.create(
            "model", {"id": "x/c", "lineage": [{"relation": "quantized_from", "model": "x/b"}]}
        )
    before = registry_state(seeded)
    closing = {"lineage": [{"relation": "merge_of", "model": "x/c"}]}
    with (
        pytest.raises(ValidationFailed) as error,
        write_transaction(engine=seeded, actor="alice") as writer,
    ):
        writer.update("model", "x/a", closing, expected_version=2)
    assert error.value.field == "lineage"
    assert "x/a -> x/c -> x/b -> x/a" in error.value.message
    assert registry_state(seeded) == before


def test_an_org_control_chain_cycle_is_rejected(seeded: Engine, registry_state: State) -> None:
    with write_transaction(engine=seeded, actor="alice") as writer:
        writer.update("organization", "deepseek", {"parent": "meta"}, expected_version=1)
    before = registry_state(seeded)
    with (
        pytest.raises(ValidationFailed, match="cycle"),
        write_transaction(engine=seeded, actor="alice") as writer,
    ):
        writer.update("organization", "meta", {"parent": "deepseek"}, expected_version=1)
    assert registry_state(seeded) == before


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        ("organization", {"id": "meta", "name": "Another Meta"}),
        ("license", {"id": "mit", "name": "MIT again"}),  # same id once normalized
        ("model", {"id": LLAMA["id"]}),
        ("route", {"name": "chat-default", "candidates": []}),
        (
            "api_key",
            {"id": "admin", "tenant": "product-x", "scopes": ["admin"], "raw_key": "z" * 32},
        ),
    ],
)
def test_duplicate_ids_conflict(
    seeded: Engine, registry_state: State, kind: str, data: dict[str, Any]
) -> None:
    before = registry_state(seeded)
    with (
        pytest.raises(ConflictError, match="already exists"),
        write_transaction(engine=seeded, actor="alice") as writer,
    ):
        writer.create(kind, data)
    assert registry_state(seeded) == before


def test_the_same_raw_key_cannot_be_registered_twice(seeded: Engine, registry_state: State) -> None:
    raw = "r" * 40
    with write_transaction(engine=seeded, actor="alice") as writer:
        writer.create_api_key(id="one", tenant="product-x", scopes=["inference"], raw_key=raw)
    before = registry_state(seeded)
    with (
        pytest.raises(ValidationFailed) as error,
        write_transaction(engine=seeded, actor="alice") as writer,
    ):
        writer.create_api_key(id="two", tenant="product-x", scopes=["inference"], raw_key=raw)
    assert error.value.field == "raw_key" and "already registered" in error.value.message
    assert registry_state(seeded) == before


def test_an_error_mid_transaction_rolls_back_what_came_before(
    seeded: Engine, registry_state: State
) -> None:
    before = registry_state(seeded)
    with pytest.raises(ValidationFailed), write_transaction(engine=seeded, actor="alice") as writer:
        writer.create("organization", org())
        writer.create("model", model(developer="acme"))
        writer.create("model", {"id": "acme/bad", "license": "NOT-SPDX"})
    assert registry_state(seeded) == before


def test_reference_data() -> None:
    assert len(country_codes()) == 249
    assert len(eea_countries()) == 30 and eea_countries() <= country_codes()
    assert {"DE", "NO", "IS", "LI"} <= eea_countries() and not {"CH", "GB", "US"} & eea_countries()
    assert len(spdx_ids()) > 600
    assert check_country("de") == "DE"
    assert check_license_id("apache-2.0") == "Apache-2.0"
    assert check_license_id("LicenseRef-llama3.1") == "LicenseRef-llama3.1"
    assert (check_country("UK"), check_country("Germany")) == ("GB", "DE")  # aliases
    for bad in ("", "DEU", "XX", "EU"):
        with pytest.raises(ValueError):
            check_country(bad)
    for bad in ("", "MIT OR Apache-2.0", "LicenseRef_x", "Llama-3"):
        with pytest.raises(ValueError):
            check_license_id(bad)


def test_yaml_booleans_for_commercial_use(seeded: Engine) -> None:
    """A bare ``yes`` in YAML 1.1 arrives as ``True``."""
    with write_transaction(engine=seeded, actor="alice") as writer:
        created = writer.create(
            "license", {"id": "Apache-2.0", "name": "Apache", "commercial_use": True}
        )
    assert created["commercial_use"] == "yes"


def test_ids_that_differ_only_in_case_are_one_name(engine: Engine) -> None:
    """Rules match ids ignoring case (`model: [qwen/*]`), so the registry keeps one spelling
    per name: a second spelling is refused, and a reference in the wrong case says which."""
    with write_transaction(engine=engine, actor="t") as w:
        w.create("organization", {"id": "DeepSeek", "name": "DeepSeek"})
    clash = pytest.raises(ConflictError, match="differs only in case from 'DeepSeek'")
    with clash, write_transaction(engine=engine, actor="t") as w:
        w.create("organization", {"id": "deepseek", "name": "DeepSeek again"})
    wrong_case = pytest.raises(ValidationFailed, match="did you mean 'DeepSeek'")
    with wrong_case, write_transaction(engine=engine, actor="t") as w:
        w.create("model", {"id": "deepseek/x", "developer": "deepseek"})
