"""Compiling policies: the YAML rule format, raw Cedar, and everything that must be rejected."""

from __future__ import annotations

import json

import cedarpy
import pytest

from router.policy import DEFAULT_POLICY_SOURCE, PolicyInvalid, compile_policy
from router.policy.conditions import CONDITIONS
from tests.policy.factories import allowed, decide, engine_for

RAW_CEDAR = """
@id("embeddings-stay-on-prem")
@reason("embeddings are computed on our own hardware")
forbid (principal, action == ProvenanceRouter::Action::"embed", resource)
unless { resource has hosting && resource.hosting == "on_prem" };
"""


def test_rule_ids_become_cedar_policy_ids() -> None:
    compiled = compile_policy(
        "yaml", "rules: [{id: no-cn, deny: {developer_country_any_ancestor: [CN]}}]"
    )
    assert compiled.rule_ids == (
        "baseline-approved",
        "baseline-disabled",
        "baseline-blocked",
        "baseline-unreviewed",
        "no-cn",
    )
    assert set(json.loads(compiled.policy_json)["staticPolicies"]) == set(compiled.rule_ids)
    assert '@id("no-cn")\nforbid (principal, action, resource)' in compiled.cedar_text
    assert "// deny: {developer_country_any_ancestor: [CN]}" in compiled.cedar_text


def test_default_policy_compiles_to_the_baseline() -> None:
    compiled = compile_policy("yaml", DEFAULT_POLICY_SOURCE)
    assert compiled.baseline
    assert [rule.kind for rule in compiled.rules] == ["builtin"] * 4


def test_every_condition_compiles_and_validates_in_every_rule_kind() -> None:
    samples = {
        "tenant": ["a-*"],
        "tenant_region": ["EU"],
        "tenant_attribute": ["unit=retail"],
        "action": ["infer"],
        "classification": ["restricted"],
        "purpose": ["hr"],
        "caller_region": ["EU"],
        "developer_country": ["CN"],
        "developer_country_any_ancestor": ["CN"],
        "developer_country_all_ancestors": ["US"],
        "publisher_country": ["US"],
        "jurisdiction_tag": ["eu"],
        "state_affiliated": True,
        "developer_listed_on": ["us-entity-list"],
        "developer_controlled_by": ["high-flyer"],
        "operator_listed_on": ["us-1260h"],
        "first_party": True,
        "training_hardware_vendor": ["huawei"],
        "training_hardware_vendor_any_ancestor": ["huawei"],
        "training_accelerator": ["ascend-910b"],
        "training_accelerator_any_ancestor": ["h800"],
        "training_data_country": ["CN"],
        "training_data_country_any_ancestor": ["CN"],
        "restricted_topic": ["tiananmen-1989"],
        "restricted_topic_on_weights": ["taiwan"],
        "license": ["MIT"],
        "license_any": ["MIT"],
        "license_osi": True,
        "open_weights": True,
        "commercial_use": ["yes"],
        "location_country": ["DE"],
        "location_eea": True,
        "operator_country": ["US"],
        "hosting": ["on_prem"],
        "hardware_vendor": ["nvidia"],
        "accelerator": ["H100"],
        "trains_on_inputs": False,
        "zero_data_retention": True,
        "retention_days_max": 30,
        "model": ["meta-llama/*"],
        "model_family": ["llama-3.1"],
        "deployment": ["d-*"],
        "review_status": ["approved"],
        "deployment_review_status": ["approved"],
        "min_confidence": "verified",
    }
    assert set(samples) == set(CONDITIONS)
    for key, value in samples.items():
        for kind in ("deny", "allow", "allow_only"):
            source = json.dumps({"rules": [{"id": "r", kind: _body(kind, key, value)}]})
            assert compile_policy("yaml", source).rule_ids[-1] == "r", (key, kind)


def _body(kind: str, key: str, value: object) -> dict[str, object]:
    """A valid rule body using ``key`` (allow_only needs a requirement besides selectors)."""
    if key == "classification" and kind == "allow":
        return {key: ["public"]}  # permits must list levels downward
    if kind == "allow_only" and CONDITIONS[key].selector:
        return {key: value, "license_osi": True}
    return {key: value}


def test_unknown_condition_is_rejected_naming_rule_and_key() -> None:
    with pytest.raises(PolicyInvalid) as raised:
        compile_policy("yaml", "rules: [{id: eea, deny: {tenant: [eu-*], location_eaa: false}}]")
    message = str(raised.value)
    assert "rule 'eea'" in message
    assert "unknown condition 'location_eaa'" in message
    assert "did you mean 'location_eea'" in message


def test_unknown_rule_key_is_rejected_naming_the_rule() -> None:
    with pytest.raises(PolicyInvalid, match="rule 'x': unknown key 'forbid'"):
        compile_policy("yaml", "rules: [{id: x, forbid: {hosting: [on_prem]}}]")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("rules: [{id: x, deny: {developer_country: [UK2]}}]", "not an ISO 3166-1"),
        ("rules: [{id: x, deny: {developer_country: [NO]}}]", "YAML reads NO as false"),
        ("rules: [{id: x, deny: {location_eea: maybe}}]", "expected true or false"),
        ("rules: [{id: x, deny: {hosting: [moon]}}]", "one of on_prem"),
        ("rules: [{id: x, deny: {retention_days_max: -1}}]", "days >= 0"),
        ("rules: [{id: x, deny: {min_confidence: sure}}]", "one of reported, verified"),
        ("rules: [{id: x, deny: {}}]", "non-empty mapping"),
        ("rules: [{id: x}]", "exactly one of"),
        (
            "rules: [{id: x, deny: {hosting: [on_prem]}, allow: {hosting: [on_prem]}}]",
            "exactly one",
        ),
        ("rules: [{deny: {hosting: [on_prem]}}]", "id must be"),
        ("rules: [{id: baseline-mine, deny: {hosting: [on_prem]}}]", "reserved"),
        (
            "rules: [{id: a, deny: {hosting: [on_prem]}}, {id: a, deny: {hosting: [on_prem]}}]",
            "more than once",
        ),
        ("rules: [{id: x, allow_only: {tenant: [a]}}]", "at least one requirement"),
        ("rules: [{id: x, allow_unreviewed: {tenant: [a]}}]", "models or deployments"),
        (
            "rules: [{id: x, allow_unreviewed: {tenant: [a], model: [m], hosting: [on_prem]}}]",
            "not 'hosting'",
        ),
        (
            "rules: [{id: x, allow_unreviewed: {tenant: a, model: m, min_confidence: verified}}]",
            "not 'min_confidence'",
        ),
        ("rules: [{id: x, deny: {classification: [public]}}]", "every level above"),
        ("rules: [{id: x, allow: {classification: [restricted]}}]", "every level below"),
        ("ruls: []", "unknown top-level key 'ruls'"),
        ("baseline: perhaps", "baseline: expected true or false"),
        ("rules: {id: x}", "expected a list"),
        ("- just\n- a list", "must be a YAML mapping"),
        ("rules: [", "not valid YAML"),
    ],
)
def test_bad_yaml_policies_are_rejected(source: str, message: str) -> None:
    with pytest.raises(PolicyInvalid, match=message):
        compile_policy("yaml", source)


def test_raw_cedar_block_keeps_its_ids_and_reasons() -> None:
    engine = engine_for("cedar: |\n" + "".join(f"  {line}\n" for line in RAW_CEDAR.splitlines()))
    decision = decide(engine, "acme", "mistral-us", action="embed")
    assert decision.rule_ids == ("embeddings-stay-on-prem",)
    assert decision.reasons == (
        "denied by embeddings-stay-on-prem: embeddings are computed on our own hardware",
    )
    assert allowed(engine, "acme", "mistral-us")  # infer is not affected
    assert allowed(engine, "acme", "smollm2-local", action="embed")


def test_cedar_format_policy() -> None:
    compiled = compile_policy("cedar", RAW_CEDAR)
    assert compiled.rule_ids[-1] == "embeddings-stay-on-prem"
    assert compiled.rules[-1].description == "embeddings are computed on our own hardware"
    assert compiled.baseline


def test_a_typo_in_an_attribute_is_rejected_with_did_you_mean() -> None:
    bad = '@id("typo")\nforbid (principal, action, resource) when { resource.hostng == "x" };'
    with pytest.raises(PolicyInvalid) as raised:
        compile_policy("cedar", bad)
    assert str(raised.value).startswith(
        "rule 'typo': `resource` has no attribute 'hostng' (did you mean 'hosting'?)"
    )


def test_cedar_reading_an_optional_attribute_without_has_is_rejected() -> None:
    bad = '@id("unsafe")\nforbid (principal, action, resource) when { resource.hosting == "x" };'
    with pytest.raises(PolicyInvalid, match="unable to guarantee safety of access to optional"):
        compile_policy("cedar", bad)


def test_cedar_syntax_error_is_rejected() -> None:
    with pytest.raises(PolicyInvalid, match="Cedar does not parse") as raised:
        compile_policy("cedar", '@id("x") forbid (principal, action, resource) when {')
    assert raised.value.errors and "unexpected end of input" in raised.value.errors[0]


def test_raw_cedar_needs_an_id() -> None:
    with pytest.raises(PolicyInvalid, match=r'no @id\("..."\) annotation'):
        compile_policy("cedar", "forbid (principal, action, resource);")


def test_raw_cedar_ids_must_not_clash_with_rules() -> None:
    source = """
    rules: [{id: a, deny: {hosting: [on_prem]}}]
    cedar: |
      @id("a") forbid (principal, action, resource);
    """
    with pytest.raises(PolicyInvalid, match="more than once"):
        compile_policy("yaml", source)


def test_raw_cedar_permit_must_not_read_context() -> None:
    loosening = (
        '@id("vip")\npermit (principal, action, resource)\n'
        'when { context has purpose && context.purpose == "vip" };'
    )
    with pytest.raises(PolicyInvalid, match="must not read `context`"):
        compile_policy("cedar", loosening)
    tightening = loosening.replace("permit", "forbid")
    assert compile_policy("cedar", tightening).rule_ids[-1] == "vip"


def test_cedar_templates_are_rejected() -> None:
    with pytest.raises(PolicyInvalid, match="templates"):
        compile_policy("cedar", '@id("t") permit (principal == ?principal, action, resource);')


def test_nothing_is_half_loaded() -> None:
    # One good rule, one bad: no CompiledPolicy comes out at all.
    source = """
    rules:
      - id: good
        deny: {hosting: [third_party_api]}
    cedar: |
      @id("bad")
      forbid (principal, action, resource) when { resource.nope };
    """
    with pytest.raises(PolicyInvalid, match="rule 'bad'"):
        compile_policy("yaml", source)


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(PolicyInvalid, match="unknown policy format"):
        compile_policy("rego", "package x")


def test_compiled_policy_set_loads_in_cedar() -> None:
    compiled = compile_policy("yaml", "rules: [{id: a, deny: {hosting: [third_party_api]}}]")
    reloaded = cedarpy.PolicySet.from_json_str(compiled.policy_json)
    assert len(reloaded) == len(compiled.rules)


def test_allowlist_mode_permits_only_allow_rules() -> None:
    engine = engine_for(
        """
        baseline: false
        rules:
          - id: on-prem-only
            allow: {hosting: [on_prem], license_osi: true}
        """
    )
    assert decide(engine, "acme", "smollm2-local").rule_ids == ("on-prem-only",)
    assert decide(engine, "acme", "mistral-us").rule_ids == ()  # default deny
    assert decide(engine, "acme", "mistral-us").reasons == (
        "denied by default: no rule permits this deployment",
    )
    assert not allowed(engine, "acme", "llama-dc")  # on prem, but not OSI


def test_allow_rule_context_conditions_narrow_only() -> None:
    engine = engine_for(
        """
        baseline: false
        rules:
          - id: low-sensitivity-anywhere
            allow: {classification: [public, internal], purpose: [support]}
        """
    )
    assert allowed(engine, "acme", "mistral-us")  # nothing declared
    assert allowed(engine, "acme", "mistral-us", purpose="support")
    assert not allowed(engine, "acme", "mistral-us", purpose="sales")
    assert not allowed(engine, "acme", "mistral-us", "confidential")
