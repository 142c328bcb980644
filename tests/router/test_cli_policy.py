"""``provenance-router policy ...`` through ``typer.testing.CliRunner`` on the real command line
(``router.cli.app``): over a registry file (``--registry``: a throwaway in-memory registry_db) and
over a registry database on SQLite and PostgreSQL (``--database-url``), plus the example files
and the documented rollout, which must work as written.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from registry.db import make_engine
from registry.service import insert_decisions
from router.cli import app
from router.policy import list_presets

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples"
POLICY = EXAMPLES / "policy.yaml"
TESTS = EXAMPLES / "policy-tests.yaml"
REGISTRY = EXAMPLES / "policy-registry.yaml"
EXAMPLE_RULES = (
    "no-cn-developed-for-confidential",
    "eu-data-stays-in-eea",
    "osi-only-for-product-x",
    "no-training-on-inputs",
)


def run(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, [str(arg) for arg in args], env=env)


def text(result: Result) -> str:
    """The output with Rich's line wrapping undone (the console is 80 columns wide here)."""
    return " ".join(result.output.split())


def succeeded(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return text(result)


def failed(result: Result) -> str:
    """Exit status 1 from the command itself (a clean message), not from an exception."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    return text(result)


def example_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = yaml.safe_load(TESTS.read_text(encoding="utf-8"))["tests"]
    return cases


def expected_rules(case: dict[str, Any]) -> list[str]:
    return list(case.get("rules") or ([case["rule"]] if "rule" in case else []))


@pytest.fixture
def registry_db(db_url: str) -> str:
    """A registry database holding examples/registry.yaml and examples/policy-registry.yaml,
    applied with ``provenance-router apply`` (the catalog goes under the first file)."""
    for file in (EXAMPLES / "registry.yaml", REGISTRY):
        succeeded(run("apply", "-f", file, "--database-url", db_url, "--catalog"))
    return db_url


# --- the example files --------------------------------------------------------------------------


def test_example_policy_has_the_four_rules() -> None:
    rules = yaml.safe_load(POLICY.read_text(encoding="utf-8"))["rules"]

    assert [rule["id"] for rule in rules] == list(EXAMPLE_RULES)
    kinds = [{k: v for k, v in rule.items() if k not in ("id", "description")} for rule in rules]
    assert kinds == [
        {
            "deny": {
                "developer_country_any_ancestor": ["CN"],
                "classification": ["confidential", "restricted"],
            }
        },
        {"deny": {"tenant": ["eu-*"], "location_eea": False}},
        {"allow_only": {"tenant": ["product-x"], "license_osi": True}},
        {"deny": {"trains_on_inputs": True}},
    ]


def test_example_tests_exercise_every_rule_and_the_lineage() -> None:
    cases = example_cases()

    for rule in EXAMPLE_RULES:
        denials = [c for c in cases if c["expect"] == "deny" and rule in expected_rules(c)]
        assert denials, f"no case shows {rule} denying"
    lineage = [
        c
        for c in cases
        if c["given"]["deployment"] == "r1-support-ft-us"
        and c["given"].get("classification") == "confidential"
    ]
    assert [expected_rules(c) for c in lineage] == [["no-cn-developed-for-confidential"]]
    assert {c["expect"] for c in cases} == {"allow", "deny"}


def test_example_tests_pass_with_the_cli() -> None:
    result = run("policy", "test", TESTS, "--policy", POLICY, "--registry", REGISTRY)

    output = succeeded(result)
    assert output.endswith(f"{len(example_cases())} passed, 0 failed")
    assert output.count("PASS ") == len(example_cases()) and "FAIL" not in output


@pytest.mark.parametrize("rule", EXAMPLE_RULES)
def test_each_example_rule_is_needed_by_the_example_tests(tmp_path: Path, rule: str) -> None:
    """Drop one rule: exactly the cases expecting it to deny now fail."""
    document = yaml.safe_load(POLICY.read_text(encoding="utf-8"))
    document["rules"] = [r for r in document["rules"] if r["id"] != rule]
    weaker = tmp_path / "weaker.yaml"
    weaker.write_text(yaml.safe_dump(document), encoding="utf-8")

    output = failed(run("policy", "test", TESTS, "--policy", weaker, "--registry", REGISTRY))

    expected = [
        c["name"] for c in example_cases() if c["expect"] == "deny" and rule in expected_rules(c)
    ]
    failures = re.findall(r"FAIL (.+?): expected", output)
    assert failures == expected
    assert output.endswith(f"{len(example_cases()) - len(expected)} passed, {len(expected)} failed")


def test_a_wrong_expectation_fails_the_run(tmp_path: Path) -> None:
    tests = tmp_path / "tests.yaml"
    tests.write_text(
        "tests:\n"
        "  - name: '[lineage] fine-tune of a CN model, confidential'\n"
        "    given: {tenant: acme, deployment: r1-support-ft-us, classification: confidential}\n"
        "    expect: allow\n"
        "  - name: local check\n"
        "    given: {tenant: acme, deployment: mistral-7b-eu}\n"
        "    expect: allow\n",
        encoding="utf-8",
    )

    output = failed(run("policy", "test", tests, "--policy", POLICY, "--registry", REGISTRY))

    assert (
        "FAIL [lineage] fine-tune of a CN model, confidential: expected allow, got deny; "
        "decided by no-cn-developed-for-confidential" in output
    )
    assert "PASS local check" in output
    assert output.endswith("1 passed, 1 failed")


def test_a_malformed_test_file_is_an_error(tmp_path: Path) -> None:
    tests = tmp_path / "tests.yaml"
    tests.write_text("tests:\n  - given: {tenant: acme}\n    expect: deny\n", encoding="utf-8")

    output = failed(run("policy", "test", tests, "--policy", POLICY, "--registry", REGISTRY))

    assert "error: test #1 (unnamed): `given` needs tenant and deployment" in output


def test_a_broken_registry_file_is_a_clean_error(tmp_path: Path) -> None:
    broken = tmp_path / "registry.yaml"
    broken.write_text(
        "apiVersion: provenance-router/v1\n"
        "routes:\n  - name: chat-broken\n    candidates: [no-such-deployment]\n",
        encoding="utf-8",
    )

    output = failed(run("policy", "test", TESTS, "--policy", POLICY, "--registry", broken))

    assert f"error: {broken}: " in output
    assert "routes[chat-broken]" in output  # printed as text, not eaten as Rich markup
    assert "no-such-deployment" in output


# --- validate -----------------------------------------------------------------------------------


def test_validate_a_valid_policy() -> None:
    output = succeeded(run("policy", "validate", POLICY))

    assert output.startswith("valid: 8 rules: baseline-approved,")
    assert all(rule in output for rule in EXAMPLE_RULES)


@pytest.mark.parametrize(
    ("name", "source", "error"),
    [
        (
            "typo.yaml",
            "rules:\n  - id: eea\n    deny: {tenant: [eu-*], location_eaa: false}\n",
            "error: rule 'eea': unknown condition 'location_eaa' (did you mean 'location_eea'?)",
        ),
        (
            "typo.cedar",
            '@id("typo")\nforbid (principal, action, resource)\n'
            'when { resource.hostng == "third_party_api" };\n',
            "rule 'typo': `resource` has no attribute 'hostng' (did you mean 'hosting'?)",
        ),
    ],
)
def test_validate_an_invalid_policy(tmp_path: Path, name: str, source: str, error: str) -> None:
    policy = tmp_path / name
    policy.write_text(source, encoding="utf-8")

    output = failed(run("policy", "validate", policy))

    assert error in output and "valid:" not in output


# --- explain ------------------------------------------------------------------------------------


def explain_json(*args: str | Path) -> dict[str, Any]:
    result = run("policy", "explain", "--json", *args)
    assert result.exit_code == 0, result.output
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def test_explain_json_names_the_deciding_rules() -> None:
    body = explain_json(
        "--tenant", "acme", "--model", "chat", "--classification", "confidential",
        "--policy", POLICY, "--registry", REGISTRY,
    )  # fmt: skip

    assert body["context"]["classification"] == "confidential"
    decided = {c["deployment_id"]: (c["allowed"], c["rule_ids"]) for c in body["candidates"]}
    assert decided == {
        "r1-support-ft-us": (False, ["no-cn-developed-for-confidential"]),
        "mistral-7b-eu": (True, ["baseline-approved"]),
        "llama-8b-us": (True, ["baseline-approved"]),
        "r1-distill-llama-eu": (False, ["no-cn-developed-for-confidential"]),
        "mistral-cheap-api": (False, ["no-training-on-inputs"]),
    }
    assert body["allowed_deployments"] == ["mistral-7b-eu", "llama-8b-us"]
    (reason,) = body["candidates"][0]["reasons"]
    assert reason.startswith("denied by no-cn-developed-for-confidential:")
    assert "(acme-ml: US, deepseek: CN)" in reason
    assert body["candidates"][0]["provenance"]["ancestor_developer_countries"] == ["CN", "US"]


def test_explain_uses_the_tenant_region(tmp_path: Path) -> None:
    """Live routing passes the tenant's region as caller_region; the CLI decides the same way."""
    policy = tmp_path / "region.yaml"
    policy.write_text(
        "rules:\n  - id: eu-callers-no-us\n"
        "    deny: {caller_region: [EU], location_country: [US]}\n",
        encoding="utf-8",
    )

    body = explain_json(
        "--tenant", "eu-bank", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--policy", policy,
        "--registry", REGISTRY,
    )  # fmt: skip

    assert body["context"]["caller_region"] == "eu"  # regions are lower-case slugs
    assert body["candidates"][0]["rule_ids"] == ["eu-callers-no-us"]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("--model", "nobody/nothing"), "no route or model is called 'nobody/nothing'"),
        (("--model", "chat", "--classification", "secret"), "unknown data classification"),
    ],
)
def test_explain_errors(args: tuple[str, ...], error: str) -> None:
    result = run("policy", "explain", "--tenant", "acme", *args, "--registry", REGISTRY)

    assert error in failed(result)


# --- a registry database: save, list, activate, test, explain, what-if ----------------------------


def test_save_activate_and_list(registry_db: str) -> None:
    assert succeeded(run("policy", "list", "--database-url", registry_db)) == ""

    saved = succeeded(run("policy", "save", POLICY, "--activate", "--database-url", registry_db))
    assert saved == "saved policy version 1 (active)"
    assert (
        succeeded(run("policy", "list", "--database-url", registry_db)) == "v1 policy yaml (active)"
    )

    other = succeeded(
        run("policy", "save", POLICY, "--name", "[/draft] bank-v2", "--database-url", registry_db)
    )
    assert other == "saved policy version 2"
    listed = succeeded(run("policy", "list", "--database-url", registry_db))
    assert listed == "v2 [/draft] bank-v2 yaml v1 policy yaml (active)"  # a name, not markup

    activated = succeeded(run("policy", "activate", "2", "--database-url", registry_db))
    assert activated == "policy version 2 is active"
    listed = succeeded(run("policy", "list", "--database-url", registry_db))
    assert listed == "v2 [/draft] bank-v2 yaml (active) v1 policy yaml"


def test_save_refuses_an_invalid_policy(registry_db: str, tmp_path: Path) -> None:
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("rules:\n  - id: x\n    deny: {no_such_fact: 1}\n", encoding="utf-8")

    output = failed(run("policy", "save", invalid, "--activate", "--database-url", registry_db))

    assert "unknown condition 'no_such_fact'" in output
    assert succeeded(run("policy", "list", "--database-url", registry_db)) == ""


def test_test_and_explain_use_the_active_policy(registry_db: str, tmp_path: Path) -> None:
    baseline_only = tmp_path / "baseline.yaml"
    baseline_only.write_text("rules: []\n", encoding="utf-8")
    succeeded(run("policy", "save", baseline_only, "--activate", "--database-url", registry_db))
    with_active = run("policy", "test", TESTS, "--database-url", registry_db)
    failed(with_active)  # the active policy has none of the example rules

    succeeded(run("policy", "save", POLICY, "--activate", "--database-url", registry_db))

    output = succeeded(run("policy", "test", TESTS, "--database-url", registry_db))
    assert output.endswith(f"{len(example_cases())} passed, 0 failed")
    body = explain_json(
        "--tenant", "eu-bank", "--model", "chat", "--database-url", registry_db
    )  # fmt: skip
    assert body["policy_version"] == 2
    assert body["allowed_deployments"] == ["mistral-7b-eu", "r1-distill-llama-eu"]
    llama = next(c for c in body["candidates"] if c["deployment_id"] == "llama-8b-us")
    assert llama["rule_ids"] == ["eu-data-stays-in-eea"]


def recorded(request_id: str, tenant: str, classification: str, **allowed: bool) -> dict[str, Any]:
    """A routing decision as the gateway records it, all candidates allowed (as by a policy
    without the example rules), the first one chosen."""
    deployments = list(allowed)
    return {
        "request_id": request_id,
        "tenant_id": tenant,
        "requested_model": "chat",
        "route": "chat",
        "action": "infer",
        "context": {"classification": classification, "purpose": None, "caller_region": None},
        "candidates": [
            {"deployment": d.replace("_", "-"), "allowed": ok, "rule_ids": ["baseline-approved"]}
            for d, ok in allowed.items()
        ],
        "chosen_deployment": deployments[0].replace("_", "-"),
        "status": "ok",
        "http_status": 200,
    }


EU = {"mistral_7b_eu": True}


def test_what_if_replays_recorded_decisions(registry_db: str) -> None:
    engine = make_engine(registry_db)
    try:
        insert_decisions(
            engine=engine,
            rows=[
                recorded("req_conf", "acme", "confidential", r1_support_ft_us=True, **EU),
                recorded("req_internal", "acme", "internal", r1_support_ft_us=True, **EU),
                recorded("req_eu", "eu-bank", "internal", llama_8b_us=True, **EU),
                {"request_id": "req_401", "status": "error", "http_status": 401},
            ],
        )
    finally:
        engine.dispose()

    output = succeeded(run("policy", "what-if", POLICY, "--database-url", registry_db))

    assert output.startswith("3 recorded requests examined, 2 would change")
    assert (
        "req_conf acme chat: allowed ['r1-support-ft-us', 'mistral-7b-eu'] -> ['mistral-7b-eu'] "
        "(served deployment now denied)" in output
    )
    assert (
        "req_eu eu-bank chat: allowed ['llama-8b-us', 'mistral-7b-eu'] -> ['mistral-7b-eu'] "
        "(served deployment now denied)" in output
    )
    assert "req_internal" not in output and "req_401" not in output

    only_last = succeeded(
        run("policy", "what-if", POLICY, "--last", "2", "--database-url", registry_db)
    )
    assert only_last.startswith("1 recorded requests examined, 1 would change")


# --- presets ------------------------------------------------------------------------------------


def test_presets_lists_every_preset() -> None:
    result = run("policy", "presets")

    succeeded(result)
    names = re.findall(r"^([a-z][a-z-]*): ", result.output, flags=re.MULTILINE)
    assert names == [preset.name for preset in list_presets()]
    assert len(names) == 7


# --- the documented rollout -----------------------------------------------------------------------


def documented_commands() -> list[list[str]]:
    """The ``provenance-router`` commands of docs/policies.md, "Rolling out a policy", in order."""
    docs = (ROOT / "docs" / "policies.md").read_text(encoding="utf-8")
    section = docs.split("## Rolling out a policy, step by step", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    commands = [shlex.split(line, comments=True) for line in lines]
    return [c[1:] for c in commands if c and c[0] == ".venv/bin/provenance-router"]


def test_the_documented_rollout_works_as_written(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(ROOT)  # the docs run from the repository root
    env = {"PROVENANCE_ROUTER_DATABASE_URL": f"sqlite:///{tmp_path / 'registry.db'}"}
    commands = documented_commands()
    assert len(commands) >= 8
    assert {c[1] for c in commands if c[0] == "policy"} >= {
        "validate", "test", "explain", "what-if", "save", "list",
    }  # fmt: skip

    outputs = [succeeded(run(*command, env=env)) for command in commands]

    assert any(o.endswith(f"{len(example_cases())} passed, 0 failed") for o in outputs)
    assert "(active)" in outputs[-1]


@pytest.mark.parametrize(
    "args",
    [
        ("policy", "validate", "missing.yaml"),
        ("policy", "test", "missing-tests.yaml"),
        ("policy", "test", TESTS, "--policy", "missing.yaml"),
        ("policy", "test", TESTS, "--registry", "missing-registry.yaml"),
        ("policy", "what-if", "missing.yaml"),
        ("policy", "save", "missing.yaml"),
    ],
)
def test_a_missing_file_is_a_usage_error_not_a_traceback(args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert not isinstance(result.exception, FileNotFoundError)
