"""The schema, and how registry facts become Cedar attributes (unknown stays unknown)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from registry.snapshot import ListingSnap
from router.policy import CEDAR_SCHEMA
from router.policy.conditions import CONDITIONS
from router.policy.entities import build_registry_entities
from router.policy.facts import all_true, any_true, most_restrictive_commercial_use
from router.policy.schema import (
    CONTEXT_ATTRIBUTES,
    DEPLOYMENT_ATTRIBUTES,
    TENANT_ATTRIBUTES,
    parsed_schema,
)
from tests.policy.factories import (
    LLAMA,
    R1_DISTILL,
    UNSOURCED,
    allowed,
    deployment,
    engine_for,
    license_,
    model,
    org,
    with_,
    world,
)

DOCS = Path(__file__).parents[2] / "docs" / "policies.md"


def test_schema_parses_and_lists_every_attribute_once() -> None:
    parsed_schema()
    for attributes in (TENANT_ATTRIBUTES, DEPLOYMENT_ATTRIBUTES, CONTEXT_ATTRIBUTES):
        names = [a.name for a in attributes]
        assert len(names) == len(set(names))
        for attribute in attributes:
            optional = "?" if attribute.optional else ""
            assert f"{attribute.name}{optional}: {attribute.cedar_type}," in CEDAR_SCHEMA


def test_docs_describe_every_attribute_and_condition() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    for attribute in (*TENANT_ATTRIBUTES, *DEPLOYMENT_ATTRIBUTES, *CONTEXT_ATTRIBUTES):
        assert f"`{attribute.name}`" in docs, attribute.name
    for key in CONDITIONS:
        assert re.search(rf"^\| `{key}`", docs, re.MULTILINE), key


def test_every_deployment_has_every_required_attribute_and_nothing_else() -> None:
    entities = build_registry_entities(world())
    required = {a.name for a in DEPLOYMENT_ATTRIBUTES if not a.optional}
    declared = {a.name for a in DEPLOYMENT_ATTRIBUTES}
    for facts in entities.deployments.values():
        assert required <= facts.attrs.keys() <= declared, facts.deployment_id


def test_unknown_facts_are_absent_not_null() -> None:
    silent = deployment(
        "silent",
        "nobody/none",
        hosting=None,
        location_country=None,
        location_eea=None,
        location_region=None,
        claim=UNSOURCED,
    )
    attrs = (
        build_registry_entities(with_(world(), deployments=(silent,))).deployments["silent"].attrs
    )
    for name in (
        "hosting",
        "location_eea",
        "trains_on_inputs",
        "developer_country",
        "license_osi_approved",
    ):
        assert name not in attrs
    assert attrs["location_confidence"] == "unknown"
    assert attrs["data_handling_confidence"] == "unknown"  # values present, but no claim
    assert attrs["min_confidence"] == "unknown"


def test_confidence_is_the_weakest_claim() -> None:
    snap = world()
    attrs = build_registry_entities(snap).deployments["distill-dc"].attrs
    assert attrs["license_confidence"] == "reported"
    unsourced_llama = replace(snap.models[LLAMA], claims={"license": UNSOURCED})
    attrs = (
        build_registry_entities(with_(snap, models=(unsourced_llama,)))
        .deployments["distill-dc"]
        .attrs
    )
    assert attrs["license_confidence"] == "unknown"
    assert "license_osi_approved" not in attrs  # MIT is OSI, the Llama part is now unknown
    assert attrs["license_osi_any"] is True  # MIT is known OSI


def test_three_valued_logic() -> None:
    assert all_true([True, None, False]) is False
    assert all_true([True, None]) is None
    assert all_true([True, True]) is True
    assert any_true([False, None, True]) is True
    assert any_true([False, None]) is None
    assert any_true([False]) is False
    assert most_restrictive_commercial_use(["yes", None, "no"]) == "no"
    assert most_restrictive_commercial_use(["yes", None]) is None
    assert most_restrictive_commercial_use(["yes", "conditional"]) == "conditional"
    assert most_restrictive_commercial_use(["yes"]) == "yes"


def test_governance_facts_follow_the_lineage() -> None:
    snap = with_(
        world(),
        orgs=(
            org(
                "zhipu",
                "CN",
                listings=(ListingSnap("us-entity-list"),),
                state_affiliated=False,
            ),
        ),
        models=(
            model("zai-org/GLM-4.5", "zhipu", "MIT"),
            model(
                "acme/glm-ft",
                "acme",
                "MIT",
                parents=(
                    replace(
                        world().models[R1_DISTILL].parents[0],
                        relation="finetune_of",
                        parent_id="zai-org/GLM-4.5",
                    ),
                ),
            ),
        ),
        deployments=(deployment("glm-ft-dc", "acme/glm-ft"),),
    )
    engine = engine_for(
        "rules: [{id: no-entity-list, deny: {developer_listed_on: [Entity List]}}]", snap
    )
    attrs = engine.entities.deployments["glm-ft-dc"].attrs
    assert attrs["developer_listings"] == ("us-entity-list",)
    assert "state_affiliated" not in attrs  # acme's affiliation is unknown, zhipu's is false
    assert not allowed(engine, "acme", "glm-ft-dc")
    assert allowed(engine, "acme", "smollm2-local")


def test_inherited_license_unknown_makes_terms_unknown() -> None:
    snap = with_(
        world(),
        licenses=(license_("LicenseRef-Llama-3.1-Community", osi=None, derivatives_inherit=True),),
    )
    attrs = build_registry_entities(snap).deployments["distill-dc"].attrs
    assert "license_osi_approved" not in attrs
    assert not allowed(engine_for("presets: [osi-licenses-only]", snap), "acme", "distill-dc")


@pytest.mark.parametrize("pattern", ['x" || true || "', 'x\\" || true || \\"', "*\\"])
def test_values_cannot_inject_cedar(pattern: str) -> None:
    engine = engine_for(
        f"rules: [{{id: only-x, allow_only: {{tenant: ['{pattern}'], license_osi: true}}}}]"
    )
    assert allowed(engine, "acme", "llama-dc")  # the rule selects no real tenant
