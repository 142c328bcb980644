"""Decisions of the engine for the rules compliance officers write most."""

from __future__ import annotations

from dataclasses import replace

import pytest

from registry.snapshot import PolicySnap
from router.policy import (
    DEFAULT_POLICY_SOURCE,
    PolicyEngine,
    RequestContext,
    eligible_deployments,
)
from tests.policy.factories import (
    LLAMA_LICENSE,
    MYSTERY,
    NEW_MODEL,
    R1,
    R1_DISTILL,
    SMOLLM,
    UNSOURCED,
    allowed,
    decide,
    deployment,
    derived,
    engine_for,
    model,
    org,
    snapshot,
    tenant,
    with_,
    world,
)

FOUR_RULES = """
rules:
  - id: no-cn-developed-for-confidential
    deny: { developer_country_any_ancestor: [CN], classification: [confidential, restricted] }
  - id: eu-data-stays-in-eea
    deny: { tenant: [eu-*], location_eea: false }
  - id: osi-only-for-product-x
    allow_only: { tenant: [product-x], license_osi: true }
  - id: no-training-on-inputs
    deny: { trains_on_inputs: true }
"""


@pytest.fixture(scope="module")
def four() -> PolicyEngine:
    return engine_for(FOUR_RULES)


# ---------------------------------------------------------------------------- the four rules


def test_cn_developed_model_denied_for_confidential_only(four: PolicyEngine) -> None:
    denied = decide(four, "acme", "r1-dc", "confidential")
    assert not denied.allowed
    assert denied.rule_ids == ("no-cn-developed-for-confidential",)
    assert denied.reasons == (
        "denied by no-cn-developed-for-confidential: developer country of the model or an "
        "ancestor (deepseek: CN) with classification confidential",
    )
    assert allowed(four, "acme", "r1-dc", "internal")
    assert not allowed(four, "acme", "r1-dc", "restricted")


def test_eu_tenants_stay_in_the_eea(four: PolicyEngine) -> None:
    decision = decide(four, "eu-bank", "mistral-us")
    assert (decision.allowed, decision.rule_ids) == (False, ("eu-data-stays-in-eea",))
    assert "hosted in the EEA (no) with tenant eu-bank" in decision.reasons[0]
    assert allowed(four, "eu-bank", "smollm2-local")
    assert allowed(four, "acme", "mistral-us")  # not an eu-* tenant


def test_eea_rule_denies_unknown_location(four: PolicyEngine) -> None:
    snap = with_(world(), deployments=(deployment("somewhere", SMOLLM, location_eea=None),))
    engine = engine_for(FOUR_RULES, snap)
    assert decide(engine, "eu-bank", "somewhere").rule_ids == ("eu-data-stays-in-eea",)
    assert allowed(engine, "acme", "somewhere")


def test_allow_only_osi_for_product_x(four: PolicyEngine) -> None:
    decision = decide(four, "product-x", "llama-dc")
    assert (decision.allowed, decision.rule_ids) == (False, ("osi-only-for-product-x",))
    assert decision.reasons == (
        "denied by osi-only-for-product-x: requires every effective license OSI-approved: yes "
        f"(is no: {LLAMA_LICENSE}) for tenant product-x",
    )
    assert allowed(four, "product-x", "smollm2-local")  # Apache-2.0
    assert allowed(four, "acme", "llama-dc")  # the rule selects product-x only


def test_no_training_on_inputs(four: PolicyEngine) -> None:
    assert decide(four, "acme", "openai-api").rule_ids == ("no-training-on-inputs",)
    assert allowed(four, "acme", "mistral-us")


def test_no_training_on_inputs_fails_closed_when_unknown() -> None:
    snap = with_(world(), deployments=(deployment("silent-api", SMOLLM, trains_on_inputs=None),))
    decision = decide(engine_for(FOUR_RULES, snap), "acme", "silent-api")
    assert decision.rule_ids == ("no-training-on-inputs",)
    assert decision.reasons == (
        "denied by no-training-on-inputs: operator trains on inputs (unknown)",
    )


# ---------------------------------------------------------------------------- lineage


def test_finetune_of_cn_model_is_cn_derived_although_its_developer_is_us() -> None:
    engine = engine_for(
        """
        rules:
          - id: own-developer-not-cn
            deny: {developer_country: [CN]}
          - id: no-cn-lineage
            deny: {developer_country_any_ancestor: [CN]}
        """
    )
    decision = decide(engine, "acme", "r1-finetune-dc")
    assert decision.rule_ids == ("no-cn-lineage",)  # own developer (acme) is US
    assert "(acme: US, deepseek: CN)" in decision.reasons[0]
    assert engine.entities.deployments["r1-finetune-dc"].attrs["developer_country"] == "US"


def test_distill_carries_the_llama_license_and_fails_osi_only() -> None:
    engine = engine_for("rules: [{id: osi-only, allow_only: {license_osi: true}}]")
    facts = engine.entities.deployments["distill-dc"].attrs
    assert facts["declared_license"] == "MIT"
    assert facts["effective_licenses"] == (LLAMA_LICENSE, "MIT")
    assert facts["license_osi_approved"] is False
    decision = decide(engine, "acme", "distill-dc")
    assert (decision.allowed, decision.rule_ids) == (False, ("osi-only",))
    assert LLAMA_LICENSE in decision.reasons[0]
    assert allowed(engine, "acme", "r1-dc")  # plain MIT


def test_license_any_matches_an_inherited_license() -> None:
    engine = engine_for(
        f"rules: [{{id: no-llama-terms, deny: {{license_any: [{LLAMA_LICENSE}]}}}}]"
    )
    assert not allowed(engine, "acme", "distill-dc")
    assert not allowed(engine, "acme", "llama-dc")
    assert allowed(engine, "acme", "r1-dc")


def test_ancestor_missing_from_registry_fails_closed() -> None:
    orphan = model("acme/orphan-ft", "acme", "MIT", parents=derived("finetune_of", "gone/base"))
    snap = with_(world(), models=(orphan,), deployments=(deployment("orphan-dc", orphan.id),))
    engine = engine_for("rules: [{id: no-cn, deny: {developer_country_any_ancestor: [CN]}}]", snap)
    decision = decide(engine, "acme", "orphan-dc")
    assert decision.rule_ids == ("no-cn",)
    assert "gone/base: not in the registry" in decision.reasons[0]


# ---------------------------------------------------------------------------- unknown facts


def test_unknown_country_never_passes_a_permit_requiring_a_country() -> None:
    source = """
    baseline: false
    rules:
      - id: us-or-fr-only
        allow: {developer_country_all_ancestors: [US, FR]}
    """
    engine = engine_for(source)
    assert allowed(engine, "acme", "smollm2-local")  # huggingface: US
    assert not allowed(engine, "acme", "mystery-dc")  # mystery-lab: country unknown
    assert decide(engine, "acme", "mystery-dc").rule_ids == ()  # nothing permitted it
    assert not allowed(engine, "acme", "r1-dc")  # CN


def test_unknown_country_never_passes_allow_only_requiring_a_country() -> None:
    engine = engine_for("rules: [{id: us-only, allow_only: {developer_country: [US]}}]")
    assert decide(engine, "acme", "mystery-dc").rule_ids == ("us-only",)
    assert allowed(engine, "acme", "smollm2-local")


def test_unknown_country_triggers_a_country_deny() -> None:
    engine = engine_for("rules: [{id: no-cn, deny: {developer_country_any_ancestor: [CN]}}]")
    decision = decide(engine, "acme", "mystery-dc")
    assert decision.rule_ids == ("no-cn",)
    assert "mystery-lab: unknown" in decision.reasons[0]
    assert allowed(engine, "acme", "smollm2-local")


def test_a_value_without_a_sourced_claim_is_unknown() -> None:
    unsourced = org("huggingface", "US", claim=UNSOURCED)
    engine = engine_for(
        "rules: [{id: us-only, allow_only: {developer_country: [US]}}]",
        with_(world(), orgs=(unsourced,)),
    )
    assert "developer_country" not in engine.entities.deployments["smollm2-local"].attrs
    assert decide(engine, "acme", "smollm2-local").rule_ids == ("us-only",)


def test_min_confidence_verified_treats_reported_as_unknown() -> None:
    rule = "{id: verified-us, allow_only: {developer_country: [US], min_confidence: verified}}"
    engine = engine_for(f"rules: [{rule}]")
    decision = decide(engine, "acme", "smollm2-local")
    assert decision.rule_ids == ("verified-us",)
    assert "claim only reported" in decision.reasons[0]


# ---------------------------------------------------------------------------- review status


def test_under_review_model_is_not_eligible_by_default() -> None:
    engine = engine_for("rules: []")
    decision = decide(engine, "lab", "new-model-dc")
    assert decision.rule_ids == ("baseline-unreviewed",)
    assert "model acme/new-model under_review" in decision.reasons[0]


def test_allow_unreviewed_admits_only_the_named_tenant_and_model() -> None:
    engine = engine_for(
        f"rules: [{{id: lab-evaluates, allow_unreviewed: {{tenant: [lab], model: [{NEW_MODEL}]}}}}]"
    )
    decision = decide(engine, "lab", "new-model-dc")
    assert (decision.allowed, decision.rule_ids) == (True, ("lab-evaluates",))
    assert not allowed(engine, "acme", "new-model-dc")


def test_blocked_model_is_never_eligible_even_with_allow_unreviewed() -> None:
    blocked = replace(world().models[NEW_MODEL], review_status="blocked")
    source = f"rules: [{{id: lab, allow_unreviewed: {{tenant: [lab], model: [{NEW_MODEL}]}}}}]"
    engine = engine_for(source, with_(world(), models=(blocked,)))
    assert "baseline-blocked" in decide(engine, "lab", "new-model-dc").rule_ids


def test_disabled_or_unreviewed_deployment_is_not_eligible() -> None:
    snap = with_(
        world(),
        deployments=(
            deployment("off", SMOLLM, enabled=False),
            deployment("pending", SMOLLM, review_status="under_review"),
        ),
    )
    engine = engine_for("rules: []", snap)
    assert decide(engine, "acme", "off").rule_ids == ("baseline-disabled",)
    assert decide(engine, "acme", "pending").rule_ids == ("baseline-unreviewed",)


def test_raw_cedar_permit_cannot_bypass_review() -> None:
    source = 'cedar: |\n  @id("everything")\n  permit (principal, action, resource);\n'
    engine = engine_for(source)
    assert decide(engine, "lab", "new-model-dc").rule_ids == ("baseline-unreviewed",)


def test_model_missing_from_registry_is_not_eligible() -> None:
    snap = with_(world(), deployments=(deployment("ghost", "nobody/ghost"),))
    decision = decide(engine_for("rules: []", snap), "acme", "ghost")
    assert decision.rule_ids == ("baseline-unreviewed",)
    assert "model nobody/ghost not in the registry" in decision.reasons[0]


# ---------------------------------------------------------------------------- context


def test_tenant_default_classification_is_a_floor(four: PolicyEngine) -> None:
    # vault's default is confidential: asking for "public" cannot loosen it.
    assert not allowed(four, "vault", "r1-dc", "public")
    assert four.effective_context("vault", RequestContext("public")).classification == (
        "confidential"
    )


def test_declared_purpose_can_only_add_denials() -> None:
    engine = engine_for(
        """
        rules:
          - id: no-third-party-for-hr
            deny: {purpose: [hr], hosting: [third_party_api]}
          - id: research-tenant
            allow_only: {tenant: [lab], purpose: [marketing], license_osi: true}
        """
    )
    assert allowed(engine, "acme", "openai-api")  # no purpose declared
    assert not allowed(engine, "acme", "openai-api", purpose="hr")
    assert allowed(engine, "acme", "openai-api", purpose="sales")
    assert allowed(engine, "lab", "llama-dc")
    assert not allowed(engine, "lab", "llama-dc", purpose="marketing")


def test_unknown_classification_label_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown data classification"):
        RequestContext("top-secret")


# ---------------------------------------------------------------------------- engine mechanics


def test_default_policy_allows_the_bundled_local_model_for_any_tenant() -> None:
    bare = deployment(
        "local-smollm2", SMOLLM, claim=UNSOURCED, location_country=None, location_eea=None
    )
    snap = snapshot(
        orgs=(org("huggingface", "US"),),
        models=(model(SMOLLM, "huggingface", "Apache-2.0"),),
        deployments=(bare,),
        tenants=(tenant("default"), tenant("anyone", default_classification="restricted")),
    )
    engine = PolicyEngine.build(snap, None)
    assert engine.policy_version == 0
    assert "rules: []" in DEFAULT_POLICY_SOURCE
    for tenant_id in ("default", "anyone"):
        for classification in ("public", "restricted"):
            assert allowed(engine, tenant_id, "local-smollm2", classification)


def test_unknown_tenant_or_deployment_is_denied() -> None:
    engine = engine_for("rules: []")
    assert decide(engine, "nobody", "smollm2-local").reasons == ("denied: unknown tenant 'nobody'",)
    assert decide(engine, "acme", "nowhere").reasons == ("denied: unknown deployment 'nowhere'",)


def test_unknown_action_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown action"):
        decide(engine_for("rules: []"), "acme", "smollm2-local", action="train")


def test_eligible_deployments_keeps_candidate_order() -> None:
    engine = engine_for(FOUR_RULES)
    snap = world()
    candidates = [
        snap.deployments[d] for d in ("openai-api", "smollm2-local", "r1-dc", "openai-api")
    ]
    decisions = eligible_deployments(
        engine,
        tenant_id="acme",
        action="infer",
        context=RequestContext("confidential"),
        candidates=candidates,
    )
    assert [d.deployment_id for d in decisions] == [c.id for c in candidates]
    assert [d.allowed for d in decisions] == [False, True, False, False]


def test_decisions_are_cached_per_engine_and_versions_get_a_fresh_engine() -> None:
    policy = PolicySnap(version=1, name="p", format="yaml", source=FOUR_RULES)
    engine = PolicyEngine.build(world(version=1), policy)
    first = decide(engine, "acme", "smollm2-local")
    assert decide(engine, "acme", "smollm2-local") is first  # served from the cache
    assert allowed(engine, "acme", "smollm2-local")

    # Registry version 2 changes a fact; the new engine cannot see version-1 decisions.
    trains = deployment("smollm2-local", SMOLLM, trains_on_inputs=True)
    newer = PolicyEngine.build(with_(world(version=2), deployments=(trains,)), policy)
    assert newer.registry_version == 2
    assert not allowed(newer, "acme", "smollm2-local")

    # Policy version 2 removes the rule; the new engine decides afresh.
    relaxed = PolicyEngine.build(
        with_(world(version=2), deployments=(trains,)),
        PolicySnap(version=2, name="p", format="yaml", source="rules: []"),
    )
    assert relaxed.policy_version == 2
    assert allowed(relaxed, "acme", "smollm2-local")
    assert allowed(engine, "acme", "smollm2-local")  # the old engine still answers for v1


def test_cache_key_includes_context(four: PolicyEngine) -> None:
    assert allowed(four, "acme", "r1-dc", "public")
    assert not allowed(four, "acme", "r1-dc", "confidential")
    assert allowed(four, "acme", "r1-dc", "public")


def test_mystery_model_has_no_developer_country() -> None:
    attrs = engine_for("rules: []").entities.deployments["mystery-dc"].attrs
    assert "developer_country" not in attrs
    assert attrs["ancestor_countries_confidence"] == "unknown"
    assert attrs["model"] == MYSTERY


def test_r1_distill_lineage_facts() -> None:
    attrs = engine_for("rules: []").entities.deployments["distill-dc"].attrs
    assert attrs["ancestor_ids"] == ("meta-llama/Llama-3.1-8B",)
    assert attrs["ancestor_developer_countries"] == ("CN", "US")
    assert attrs["license_commercial_use"] == "conditional"
    assert attrs["lineage_complete"] is True
    assert attrs["model"] == R1_DISTILL
    assert engine_for("rules: []").entities.deployments["r1-dc"].attrs["model"] == R1
