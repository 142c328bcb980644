"""``provenance-router policy test``: given → expect cases a compliance officer writes next to a
policy, run through the same engine as live traffic.

    tests:
      - name: CN-derived fine-tune denied for confidential data
        given:
          tenant: acme                  # required
          deployment: r1-finetune-dc1   # required
          action: infer                 # default infer
          classification: confidential  # default: the tenant's default classification
          purpose: support              # optional
          caller_region: EU             # optional
        expect: deny                    # allow | deny
        rule: no-cn-developed-for-confidential   # optional: must be among the deciding rules
        # rules: [a, b]                 # or several, all of which must decide

A case passes when the decision matches ``expect`` and every expected rule id is among the
rule ids that decided it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from router.policy import yaml_source
from router.policy.context import RequestContext
from router.policy.engine import PolicyEngine
from router.policy.errors import PolicyTestFileInvalid

CASE_KEYS = frozenset({"name", "given", "expect", "rule", "rules"})
GIVEN_KEYS = frozenset(
    {"tenant", "deployment", "action", "classification", "purpose", "caller_region"}
)


@dataclass(frozen=True, slots=True)
class PolicyTestResult:
    __test__ = False  # not a pytest class

    name: str
    passed: bool
    expected: str  # allow | deny
    actual: str
    expected_rules: tuple[str, ...]
    rule_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    message: str  # why it failed; "" when it passed


@dataclass(frozen=True, slots=True)
class TestReport:
    __test__ = False  # not a pytest class

    results: tuple[PolicyTestResult, ...]

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed

    @property
    def ok(self) -> bool:
        return self.failed == 0


def run_policy_tests(engine_factory: Callable[[], PolicyEngine], tests_yaml: str) -> TestReport:
    """Run every case of ``tests_yaml`` against the engine ``engine_factory`` builds (once)."""
    cases = _load_cases(tests_yaml)
    engine = engine_factory()
    return TestReport(tuple(_run_case(engine, n, case) for n, case in enumerate(cases, start=1)))


def tested_tenants(tests_yaml: str) -> frozenset[str]:
    """The tenants the cases of ``tests_yaml`` are about (for a caller allowed only some)."""
    return frozenset(str(case["given"]["tenant"]) for case in _load_cases(tests_yaml))


def _load_cases(tests_yaml: str) -> list[Mapping[str, Any]]:
    try:
        document = yaml_source.safe_load(tests_yaml)
    except yaml_source.YAMLError as error:
        raise PolicyTestFileInvalid(f"test file is not valid YAML: {error}") from None
    cases = document.get("tests") if isinstance(document, dict) else None
    if not isinstance(cases, list) or not cases:
        raise PolicyTestFileInvalid("test file needs a non-empty `tests:` list")
    for n, case in enumerate(cases, start=1):
        _check_case(n, case)
    return cases


def _check_case(n: int, case: object) -> None:
    if not isinstance(case, dict):
        raise PolicyTestFileInvalid(f"test #{n}: expected a mapping")
    label = f"test #{n} ({case.get('name', 'unnamed')})"
    if extra := sorted(str(k) for k in case if k not in CASE_KEYS):
        raise PolicyTestFileInvalid(f"{label}: unknown key {extra[0]!r}")
    given = case.get("given")
    if not isinstance(given, dict) or not {"tenant", "deployment"} <= given.keys():
        raise PolicyTestFileInvalid(f"{label}: `given` needs tenant and deployment")
    if extra := sorted(str(k) for k in given if k not in GIVEN_KEYS):
        raise PolicyTestFileInvalid(f"{label}: unknown key {extra[0]!r} in `given`")
    if case.get("expect") not in ("allow", "deny"):
        raise PolicyTestFileInvalid(f"{label}: `expect` must be allow or deny")


def _run_case(engine: PolicyEngine, n: int, case: Mapping[str, Any]) -> PolicyTestResult:
    given = case["given"]
    name = str(case.get("name") or f"test #{n}")
    expected_rules = _expected_rules(case)
    try:
        tenant = engine.entities.tenants.get(str(given["tenant"]))
        context = RequestContext(
            classification=given.get("classification", "public"),
            purpose=given.get("purpose"),
            # as live routing does: the tenant's registered region unless the case says otherwise
            caller_region=given.get("caller_region", tenant.region if tenant else None),
        )
        decision = engine.decide(
            tenant_id=str(given["tenant"]),
            action=str(given.get("action", "infer")),
            deployment_id=str(given["deployment"]),
            context=context,
        )
    except ValueError as error:
        expected = case["expect"]
        return PolicyTestResult(name, False, expected, "error", expected_rules, (), (), str(error))
    actual = "allow" if decision.allowed else "deny"
    message = _failure(case["expect"], actual, expected_rules, decision.rule_ids)
    return PolicyTestResult(
        name=name,
        passed=not message,
        expected=case["expect"],
        actual=actual,
        expected_rules=expected_rules,
        rule_ids=decision.rule_ids,
        reasons=decision.reasons,
        message=message,
    )


def _expected_rules(case: Mapping[str, Any]) -> tuple[str, ...]:
    rules = case.get("rules") or ([case["rule"]] if case.get("rule") else [])
    return tuple(str(rule) for rule in rules)


def _failure(
    expected: str, actual: str, expected_rules: tuple[str, ...], rule_ids: tuple[str, ...]
) -> str:
    """Why a case failed, or "" when it passed."""
    deciders = ", ".join(rule_ids) or "no rule (default deny)"
    if expected != actual:
        return f"expected {expected}, got {actual}; decided by {deciders}"
    missing = [rule for rule in expected_rules if rule not in rule_ids]
    if missing:
        return f"expected rule {missing[0]} to decide; decided by {deciders}"
    return ""
