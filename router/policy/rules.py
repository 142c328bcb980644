"""The friendly YAML rules, each compiled to one Cedar policy whose id is the rule id.

    - id: no-cn-developed-for-confidential          # unique; becomes the Cedar policy id
      description: optional free text
      deny: {developer_country_any_ancestor: [CN], classification: [confidential, restricted]}

Rule kinds (exactly one per rule):

``deny: {conditions}``
    Forbid the deployment when every condition holds. An unknown fact counts as holding.
``allow_only: {selectors..., requirements...}``
    For the requests the selectors pick (tenant, tenant_region, tenant_attribute, action,
    classification, purpose, caller_region; none = every request), forbid every deployment that
    does not meet all requirements (every other condition). An unknown fact meets nothing.
``allow: {conditions}``
    Permit the deployment when every condition holds; an unknown fact never holds. The built-in
    baseline already permits every approved deployment, so ``allow`` matters in allowlist mode
    (``baseline: false``), where only explicit ``allow`` rules permit anything.
``allow_unreviewed: {tenant: [...], model: [...] | deployment: [...], action?: [...]}``
    Let these tenants use these ``under_review`` models or deployments (e.g. for evaluation).
    Nothing can make a ``blocked`` or disabled deployment eligible.

Built-in rules, always part of a policy:

``baseline-approved`` (permit; left out with ``baseline: false``)
    An enabled, approved deployment of an approved model is allowed unless a rule forbids it.
``baseline-disabled`` (forbid)
    A disabled deployment is never eligible.
``baseline-blocked`` (forbid)
    A blocked deployment, or any deployment of a blocked model, is never eligible.
``baseline-unreviewed`` (forbid, unless an ``allow_unreviewed`` rule matches)
    A deployment that is not approved, or whose model is not approved (``under_review``, or not
    in the registry), is not eligible. Being a forbid, no permit, not even raw Cedar, can
    override it; only an ``allow_unreviewed`` rule is written into its ``unless``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from router.policy.conditions import CONDITIONS, Condition, parse_condition
from router.policy.errors import PolicyInvalid
from router.policy.specs import CONFIDENCE_NAMES, DecisionInput, MinConfidence, Role, cedar_str

Effect = Literal["permit", "forbid"]
RULE_KINDS = ("deny", "allow_only", "allow", "allow_unreviewed")
RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
BUILTIN_PREFIX = "baseline-"
UNREVIEWED_KEYS = frozenset({"tenant", "action", "model", "deployment"})


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of a compiled policy: one Cedar policy with the same id."""

    id: str
    kind: str  # deny | allow_only | allow | allow_unreviewed | cedar | builtin
    effect: Effect
    cedar: str  # the policy text, @id annotation included
    description: str = ""
    selectors: tuple[Condition, ...] = ()
    requirements: tuple[Condition, ...] = ()  # allow_only's requirements; other kinds: facts
    explain: Callable[[DecisionInput], str] | None = None  # built-ins: what they saw
    exception: str | None = None  # allow_unreviewed: its clause in baseline-unreviewed


def cedar_policy(
    rule_id: str,
    effect: Effect,
    when: list[str],
    unless: list[str] | None = None,
    comment: str = "",
) -> str:
    """Cedar text for one policy; conditions are AND-ed, one per line."""
    lines = [f"// {line}" for line in comment.splitlines() if line.strip()]
    lines += [f"@id({cedar_str(rule_id)})", f"{effect} (principal, action, resource)"]
    if when:
        lines.append("when {\n  " + " &&\n  ".join(when) + "\n}")
    if unless:
        lines.append("unless {\n  " + " &&\n  ".join(unless) + "\n}")
    return "\n".join(lines) + ";"


# ---------------------------------------------------------------------------- YAML rules


def parse_rule(entry: object, position: int) -> Rule:
    """One entry of ``rules:``; raises PolicyInvalid naming the rule and the offending key."""
    if not isinstance(entry, dict):
        raise PolicyInvalid(f"rule #{position}: expected a mapping with an id and a rule kind")
    rule_id = _rule_id(entry, position)
    unknown = sorted(str(k) for k in entry if k not in {"id", "description", *RULE_KINDS})
    if unknown:
        raise PolicyInvalid(
            f"rule {rule_id!r}: unknown key {unknown[0]!r}; a rule has an id, "
            f"an optional description and one of {', '.join(RULE_KINDS)}"
        )
    kinds = [kind for kind in RULE_KINDS if kind in entry]
    if len(kinds) != 1:
        raise PolicyInvalid(f"rule {rule_id!r}: needs exactly one of {', '.join(RULE_KINDS)}")
    kind = kinds[0]
    description = str(entry.get("description") or "")
    conditions = parse_conditions(rule_id, entry[kind])
    return _BUILDERS[kind](rule_id, description, conditions, entry[kind])


def _rule_id(entry: Mapping[object, object], position: int) -> str:
    rule_id = entry.get("id")
    if not isinstance(rule_id, str) or not RULE_ID.fullmatch(rule_id):
        raise PolicyInvalid(
            f"rule #{position}: id must be letters, digits, '.', '_', ':' or '-' "
            f"(starting with a letter or digit), got {rule_id!r}"
        )
    if rule_id.startswith(BUILTIN_PREFIX):
        raise PolicyInvalid(f"rule {rule_id!r}: ids starting with {BUILTIN_PREFIX!r} are reserved")
    return rule_id


def parse_conditions(rule_id: str, body: object) -> tuple[Condition, ...]:
    """The conditions of one rule, with ``min_confidence`` applied to its facts."""
    if not isinstance(body, dict) or not body:
        raise PolicyInvalid(f"rule {rule_id!r}: expected a non-empty mapping of conditions")
    min_confidence = _min_confidence(rule_id, body)
    conditions = [
        _condition(rule_id, key, raw, min_confidence)
        for key, raw in body.items()
        if key != "min_confidence"
    ]
    if "min_confidence" in body and not any(not c.spec.selector for c in conditions):
        conditions.append(Condition(MinConfidence(), (min_confidence,), min_confidence))
    return tuple(conditions)


def _min_confidence(rule_id: str, body: Mapping[object, object]) -> str:
    if "min_confidence" not in body:
        return "reported"
    try:
        level = CONFIDENCE_NAMES(body["min_confidence"])
    except ValueError as error:
        raise PolicyInvalid(f"rule {rule_id!r}: min_confidence: {error}") from None
    if level not in (("reported",), ("verified",)):
        raise PolicyInvalid(f"rule {rule_id!r}: min_confidence takes one level, got {level}")
    return "verified" if level == ("verified",) else "reported"


def _condition(rule_id: str, key: object, raw: object, min_confidence: str) -> Condition:
    try:
        return parse_condition(str(key), raw, min_confidence)
    except KeyError:
        close = difflib.get_close_matches(str(key), CONDITIONS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise PolicyInvalid(
            f"rule {rule_id!r}: unknown condition {key!r}{hint}; "
            "see docs/policies.md for the list of conditions"
        ) from None
    except ValueError as error:
        raise PolicyInvalid(f"rule {rule_id!r}: {key}: {error}") from None


def _checked(rule_id: str, conditions: tuple[Condition, ...], role: Role) -> list[str]:
    """The Cedar clauses of ``conditions`` in ``role``, after checking they cannot loosen."""
    clauses = []
    for condition in conditions:
        try:
            condition.spec.check_role(condition.value, role)
        except ValueError as error:
            raise PolicyInvalid(f"rule {rule_id!r}: {condition.key}: {error}") from None
        clauses.append(condition.cedar(role))
    return clauses


def _split(
    conditions: tuple[Condition, ...],
) -> tuple[tuple[Condition, ...], tuple[Condition, ...]]:
    selectors = tuple(c for c in conditions if c.spec.selector)
    return selectors, tuple(c for c in conditions if not c.spec.selector)


def _comment(kind: str, description: str, body: object) -> str:
    """The rule as written, kept above its Cedar policy for whoever reads the Cedar."""
    return "\n".join(filter(None, [description, f"{kind}: {_flow(body)}"]))


def _flow(value: object) -> str:
    """YAML flow style, for comments: ``{tenant: [eu-*], location_eea: false}``."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_flow(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _deny(rule_id: str, description: str, conditions: tuple[Condition, ...], body: object) -> Rule:
    """Forbid when every condition holds; unknown facts count as holding."""
    selectors, facts = _split(conditions)
    when = _checked(rule_id, selectors + facts, Role.FORBID)
    cedar = cedar_policy(rule_id, "forbid", when, comment=_comment("deny", description, body))
    return Rule(rule_id, "deny", "forbid", cedar, description, selectors, facts)


def _allow_only(
    rule_id: str, description: str, conditions: tuple[Condition, ...], body: object
) -> Rule:
    """For the selected requests, forbid unless every requirement holds (and is known)."""
    selectors, requirements = _split(conditions)
    if not requirements:
        raise PolicyInvalid(
            f"rule {rule_id!r}: allow_only needs at least one requirement about the deployment "
            "(e.g. license_osi: true); selectors alone would deny everything they select"
        )
    when = _checked(rule_id, selectors, Role.FORBID)
    unless = _checked(rule_id, requirements, Role.PERMIT)
    comment = _comment("allow_only", description, body)
    cedar = cedar_policy(rule_id, "forbid", when, unless, comment=comment)
    return Rule(rule_id, "allow_only", "forbid", cedar, description, selectors, requirements)


def _allow(rule_id: str, description: str, conditions: tuple[Condition, ...], body: object) -> Rule:
    """Permit when every condition holds; unknown facts never hold."""
    selectors, facts = _split(conditions)
    when = _checked(rule_id, selectors + facts, Role.PERMIT)
    cedar = cedar_policy(rule_id, "permit", when, comment=_comment("allow", description, body))
    return Rule(rule_id, "allow", "permit", cedar, description, selectors, facts)


def _allow_unreviewed(
    rule_id: str, description: str, conditions: tuple[Condition, ...], body: object
) -> Rule:
    """Permit these tenants these under_review models/deployments (an exception to
    ``baseline-unreviewed``); only tenant, action, model and deployment may be used."""
    keys = {str(key) for key in body} if isinstance(body, dict) else set()
    if extra := sorted(keys - UNREVIEWED_KEYS):
        raise PolicyInvalid(
            f"rule {rule_id!r}: allow_unreviewed takes only tenant, action, model and "
            f"deployment, not {extra[0]!r}"
        )
    if "tenant" not in keys or not keys & {"model", "deployment"}:
        raise PolicyInvalid(
            f"rule {rule_id!r}: allow_unreviewed must name the tenants and the models or "
            "deployments it admits"
        )
    selectors, facts = _split(conditions)
    when = _checked(rule_id, selectors + facts, Role.PERMIT)
    comment = _comment("allow_unreviewed", description, body)
    cedar = cedar_policy(rule_id, "permit", when, comment=comment)
    exception = "(" + " && ".join(when) + ")"
    return Rule(
        rule_id,
        "allow_unreviewed",
        "permit",
        cedar,
        description,
        selectors,
        facts,
        exception=exception,
    )


_BUILDERS = {
    "deny": _deny,
    "allow_only": _allow_only,
    "allow": _allow,
    "allow_unreviewed": _allow_unreviewed,
}


# ---------------------------------------------------------------------------- built-ins

_SETTLED = '["approved", "blocked"]'  # review states that are not "waiting for review"


def _review_state(subject: DecisionInput) -> str:
    attrs = subject.facts.attrs
    model = attrs["model_review_status"]
    model_text = "not in the registry" if model == "unknown" else model
    return f"deployment {attrs['review_status']}, model {attrs['model']} {model_text}"


def builtin_rules(*, baseline: bool, unreviewed: list[Rule]) -> list[Rule]:
    """The rules every policy starts with (see the module docstring)."""
    guards = [_disabled(), _blocked(), _not_reviewed(unreviewed)]
    return [_approved(), *guards] if baseline else guards


def _approved() -> Rule:
    """An enabled, approved deployment of an approved model is allowed unless a rule forbids it."""
    when = [
        "resource.enabled",
        'resource.review_status == "approved"',
        'resource.model_review_status == "approved"',
    ]
    comment = "An enabled, approved deployment of an approved model is allowed."
    cedar = cedar_policy("baseline-approved", "permit", when, comment=comment)
    return Rule(
        "baseline-approved",
        "builtin",
        "permit",
        cedar,
        comment,
        explain=lambda s: "enabled, approved deployment of an approved model",
    )


def _disabled() -> Rule:
    """A disabled deployment is never eligible."""
    comment = "A disabled deployment is never eligible."
    cedar = cedar_policy("baseline-disabled", "forbid", ["!resource.enabled"], comment=comment)
    return Rule(
        "baseline-disabled",
        "builtin",
        "forbid",
        cedar,
        comment,
        explain=lambda s: f"deployment {s.facts.deployment_id} is disabled",
    )


def _blocked() -> Rule:
    """A blocked deployment, or any deployment of a blocked model, is never eligible."""
    when = ['(resource.review_status == "blocked" || resource.model_review_status == "blocked")']
    comment = "A blocked deployment, or a deployment of a blocked model, is never eligible."
    cedar = cedar_policy("baseline-blocked", "forbid", when, comment=comment)
    return Rule(
        "baseline-blocked",
        "builtin",
        "forbid",
        cedar,
        comment,
        explain=_blocked_reason,
    )


def _blocked_reason(subject: DecisionInput) -> str:
    because = subject.facts.blocked_because
    return f"review status: {_review_state(subject)}" + (f" ({because})" if because else "")


def _not_reviewed(unreviewed: list[Rule]) -> Rule:
    """Not yet approved (or model not in the registry): eligible only via allow_unreviewed."""
    when = [
        f"(!{_SETTLED}.contains(resource.review_status) || "
        f"!{_SETTLED}.contains(resource.model_review_status))"
    ]
    exceptions = [rule.exception for rule in unreviewed if rule.exception]
    unless = [" ||\n  ".join(exceptions)] if exceptions else None
    comment = "Not yet approved: eligible only through an allow_unreviewed rule."
    cedar = cedar_policy("baseline-unreviewed", "forbid", when, unless, comment=comment)

    def explain(s: DecisionInput) -> str:
        return (
            f"review status: {_review_state(s)}, and no allow_unreviewed rule admits it "
            f"for tenant {s.tenant.id}"
        )

    return Rule("baseline-unreviewed", "builtin", "forbid", cedar, comment, explain=explain)
