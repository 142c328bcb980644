"""The kinds of condition a YAML rule is made of, and how each compiles to Cedar and reads in
a reason. ``conditions.CONDITIONS`` lists every condition key built from these kinds; read that
module first for what the conditions mean.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeAlias

from registry.snapshot import TenantSnap
from registry.validation import check_purpose, check_region
from registry.vocabulary import (
    did_you_mean,
    fold,
    named_lists,
    normalise_accelerator,
    normalise_country,
    normalise_hardware_vendor,
    normalise_license,
    normalise_named_list,
    normalise_topic,
)
from router.policy.context import RequestContext
from router.policy.entities import tenant_attrs
from router.policy.facts import DeploymentFacts
from router.policy.schema import (
    ACTION_TYPE,
    ACTIONS,
    CLASSIFICATIONS,
)

Value: TypeAlias = tuple[str, ...] | bool | int


class Role(Enum):
    """Where a condition sits in a compiled policy; decides what an unknown fact means."""

    FORBID = "forbid"  # unknown counts as a match: the forbid fires
    PERMIT = "permit"  # unknown never satisfies the condition


@dataclass(frozen=True, slots=True)
class DecisionInput:
    """What a reason may quote: the tenant, the action, the effective context, the facts."""

    tenant: TenantSnap
    action: str
    context: RequestContext
    facts: DeploymentFacts

    def attrs(self, entity: str) -> Mapping[str, Any]:
        return tenant_attrs(self.tenant) if entity == "principal" else self.facts.attrs


# ---------------------------------------------------------------------------- Cedar literals


def cedar_str(text: str) -> str:
    """A Cedar string literal (values are checked for control characters when parsed)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cedar_set(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(cedar_str(v) for v in values) + "]"


def _either(clauses: list[str]) -> str:
    return clauses[0] if len(clauses) == 1 else "(" + " || ".join(clauses) + ")"


# ---------------------------------------------------------------------------- value parsing

Parser: TypeAlias = Callable[[object], Value]
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")


def strings(what: str, canonical: Callable[[str], str]) -> Parser:
    """A parser for one string or a non-empty list of strings, each mapped to its canonical
    spelling by ``canonical`` (the registry's vocabulary: a rule and the registry then spell a
    fact alike), which raises ValueError for a value it does not know."""

    def parse(raw: object) -> tuple[str, ...]:
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list) or not items:
            raise ValueError(f"expected {what} (one value or a list), got {raw!r}")
        values = []
        for item in items:
            if not isinstance(item, str):
                hint = " (quote it: YAML reads NO as false)" if item is False else ""
                raise ValueError(f"expected {what}, got {item!r}{hint}")
            values.append(canonical(item))
        return tuple(dict.fromkeys(values))

    return parse


def _member_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def check(value: str) -> str:
        folded = value.strip().lower()
        if folded not in choices:
            raise ValueError(
                f"{value!r} is not one of {', '.join(choices)}{did_you_mean(value, choices)}"
            )
        return folded

    return check


def _printable(fold_case: bool) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not _PRINTABLE.fullmatch(value):
            raise ValueError(f"{value!r} is empty or has control characters")
        return fold(value) if fold_case else value

    return check


def _key_value(value: str) -> str:
    if "=" not in value or not _PRINTABLE.fullmatch(value):
        raise ValueError(f'expected a "key=value" string, got {value!r}')
    return value


def _license(value: str) -> str:
    """SPDX ids and LicenseRef-* compare case-insensitively: rules match the folded form."""
    return fold(normalise_license(value))


def words(choices: tuple[str, ...]) -> Parser:
    return strings("one of " + ", ".join(choices), _member_of(choices))


COUNTRIES = strings("ISO 3166-1 alpha-2 country codes, e.g. CN", normalise_country)
LICENSES = strings("SPDX license ids or LicenseRef-*", _license)
HARDWARE_VENDORS = strings("hardware vendors, e.g. nvidia, huawei", normalise_hardware_vendor)
ACCELERATORS = strings("accelerators, e.g. h100, ascend-910b", normalise_accelerator)
REGIONS = strings("regions, e.g. eu", check_region)
PURPOSES = strings("purposes, e.g. customer-support", check_purpose)
IDS = strings("ids or patterns with *, e.g. qwen/*", _printable(fold_case=True))
NAMES = strings("names without control characters", _printable(fold_case=True))
NAMED_LISTS = strings("sanctions or export lists, e.g. us-entity-list", normalise_named_list)
TOPICS = strings("topics, e.g. tiananmen-1989", normalise_topic)


def _tag(value: str) -> str:
    """A jurisdiction tag; a list name is refused: listings are their own fact, and a tag rule
    naming one would silently match nothing."""
    listed = named_lists().lookup(value)
    if listed is not None:
        raise ValueError(
            f"{value!r} is a sanctions or export list: use developer_listed_on: [{listed}]"
        )
    return _printable(fold_case=True)(value)


TAGS = strings("jurisdiction tags, e.g. eu", _tag)
KEY_VALUES = strings('"key=value" strings', _key_value)
ACTION_NAMES = words(ACTIONS)
CLASSIFICATION_NAMES = words(CLASSIFICATIONS)
CONFIDENCE_NAMES = words(("reported", "verified"))


def boolean(raw: object) -> bool:
    if not isinstance(raw, bool):
        raise ValueError(f"expected true or false, got {raw!r}")
    return raw


def days(raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise ValueError(f"expected a number of days >= 0, got {raw!r}")
    return raw


def _texts(value: Value) -> tuple[str, ...]:
    if not isinstance(value, tuple):
        raise TypeError(f"expected a list of strings, got {value!r}")
    return value


def _render(value: object) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple | list):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


# ---------------------------------------------------------------------------- specs


class Spec(ABC):
    """What one condition key means. Subclasses are the kinds of condition."""

    key: str
    selector: bool  # picks requests (True) or tests the deployment (False)
    label: str  # how reasons name it, e.g. "hosted in the EEA"
    parse: Parser

    @abstractmethod
    def cedar(self, value: Value, role: Role, min_confidence: str) -> str:
        """The Cedar expression of this condition in a policy of ``role``."""

    @abstractmethod
    def actual(self, value: Value, subject: DecisionInput, min_confidence: str) -> str:
        """What the request or deployment actually has, for a reason."""

    def expected(self, value: Value) -> str:
        return _render(value)

    def check_role(self, value: Value, role: Role) -> None:
        """Raise ValueError when this condition could let a request context loosen a rule."""
        return None


@dataclass(frozen=True)
class TenantGlob(Spec):
    """``tenant: [eu-*, product-x]``: the tenant id matches one pattern (``*`` is a wildcard),
    ignoring case."""

    key: str = "tenant"
    selector: bool = True
    label: str = "tenant"
    parse: Parser = IDS

    def cedar(self, value: Value, role: Role, min_confidence: str) -> str:
        return _either([f"principal.id_folded like {cedar_str(p)}" for p in _texts(value)])

    def actual(self, value: Value, subject: DecisionInput, min_confidence: str) -> str:
        return subject.tenant.id


@dataclass(frozen=True)
class TenantAttribute(Spec):
    """``tenant_attribute: [business_unit=retail]``: the tenant has one of these attributes."""

    key: str = "tenant_attribute"
    selector: bool = True
    label: str = "tenant attributes"
    parse: Parser = KEY_VALUES

    def cedar(self, value: Value, role: Role, min_confidence: str) -> str:
        return f"principal.attributes.containsAny({cedar_set(_texts(value))})"

    def actual(self, value: Value, subject: DecisionInput, min_confidence: str) -> str:
        return _render(tenant_attrs(subject.tenant)["attributes"])


@dataclass(frozen=True)
class ActionIn(Spec):
    """``action: [embed]``: the request is one of these actions (infer = chat/completions)."""

    key: str = "action"
    selector: bool = True
    label: str = "action"
    parse: Parser = ACTION_NAMES

    def cedar(self, value: Value, role: Role, min_confidence: str) -> str:
        actions = ", ".join(f"{ACTION_TYPE}::{cedar_str(a)}" for a in _texts(value))
        return f"action in [{actions}]"

    def actual(self, value: Value, subject: DecisionInput, min_confidence: str) -> str:
        return subject.action


@dataclass(frozen=True)
class ClassificationIn(Spec):
    """``classification: [confidential, restricted]``: the effective data classification is one
    of these. In a forbid the list must hold every level above its lowest one, in a permit
    every level below its highest one, so that raising the classification can only add denials.
    """

    key: str = "classification"
    selector: bool = True
    label: str = "classification"
    parse: Parser = CLASSIFICATION_NAMES

    def cedar(self, value: Value, role: Role, min_confidence: str) -> str:
        return f"{cedar_set(_texts(value))}.contains(context.classification)"

    def actual(self, value: Value, subject: DecisionInput, min_confidence: str) -> str:
        return subject.context.classification

    def check_role(self, value: Value, role: Role) -> None:
        ranks = sorted(CLASSIFICATIONS.index(c) for c in _texts(value))
        closed = list(range(ranks[0], len(CLASSIFICATIONS)))
        direction = "and every level above it"
        if role is Role.PERMIT:
            closed, direction = list(range(ranks[-1] + 1)), "and every level below it"
        if ranks != closed:
            wanted = [CLASSIFICATIONS[i] for i in closed]
            raise ValueError(
                f"must list a level {direction} ({wanted}), so a stricter classification "
                "can never loosen the rule"
            )


@dataclass(frozen=True)
class DeclaredContext(Spec):
    """``purpose: [...]`` / ``caller_region: [...]``: what the caller declared.

    A forbid matches only a declared, listed value; a permit holds when nothing or a listed
    value is declared. Declaring something can thus only add denials."""

    key: str
    label: str
    selector: bool = True
    parse: Parser = NAMES

    def cedar(self, value: Value, role: Role, min_confidence: str) -> str:
        listed = f"{cedar_set(_texts(value))}.contains(context.{self.key})"
        if role is Role.FORBID:
            return f"(context has {self.key} && {listed})"
        return f"(if context has {self.key} then {listed} else true)"

    def actual(self, value: Value, subject: DecisionInput, min_confidence: str) -> str:
        declared = getattr(subject.context, self.key)
        return declared if isinstance(declared, str) else "not declared"


Renderer: TypeAlias = Callable[["Fact", DecisionInput, str], str]


@dataclass(frozen=True)
class Fact(Spec):
    """A fact about the deployment (or the tenant), compared with ``test``:

    one_of: the fact is one of the listed values      glob: the id matches a pattern
    is: the fact equals true/false                     at_most: the number is <= the value
    any_of: the fact set shares a value with the list  all_of: every member is listed
    """

    key: str
    attr: str
    test: str
    parse: Parser
    label: str
    confidence: str | None = None  # attribute holding the claim; None: administrative state
    optional: bool = True  # absent when unknown (scalar); sets are always present
    entity: str = "resource"
    selector: bool = False
    render: Renderer | None = None
    folded: bool = False  # compare with the lower-case twin ``<attr>_folded`` (ids, licenses)

    def cedar(self, value: Value, role: Role, min_confidence: str) -> str:
        match = self._match(value)
        known = " && ".join(self._known(min_confidence))
        if not known:
            return match
        if role is Role.FORBID:
            return f"(if {known} then {match} else true)"
        return f"({known} && {match})"

    def _known(self, min_confidence: str) -> list[str]:
        """Clauses that hold when the fact is known well enough for this rule."""
        clauses = [f"{self.entity} has {self.attr}"] if self.optional else []
        if self.confidence and min_confidence == "verified":
            clauses.append(f'{self.entity}.{self.confidence} == "verified"')
        elif self.confidence and not self.optional:
            clauses.append(f'{self.entity}.{self.confidence} != "unknown"')
        return clauses

    def _match(self, value: Value) -> str:
        ref = f"{self.entity}.{self.attr}{'_folded' if self.folded else ''}"
        if self.test == "is":
            return f"{ref} == {'true' if value is True else 'false'}"
        if self.test == "at_most":
            return f"{ref} <= {value}"
        values = _texts(value)
        if self.test == "glob":
            return _either([f"{ref} like {cedar_str(v)}" for v in values])
        if self.test == "any_of":
            return f"{ref}.containsAny({cedar_set(values)})"
        if self.test == "all_of":
            return f"{cedar_set(values)}.containsAll({ref})"
        if len(values) == 1:
            return f"{ref} == {cedar_str(values[0])}"
        return f"{cedar_set(values)}.contains({ref})"

    def expected(self, value: Value) -> str:
        if self.test == "at_most":
            return f"at most {value}"
        if isinstance(value, tuple) and len(value) > 1:
            quantifier = {"all_of": "only", "any_of": "any of"}.get(self.test, "one of")
            return f"{quantifier} {_render(value)}"
        return _render(value)

    def actual(self, value: Value, subject: DecisionInput, min_confidence: str) -> str:
        if self.render is not None:
            return self.render(self, subject, min_confidence)
        attrs = subject.attrs(self.entity)
        return _render(attrs.get(self.attr)) + self.claim_note(attrs, min_confidence)

    def claim_note(self, attrs: Mapping[str, Any], min_confidence: str) -> str:
        """A note such as ``, not all known`` when the claim does not meet the rule's bar."""
        claim = attrs.get(self.confidence) if self.confidence else None
        if claim == "unknown" and not self.optional:
            return ", not all known"
        if claim not in (None, "verified") and min_confidence == "verified":
            return f", claim only {claim}"
        return ""


@dataclass(frozen=True)
class MinConfidence(Spec):
    """``min_confidence: verified`` on its own: every main fact of the deployment is verified."""

    key: str = "min_confidence"
    selector: bool = False
    label: str = "weakest claim behind the deployment's facts"
    parse: Parser = CONFIDENCE_NAMES

    def cedar(self, value: Value, role: Role, min_confidence: str) -> str:
        if _texts(value) == ("verified",):
            enough = 'resource.min_confidence == "verified"'
        else:
            enough = 'resource.min_confidence != "unknown"'
        return enough if role is Role.PERMIT else f"!({enough})"

    def expected(self, value: Value) -> str:
        return f"at least {_texts(value)[0]}"

    def actual(self, value: Value, subject: DecisionInput, min_confidence: str) -> str:
        return str(subject.facts.attrs["min_confidence"])


# ---------------------------------------------------------------------------- renderers


def lineage_countries(fact: Fact, subject: DecisionInput, min_confidence: str) -> str:
    """Developer countries over the served model and its ancestors: ``deepseek: CN, meta: US``."""
    parts: dict[str, None] = {}
    for member in subject.facts.lineage:
        if not member.in_registry:
            parts[f"{member.model_id}: not in the registry"] = None
        elif member.developer_id is None:
            parts[f"{member.model_id}: developer unknown"] = None
        else:
            parts[f"{member.developer_id}: {member.country or 'unknown'}"] = None
    attrs = subject.facts.attrs
    complete = attrs.get(fact.confidence or "") != "unknown"  # else the parts say what is not
    return ", ".join(parts) + (fact.claim_note(attrs, min_confidence) if complete else "")


def with_licenses(fact: Fact, subject: DecisionInput, min_confidence: str) -> str:
    """A license term and the licenses behind it: ``no: LicenseRef-Llama-3.1-Community, MIT``."""
    attrs = subject.facts.attrs
    licenses = _render(attrs.get("effective_licenses")) + fact.claim_note(attrs, min_confidence)
    return f"{_render(attrs.get(fact.attr))}: {licenses}"
