"""Each shipped preset, used the way a policy uses it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from router.policy import PolicyInvalid, compile_policy, list_presets, preset_policy_source
from tests.policy.factories import (
    NEW_MODEL,
    SMOLLM,
    VERIFIED,
    allowed,
    decide,
    deployment,
    engine_for,
    license_,
    with_,
    world,
)


def test_every_preset_is_listed_documented_and_compiles() -> None:
    presets = {p.name: p for p in list_presets()}
    assert set(presets) == {
        "no-countries",
        "eea-hosting-only",
        "osi-licenses-only",
        "open-weights-only",
        "no-third-party-data-retention",
        "approved-models-only",
        "verified-facts-only",
    }
    docs = (Path(__file__).parents[2] / "docs" / "policies.md").read_text(encoding="utf-8")
    for name, preset in presets.items():
        assert preset.title and preset.description
        assert f"`{name}`" in docs
        compiled = compile_policy("yaml", preset_policy_source(name))
        assert [rule.id for rule in compiled.rules if rule.kind != "builtin"], name


def test_no_countries_preset_covers_the_lineage() -> None:
    engine = engine_for("presets: [no-countries]")
    assert decide(engine, "acme", "r1-finetune-dc").rule_ids == ("no-models-from-countries",)
    assert not allowed(engine, "acme", "distill-dc")
    assert not allowed(engine, "acme", "mystery-dc")  # unknown country fails closed
    assert allowed(engine, "acme", "llama-dc")


def test_no_countries_preset_takes_a_country_list() -> None:
    engine = engine_for("presets: [{use: no-countries, with: {countries: [FR, US]}}]")
    assert allowed(engine, "acme", "r1-dc")
    assert not allowed(engine, "acme", "mistral-us")  # Mistral AI: FR
    assert not allowed(engine, "acme", "llama-dc")  # Meta: US


def test_eea_hosting_only_preset_for_some_tenants() -> None:
    engine = engine_for("presets: [{use: eea-hosting-only, with: {tenants: [eu-*]}}]")
    assert decide(engine, "eu-bank", "mistral-us").rule_ids == ("eea-hosting-only",)
    assert allowed(engine, "eu-bank", "smollm2-local")
    assert allowed(engine, "acme", "mistral-us")


def test_osi_licenses_only_preset() -> None:
    engine = engine_for("presets: [osi-licenses-only]")
    assert not allowed(engine, "acme", "llama-dc")
    assert not allowed(engine, "acme", "distill-dc")  # inherits the Llama license
    assert allowed(engine, "acme", "r1-dc")


def test_open_weights_only_preset() -> None:
    closed = license_("Proprietary", osi=False, open_weights=False, commercial_use="no")
    snap = with_(world(), licenses=(closed,))
    snap = with_(snap, models=(replace(snap.models[SMOLLM], license_id="Proprietary"),))
    engine = engine_for("presets: [open-weights-only]", snap)
    assert decide(engine, "acme", "smollm2-local").rule_ids == ("open-weights-only",)
    assert allowed(engine, "acme", "llama-dc")  # Llama license: open weights, not OSI


def test_no_third_party_data_retention_preset() -> None:
    engine = engine_for("presets: [no-third-party-data-retention]")
    assert decide(engine, "acme", "openai-api").rule_ids == (
        "no-third-party-retention",
        "no-third-party-training",
    )
    assert allowed(engine, "acme", "mistral-us")  # cloud tenant, not a third-party API
    careful_api = deployment("careful-api", SMOLLM, hosting="third_party_api")
    unknown_api = deployment("unknown-api", SMOLLM, hosting=None, zero_data_retention=None)
    engine = engine_for(
        "presets: [no-third-party-data-retention]",
        with_(world(), deployments=(careful_api, unknown_api)),
    )
    assert allowed(engine, "acme", "careful-api")
    assert decide(engine, "acme", "unknown-api").rule_ids == ("no-third-party-retention",)


def test_approved_models_only_overrides_allow_unreviewed() -> None:
    source = f"""
    presets: [approved-models-only]
    rules:
      - id: lab-evaluates
        allow_unreviewed: {{tenant: [lab], model: [{NEW_MODEL}]}}
    """
    engine = engine_for(source)
    assert decide(engine, "lab", "new-model-dc").rule_ids == ("approved-models-only",)
    assert allowed(engine, "lab", "smollm2-local")
    without_preset = engine_for(source.replace("presets: [approved-models-only]", ""))
    assert allowed(without_preset, "lab", "new-model-dc")


def test_verified_facts_only_preset() -> None:
    engine = engine_for("presets: [verified-facts-only]")
    decision = decide(engine, "acme", "smollm2-local")
    assert decision.rule_ids == ("verified-facts-only",)
    assert (
        "weakest claim behind the deployment's facts: at least verified (is reported)"
        in (decision.reasons[0])
    )
    snap = world()
    verified = with_(
        snap,
        orgs=tuple(replace(snap.orgs[o], claim=VERIFIED) for o in ("huggingface", "acme")),
        licenses=(replace(snap.licenses["Apache-2.0"], claim=VERIFIED),),
        models=(replace(snap.models[SMOLLM], claim=VERIFIED),),
        deployments=(replace(snap.deployments["smollm2-local"], claim=VERIFIED),),
    )
    engine = engine_for("presets: [verified-facts-only]", verified)
    assert engine.entities.deployments["smollm2-local"].attrs["min_confidence"] == "verified"
    assert allowed(engine, "acme", "smollm2-local")
    assert not allowed(engine, "acme", "r1-dc")


def test_presets_and_rules_combine() -> None:
    engine = engine_for(
        """
        presets:
          - no-third-party-data-retention
          - {use: no-countries, with: {countries: [CN]}}
        rules:
          - id: eu-in-eea
            deny: {tenant: [eu-*], location_eea: false}
        """
    )
    assert not allowed(engine, "acme", "r1-dc")
    assert not allowed(engine, "acme", "openai-api")
    assert not allowed(engine, "eu-bank", "mistral-us")
    assert allowed(engine, "acme", "mistral-us")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("presets: [no-such-preset]", "unknown preset 'no-such-preset'"),
        ("presets: [{use: no-countries, with: {regions: [X]}}]", "unknown parameter 'regions'"),
        ("presets: [{use: no-countries, with: {countries: []}}]", "non-empty list"),
        ("presets: [{use: no-countries, with: {countries: [XX]}}]", "not an ISO 3166-1"),
        ("presets: [{use: no-countries, extra: 1}]", "unknown key 'extra'"),
        ("presets: no-countries", "expected a list"),
        ("presets: [no-countries, no-countries]", "more than once"),
    ],
)
def test_bad_preset_use_is_rejected(source: str, message: str) -> None:
    with pytest.raises(PolicyInvalid, match=message):
        compile_policy("yaml", source)


def test_preset_policy_source_is_a_policy() -> None:
    source = preset_policy_source("no-countries", countries=["RU"])
    assert yaml.safe_load(source) == {
        "presets": [{"use": "no-countries", "with": {"countries": ["RU"]}}],
        "rules": [],
    }
