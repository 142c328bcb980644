"""explain, what-if and the policy test runner: the compliance officer's tools."""

from __future__ import annotations

import json

import pytest

from registry.snapshot import PolicySnap
from router.policy import (
    PolicyError,
    PolicyTestFileInvalid,
    RequestContext,
    UnknownModelOrRoute,
    candidate_deployments,
    explain,
    run_policy_tests,
    what_if,
)
from tests.policy.factories import MISTRAL, decide, engine_for, tenant, with_, world

POLICY = """
rules:
  - id: no-cn-developed-for-confidential
    deny: {developer_country_any_ancestor: [CN], classification: [confidential, restricted]}
  - id: no-training-on-inputs
    deny: {trains_on_inputs: true}
"""


# ---------------------------------------------------------------------------- explain


def test_route_candidates_in_fallback_order() -> None:
    ids = [d.id for d in candidate_deployments(world(), "chat")]
    assert ids == ["r1-dc", "mistral-us", "openai-api", "smollm2-local"]
    assert [d.id for d in candidate_deployments(world(), MISTRAL)] == ["mistral-us", "openai-api"]


@pytest.mark.parametrize("name", ["gpt-17", "llama-dc"])
def test_unknown_name_is_an_error(name: str) -> None:
    """A deployment id is not a name a client may send: live routing answers 404 for it, so
    explain must not answer for it either."""
    with pytest.raises(UnknownModelOrRoute):
        candidate_deployments(world(), name)


def test_explain_agrees_with_decide_and_says_why() -> None:
    engine = engine_for(POLICY)
    explanation = explain(
        engine,
        world(),
        tenant_id="vault",  # default classification: confidential
        model_or_route="chat",
        action="infer",
        context=RequestContext("public"),
    )
    assert explanation.context.classification == "confidential"
    assert explanation.allowed_deployments == ("mistral-us", "smollm2-local")
    for candidate in explanation.candidates:
        direct = decide(engine, "vault", candidate.deployment_id, "confidential")
        assert (candidate.allowed, candidate.rule_ids, candidate.reasons) == (
            direct.allowed,
            direct.rule_ids,
            direct.reasons,
        )
    r1 = explanation.candidates[0]
    assert r1.provenance["ancestor_developer_countries"] == ["CN"]
    assert r1.reasons == (
        "denied by no-cn-developed-for-confidential: developer country of the model or an "
        "ancestor (deepseek: CN) with classification confidential",
    )
    assert json.loads(json.dumps(explanation.to_dict()))["allowed_deployments"] == [
        "mistral-us",
        "smollm2-local",
    ]


def test_explain_refuses_a_snapshot_of_another_version() -> None:
    with pytest.raises(ValueError, match="not the engine's registry version"):
        explain(
            engine_for(POLICY),
            world(version=2),
            tenant_id="acme",
            model_or_route="chat",
            action="infer",
            context=RequestContext("public"),
        )


# ---------------------------------------------------------------------------- what-if


def _recorded(
    deployments: dict[str, bool], chosen: str, classification: str = "internal"
) -> dict[str, object]:
    return {
        "request_id": f"req-{chosen}",
        "tenant_id": "acme",
        "requested_model": "chat",
        "action": "infer",
        "context": {"classification": classification, "purpose": None, "caller_region": None},
        "candidates": [
            {"deployment": d, "allowed": ok, "rule_ids": []} for d, ok in deployments.items()
        ],
        "chosen_deployment": chosen,
        "status": "ok",
    }


def test_what_if_reports_requests_whose_outcome_changes() -> None:
    recorded = [
        _recorded({"r1-dc": True, "mistral-us": True, "smollm2-local": True}, "r1-dc"),
        _recorded({"smollm2-local": True}, "smollm2-local"),
        _recorded({"openai-api": False, "mistral-us": True}, "mistral-us"),
    ]
    draft = PolicySnap(version=9, name="draft", format="yaml", source="presets: [no-countries]")
    report = what_if(world(), draft, recorded)
    assert (report.examined, report.changed, report.policy_version) == (3, 2, 9)
    first, third = report.changes
    assert first.index == 0 and first.request_id == "req-r1-dc"
    assert (first.first_before, first.first_after) == ("r1-dc", "mistral-us")
    assert first.first_choice_changed and first.chosen_now_denied
    assert [d.deployment_id for d in first.newly_denied] == ["r1-dc"]
    assert first.newly_denied[0].rule_ids == ("no-models-from-countries",)
    assert third.index == 2
    assert [d.deployment_id for d in third.newly_allowed] == ["openai-api"]
    assert (third.first_before, third.first_after) == ("mistral-us", "openai-api")


def test_what_if_with_unchanged_outcomes_reports_nothing() -> None:
    recorded = [_recorded({"smollm2-local": True, "openai-api": True}, "smollm2-local")]
    draft = PolicySnap(version=2, name="draft", format="yaml", source="rules: []")
    assert what_if(world(), draft, recorded).changes == ()


def test_what_if_rejects_malformed_records() -> None:
    draft = PolicySnap(version=2, name="draft", format="yaml", source="rules: []")
    with pytest.raises(PolicyError, match="recorded decision #0"):
        what_if(world(), draft, [{"tenant_id": "acme", "candidates": [{"allowed": True}]}])
    with pytest.raises(PolicyError, match="recorded decision #0"):
        what_if(world(), draft, [{"candidates": [{"deployment": "smollm2-local"}]}])


def test_what_if_skips_requests_refused_before_routing() -> None:
    draft = PolicySnap(version=2, name="draft", format="yaml", source="rules: []")
    refused = [{"tenant_id": None, "candidates": []}, {"tenant_id": "acme", "candidates": []}]
    report = what_if(world(), draft, refused)
    assert (report.examined, report.changes) == (0, ())


# ---------------------------------------------------------------------------- policy test


TESTS = """
tests:
  - name: CN-derived fine-tune denied for confidential data
    given: {tenant: acme, deployment: r1-finetune-dc, classification: confidential}
    expect: deny
    rule: no-cn-developed-for-confidential
  - name: local model always fine
    given: {tenant: vault, deployment: smollm2-local}
    expect: allow
  - name: wrong on purpose
    given: {tenant: acme, deployment: openai-api}
    expect: allow
  - name: right verdict, wrong rule
    given: {tenant: acme, deployment: openai-api}
    expect: deny
    rules: [no-cn-developed-for-confidential]
"""


def test_policy_test_runner_passes_and_fails_cases() -> None:
    report = run_policy_tests(lambda: engine_for(POLICY), TESTS)
    assert [r.passed for r in report.results] == [True, True, False, False]
    assert (report.passed, report.failed, report.ok) == (2, 2, False)
    assert report.results[2].message == (
        "expected allow, got deny; decided by no-training-on-inputs"
    )
    assert report.results[3].message == (
        "expected rule no-cn-developed-for-confidential to decide; decided by no-training-on-inputs"
    )
    passing = TESTS.split("  - name: wrong on purpose")[0]
    assert run_policy_tests(lambda: engine_for(POLICY), passing).ok


@pytest.mark.parametrize(
    ("tests_yaml", "message"),
    [
        ("tests: []", "non-empty `tests:` list"),
        ("tests: [{given: {tenant: a}, expect: allow}]", "needs tenant and deployment"),
        ("tests: [{given: {tenant: a, deployment: d}, expect: maybe}]", "allow or deny"),
        ("tests: [{given: {tenant: a, deployment: d, model: m}, expect: deny}]", "'model'"),
        ("tests: [{given: {tenant: a, deployment: d}, expect: deny, when: x}]", "'when'"),
        ("tests: [", "not valid YAML"),
    ],
)
def test_malformed_test_file_is_rejected(tests_yaml: str, message: str) -> None:
    with pytest.raises(PolicyTestFileInvalid, match=message):
        run_policy_tests(lambda: engine_for(POLICY), tests_yaml)


def test_a_case_with_a_bad_classification_fails_instead_of_crashing() -> None:
    case = "{given: {tenant: acme, deployment: r1-dc, classification: x}, expect: deny}"
    tests_yaml = f"tests: [{case}]"
    (result,) = run_policy_tests(lambda: engine_for(POLICY), tests_yaml).results
    assert (result.passed, result.actual) == (False, "error")
    assert "unknown data classification" in result.message


def test_policy_test_cases_use_the_tenants_region_as_live_routing_does() -> None:
    """Live routing sets caller_region from the tenant's registered region; a policy test that
    does not name one must see the same, or it could pass while live traffic is denied."""
    snap = with_(world(), tenants=(tenant("eu-shop", region="EU"),))
    policy = "rules:\n  - id: no-eu-callers\n    deny: { caller_region: [EU] }\n"
    tests_yaml = """
tests:
  - name: region comes from the tenant
    given: {tenant: eu-shop, deployment: smollm2-local}
    expect: deny
    rule: no-eu-callers
  - name: an explicit region still wins
    given: {tenant: eu-shop, deployment: smollm2-local, caller_region: US}
    expect: allow
"""
    report = run_policy_tests(lambda: engine_for(policy, snap), tests_yaml)
    assert report.ok, [r.message for r in report.results]


def test_what_if_skips_records_whose_purpose_no_request_can_declare_today() -> None:
    """Audit rows written before purposes had a vocabulary may hold free text; they cannot be
    replayed faithfully (such a request is now refused), so they are counted, not fatal."""
    record = {
        "request_id": "r-old",
        "tenant_id": "acme",
        "action": "infer",
        "context": {"classification": "internal", "purpose": "Free text purpose"},
        "candidates": [{"deployment": "llama-dc", "allowed": True, "rule_ids": []}],
    }
    report = what_if(world(), PolicySnap(2, "draft", "yaml", "rules: []"), [record])
    assert (report.examined, report.skipped, report.changed) == (0, 1, 0)
