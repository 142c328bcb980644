"""Turn a policy source (YAML rules, raw Cedar, or both) into one validated Cedar policy set.

A YAML policy::

    description: optional free text
    baseline: true            # default; false = allowlist mode (only `allow` rules permit)
    presets: [...]            # see presets.py
    rules: [...]              # see rules.py
    cedar: |                  # optional raw Cedar, each policy with an @id("...") annotation
      @id("no-embeddings-offsite")
      @reason("embeddings stay on our own hardware")
      forbid (principal, action == ProvenanceRouter::Action::"embed", resource)
      unless { resource has hosting && resource.hosting == "on_prem" };

A Cedar policy (``format: cedar``) is the ``cedar:`` block alone, with the baseline on.

Compiling is all or nothing: every rule is parsed, every policy validated against the schema
(``schema.CEDAR_SCHEMA``), ids checked unique, and only then is a ``CompiledPolicy`` returned.
Anything wrong raises ``PolicyInvalid`` carrying Cedar's error text and the rule id.

Raw Cedar ``permit`` policies may not read ``context``: a permit that depends on what the caller
sends could be unlocked by sending it. Context belongs in forbids (or in YAML ``allow`` rules,
whose context conditions are compiled so that sending more can only remove permits).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import cedarpy

from registry.vocabulary import did_you_mean
from router.policy import yaml_source
from router.policy.errors import PolicyInvalid
from router.policy.presets import expand_presets
from router.policy.rules import BUILTIN_PREFIX, Rule, builtin_rules, parse_rule
from router.policy.schema import (
    CONTEXT_ATTRIBUTES,
    DEPLOYMENT_ATTRIBUTES,
    TENANT_ATTRIBUTES,
    parsed_schema,
)

PolicyFormat = Literal["yaml", "cedar"]
TOP_LEVEL_KEYS = ("description", "baseline", "presets", "rules", "cedar")

DEFAULT_POLICY_SOURCE = """\
# The policy of a fresh install: the built-in baseline only.
#   - an enabled, approved deployment of an approved model is allowed for every tenant
#     (this includes the bundled local model);
#   - disabled, blocked and under_review deployments or models are not eligible.
# Add presets and rules to tighten it; see docs/policies.md. For example:
#   presets:
#     - no-third-party-data-retention
#     - use: no-countries
#       with: {countries: [CN]}
baseline: true
rules: []
"""


@dataclass(frozen=True)
class CompiledPolicy:
    """A policy that passed every check, ready for the engine. Immutable.

    ``rules`` are in policy order (built-ins, presets, rules, raw Cedar); ``cedar_text`` is the
    whole policy set as Cedar sees it (what auditors read); ``policy_set`` is parsed once."""

    format: PolicyFormat
    source: str
    baseline: bool
    rules: tuple[Rule, ...]
    cedar_text: str
    policy_json: str
    policy_set: cedarpy.PolicySet = field(repr=False, compare=False)

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(rule.id for rule in self.rules)

    def rules_by_id(self) -> Mapping[str, Rule]:
        return {rule.id: rule for rule in self.rules}


def compile_policy(format: PolicyFormat | str, source: str) -> CompiledPolicy:
    """Validate and compile a policy source; raises PolicyInvalid, never half-compiles."""
    if format == "cedar":
        return _compile("cedar", source, baseline=True, yaml_rules=[], raw_cedar=source)
    if format != "yaml":
        raise PolicyInvalid(f"unknown policy format {format!r}; expected yaml or cedar")
    document = _load_yaml(source)
    rule_entries = expand_presets(document.get("presets") or []) + _rule_list(document)
    yaml_rules = [parse_rule(entry, n) for n, entry in enumerate(rule_entries, start=1)]
    return _compile(
        "yaml",
        source,
        baseline=_baseline(document),
        yaml_rules=yaml_rules,
        raw_cedar=_cedar_block(document),
    )


def _load_yaml(source: str) -> dict[str, Any]:
    try:
        document = yaml_source.safe_load(source)
    except yaml_source.YAMLError as error:
        raise PolicyInvalid("policy is not valid YAML", errors=(str(error),)) from None
    document = {} if document is None else document
    if not isinstance(document, dict):
        raise PolicyInvalid("policy must be a YAML mapping with rules, presets and/or cedar")
    if extra := sorted(str(key) for key in document if key not in TOP_LEVEL_KEYS):
        raise PolicyInvalid(f"unknown top-level key {extra[0]!r}; expected {TOP_LEVEL_KEYS}")
    return document


def _rule_list(document: Mapping[str, Any]) -> list[Any]:
    rules = document.get("rules") or []
    if not isinstance(rules, list):
        raise PolicyInvalid("rules: expected a list of rules")
    return rules


def _baseline(document: Mapping[str, Any]) -> bool:
    baseline = document.get("baseline", True)
    if not isinstance(baseline, bool):
        raise PolicyInvalid(f"baseline: expected true or false, got {baseline!r}")
    return baseline


def _cedar_block(document: Mapping[str, Any]) -> str:
    block = document.get("cedar") or ""
    if not isinstance(block, str):
        raise PolicyInvalid("cedar: expected Cedar policy text (use a YAML block scalar: `|`)")
    return block


def _compile(
    format: PolicyFormat, source: str, *, baseline: bool, yaml_rules: list[Rule], raw_cedar: str
) -> CompiledPolicy:
    unreviewed = [rule for rule in yaml_rules if rule.kind == "allow_unreviewed"]
    generated = builtin_rules(baseline=baseline, unreviewed=unreviewed) + yaml_rules
    raw_rules = raw_cedar_rules(raw_cedar)
    rules = generated + raw_rules
    _check_unique([rule.id for rule in rules])
    text = "\n\n".join([rule.cedar for rule in generated] + [raw_cedar.strip()]).strip() + "\n"
    validate(text)
    policy_json = keyed_by_rule_id(_to_est(text))
    try:
        policy_set = cedarpy.PolicySet.from_json_str(policy_json)
    except ValueError as error:  # defensive: validated text always loads
        raise PolicyInvalid("policy set does not load", errors=(str(error),)) from None
    return CompiledPolicy(format, source, baseline, tuple(rules), text, policy_json, policy_set)


def raw_cedar_rules(text: str) -> list[Rule]:
    """One ``Rule`` per raw Cedar policy, named by its ``@id``; ``@reason`` is its description."""
    if not text.strip():
        return []
    rules = []
    for position, policy in enumerate(_static_policies(_to_est(text)), start=1):
        annotations = policy.get("annotations") or {}
        rule_id = annotations.get("id")
        if not rule_id:
            raise PolicyInvalid(
                f'raw Cedar policy #{position} has no @id("...") annotation; every policy '
                "needs one, it is the rule id that decisions and the audit log name"
            )
        if rule_id.startswith(BUILTIN_PREFIX):
            raise PolicyInvalid(f"rule {rule_id!r}: the prefix {BUILTIN_PREFIX!r} is reserved")
        _check_attributes(rule_id, policy)
        if policy["effect"] == "permit" and _reads_context(policy):
            raise PolicyInvalid(
                f"rule {rule_id!r}: a raw Cedar permit must not read `context` (a caller could "
                "unlock it by what it sends); put context conditions in a forbid instead"
            )
        reason = annotations.get("reason", "")
        rules.append(Rule(rule_id, "cedar", policy["effect"], _policy_text(policy), reason))
    return rules


def validate(text: str) -> None:
    """Validate Cedar text against the schema; PolicyInvalid carries Cedar's messages."""
    result = cedarpy.validate_policies(text, parsed_schema())
    if result.validation_passed:
        return
    names = result.id_annotations_by_policy_id
    errors = tuple(_name_rule(e.policy_id, e.error, names) for e in result.errors)
    raise PolicyInvalid("policy does not validate against the Cedar schema", errors=errors)


def _name_rule(policy_id: str, error: str, names: Mapping[str, str]) -> str:
    """Cedar's message, with its positional policy id replaced by the rule id."""
    if policy_id not in names:
        return error
    rule_id = names[policy_id]
    return f"rule {rule_id!r}: " + error.replace(f"`{policy_id}`", f"`{rule_id}`")


def keyed_by_rule_id(est: Mapping[str, Any]) -> str:
    """Cedar JSON whose policy ids are the rule ids (Cedar numbers parsed policies itself)."""
    policies = {policy["annotations"]["id"]: policy for policy in _static_policies(est)}
    return json.dumps({"staticPolicies": policies, "templates": {}, "templateLinks": []})


def _to_est(text: str) -> dict[str, Any]:
    try:
        est: dict[str, Any] = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as error:
        raise PolicyInvalid("Cedar does not parse", errors=(str(error),)) from None
    if est.get("templates"):
        raise PolicyInvalid("Cedar templates (?principal / ?resource) are not supported")
    return est


def _static_policies(est: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The policies in source order (Cedar names them policy0, policy1, ...)."""
    numbered = est["staticPolicies"].items()
    return [policy for _, policy in sorted(numbered, key=lambda item: _position(item[0]))]


def _position(policy_id: str) -> int:
    match = re.fullmatch(r"policy(\d+)", policy_id)
    return int(match.group(1)) if match else 0


def _policy_text(policy: Mapping[str, Any]) -> str:
    one = {"staticPolicies": {"policy0": policy}, "templates": {}, "templateLinks": []}
    return cedarpy.policies_from_json_str(json.dumps(one)).strip()


_DECLARED = {
    "principal": {a.name for a in TENANT_ATTRIBUTES},
    "resource": {a.name for a in DEPLOYMENT_ATTRIBUTES},
    "context": {a.name for a in CONTEXT_ATTRIBUTES},
}


def _check_attributes(rule_id: str, policy: Mapping[str, Any]) -> None:
    """Every ``has`` test and attribute read names an attribute the schema declares.

    Cedar's validator accepts ``resource has hostng``: it is simply always false, so a guarded
    condition behind it never fires. A typo there must fail as loudly as one outside a guard."""
    for variable, attribute in _attributes_read(policy):
        declared = _DECLARED.get(variable)
        if declared is not None and attribute not in declared:
            raise PolicyInvalid(
                f"rule {rule_id!r}: `{variable}` has no attribute {attribute!r}"
                f"{did_you_mean(attribute, declared)}; see docs/policies.md for the attributes"
            )


def _attributes_read(node: Any) -> list[tuple[str, str]]:
    """(variable, attribute) for every ``x has a`` and ``x.a`` on a variable in an EST."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for op in ("has", "."):
            inner = node.get(op)
            if isinstance(inner, dict) and isinstance(inner.get("left"), dict):
                variable = inner["left"].get("Var")
                if isinstance(variable, str):
                    found.append((variable, str(inner.get("attr"))))
        for value in node.values():
            found += _attributes_read(value)
    elif isinstance(node, list):
        for item in node:
            found += _attributes_read(item)
    return found


def _reads_context(node: Any) -> bool:
    if isinstance(node, dict):
        return node.get("Var") == "context" or any(_reads_context(v) for v in node.values())
    if isinstance(node, list):
        return any(_reads_context(item) for item in node)
    return False


def _check_unique(rule_ids: list[str]) -> None:
    seen: set[str] = set()
    for rule_id in rule_ids:
        if rule_id in seen:
            raise PolicyInvalid(f"rule {rule_id!r}: the id is used more than once")
        seen.add(rule_id)
