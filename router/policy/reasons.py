"""Decisions in words. Cedar decides and names the deciding rules; this module only describes
them, quoting what the request and the deployment actually had. It never re-evaluates a rule,
so the words cannot disagree with the decision.

    denied by no-cn-developed-for-confidential: developer country of the model or an ancestor
      (acme: US, deepseek: CN) with classification confidential
    denied by osi-only-for-product-x: requires every effective license OSI-approved: yes
      (is no: LicenseRef-Llama-3.1-Community, MIT) for tenant product-x
    allowed by baseline-approved: enabled, approved deployment of an approved model
"""

from __future__ import annotations

from collections.abc import Mapping

from router.policy.conditions import Condition
from router.policy.rules import Rule
from router.policy.specs import DecisionInput

DEFAULT_DENY = "denied by default: no rule permits this deployment"


def decision_reasons(
    rules: Mapping[str, Rule], rule_ids: tuple[str, ...], allowed: bool, subject: DecisionInput
) -> tuple[str, ...]:
    """One sentence per deciding rule (or the default-deny sentence when none decided)."""
    if not rule_ids:
        return ("allowed" if allowed else DEFAULT_DENY,)
    return tuple(rule_reason(rules[rule_id], allowed, subject) for rule_id in rule_ids)


def rule_reason(rule: Rule, allowed: bool, subject: DecisionInput) -> str:
    """Why ``rule`` allowed or denied this request, in one sentence."""
    head = f"{'allowed' if allowed else 'denied'} by {rule.id}"
    if rule.explain is not None:
        return f"{head}: {rule.explain(subject)}"
    if rule.kind == "cedar":
        return f"{head}: {rule.description}" if rule.description else head
    if rule.kind == "allow_only":
        return f"{head}: {_requirements(rule, subject)}{_for(rule.selectors, subject)}"
    facts = ", ".join(f"{c.spec.label} ({c.actual(subject)})" for c in rule.requirements)
    selectors = _selectors(rule.selectors, subject)
    if facts and selectors:
        return f"{head}: {facts} with {selectors}"
    return f"{head}: {facts or selectors}"


def _requirements(rule: Rule, subject: DecisionInput) -> str:
    needs = "; ".join(
        f"{c.spec.label}: {c.expected()} (is {c.actual(subject)})" for c in rule.requirements
    )
    return f"requires {needs}"


def _selectors(selectors: tuple[Condition, ...], subject: DecisionInput) -> str:
    return ", ".join(f"{c.spec.label} {c.actual(subject)}" for c in selectors)


def _for(selectors: tuple[Condition, ...], subject: DecisionInput) -> str:
    return f" for {_selectors(selectors, subject)}" if selectors else ""
