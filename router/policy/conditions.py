"""The conditions a YAML rule may use and what each means (the kinds behind them: ``specs``).

Every condition is a predicate about a request. Two kinds:

- **selectors** pick the requests a rule is about: ``tenant``, ``tenant_region``,
  ``tenant_attribute``, ``action``, ``classification``, ``purpose``, ``caller_region``;
- **facts** test the deployment: its model, lineage, organizations, licenses, location,
  hardware and data handling (see ``CONDITIONS`` for the full list and each meaning).

Where a condition sits decides what an *unknown* fact means (``Role``):

- ``Role.FORBID`` (a ``deny`` rule, or the selector part of ``allow_only``): an unknown fact
  **counts as a match**, so the forbid fires. ``deny: {developer_country_any_ancestor: [CN]}``
  also denies a model whose lineage has a developer of unknown country.
- ``Role.PERMIT`` (``allow``, ``allow_unreviewed``, and the requirements of ``allow_only``): an
  unknown fact **never satisfies** the condition.

Either way, not knowing something never makes a request more permitted.

``min_confidence: verified`` raises the bar for the facts of one rule: a fact whose claim is
only ``reported`` then counts as unknown. In a rule with no other fact it is a fact of its own:
"every main fact of the deployment is at least verified" (the ``min_confidence`` attribute).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router.policy.schema import COMMERCIAL_USE, HOSTINGS, REVIEW_STATUSES
from router.policy.specs import (
    ACCELERATORS,
    COUNTRIES,
    HARDWARE_VENDORS,
    IDS,
    LICENSES,
    NAMED_LISTS,
    NAMES,
    PURPOSES,
    REGIONS,
    TAGS,
    TOPICS,
    ActionIn,
    ClassificationIn,
    DecisionInput,
    DeclaredContext,
    Fact,
    MinConfidence,
    Parser,
    Role,
    Spec,
    TenantAttribute,
    TenantGlob,
    Value,
    boolean,
    days,
    lineage_countries,
    with_licenses,
    words,
)

# ---------------------------------------------------------------------------- the catalog


def _fact(key: str, attr: str, test: str, parse: Parser, label: str, **kw: Any) -> Fact:
    return Fact(key=key, attr=attr, test=test, parse=parse, label=label, **kw)


_LINEAGE = {
    "confidence": "ancestor_countries_confidence",
    "optional": False,
    "render": lineage_countries,
}
_TRAINING = {"confidence": "training_hardware_confidence", "optional": False}
_TRAINING_LINEAGE = {"confidence": "ancestor_training_hardware_confidence", "optional": False}
_BEHAVIOR = {"confidence": "behavior_confidence", "optional": False}
_LICENSE_SET = {"confidence": "license_confidence", "optional": False}
_LICENSE_TERM = {"confidence": "license_confidence", "render": with_licenses}

CONDITIONS: Mapping[str, Spec] = {
    spec.key: spec
    for spec in (
        # Selectors: which requests a rule is about.
        TenantGlob(),
        _fact(
            "tenant_region",
            "region",
            "one_of",
            REGIONS,
            "tenant region",
            entity="principal",
            selector=True,
        ),
        TenantAttribute(),
        ActionIn(),
        ClassificationIn(),
        DeclaredContext(key="purpose", label="purpose", parse=PURPOSES),
        DeclaredContext(key="caller_region", label="caller region", parse=REGIONS),
        # Provenance: who developed the weights, and everything they derive from.
        _fact(
            "developer_country",
            "developer_country",
            "one_of",
            COUNTRIES,
            "developer country",
            confidence="developer_country_confidence",
        ),
        _fact(
            "developer_country_any_ancestor",
            "ancestor_developer_countries",
            "any_of",
            COUNTRIES,
            "developer country of the model or an ancestor",
            **_LINEAGE,
        ),
        _fact(
            "developer_country_all_ancestors",
            "ancestor_developer_countries",
            "all_of",
            COUNTRIES,
            "developer countries of the model and every ancestor",
            **_LINEAGE,
        ),
        _fact(
            "publisher_country",
            "publisher_country",
            "one_of",
            COUNTRIES,
            "publisher country",
            confidence="publisher_country_confidence",
        ),
        _fact(
            "jurisdiction_tag",
            "jurisdiction_tags",
            "any_of",
            TAGS,
            "jurisdiction tags of the lineage developers",
            confidence="governance_confidence",
            optional=False,
        ),
        _fact(
            "state_affiliated",
            "state_affiliated",
            "is",
            boolean,
            "a lineage developer is state-affiliated",
            confidence="governance_confidence",
        ),
        _fact(
            "developer_listed_on",
            "developer_listings",
            "any_of",
            NAMED_LISTS,
            "lists a lineage developer or its parent is on",
            confidence="developer_listings_confidence",
            optional=False,
        ),
        _fact(
            "developer_controlled_by",
            "developer_control_chain",
            "any_of",
            NAMES,
            "lineage developers and the organizations controlling them",
            confidence="ancestor_countries_confidence",
            optional=False,
        ),
        # Training: on what, from where (own facts, and along the lineage).
        _fact(
            "training_hardware_vendor",
            "training_hardware_vendors",
            "any_of",
            HARDWARE_VENDORS,
            "training hardware vendors",
            **_TRAINING,
        ),
        _fact(
            "training_hardware_vendor_any_ancestor",
            "ancestor_training_hardware_vendors",
            "any_of",
            HARDWARE_VENDORS,
            "training hardware vendors of the model or an ancestor",
            **_TRAINING_LINEAGE,
        ),
        _fact(
            "training_accelerator",
            "training_accelerators",
            "any_of",
            ACCELERATORS,
            "training accelerators",
            **_TRAINING,
        ),
        _fact(
            "training_accelerator_any_ancestor",
            "ancestor_training_accelerators",
            "any_of",
            ACCELERATORS,
            "training accelerators of the model or an ancestor",
            **_TRAINING_LINEAGE,
        ),
        _fact(
            "training_data_country",
            "training_data_countries",
            "any_of",
            COUNTRIES,
            "training data countries",
            confidence="training_data_confidence",
            optional=False,
        ),
        _fact(
            "training_data_country_any_ancestor",
            "ancestor_training_data_countries",
            "any_of",
            COUNTRIES,
            "training data countries of the model or an ancestor",
            confidence="ancestor_training_data_confidence",
            optional=False,
        ),
        # Behavioural evidence.
        _fact(
            "restricted_topic",
            "restricted_topics",
            "any_of",
            TOPICS,
            "restricted topics (weights, this deployment, or not stated where)",
            **_BEHAVIOR,
        ),
        _fact(
            "restricted_topic_on_weights",
            "restricted_topics_on_weights",
            "any_of",
            TOPICS,
            "restricted topics observed on the weights",
            **_BEHAVIOR,
        ),
        # Licenses that really apply (declared + inherited along the lineage).
        _fact(
            "license",
            "effective_licenses",
            "all_of",
            LICENSES,
            "effective licenses",
            folded=True,
            **_LICENSE_SET,
        ),
        _fact(
            "license_any",
            "effective_licenses",
            "any_of",
            LICENSES,
            "effective licenses",
            folded=True,
            **_LICENSE_SET,
        ),
        _fact(
            "license_osi",
            "license_osi_approved",
            "is",
            boolean,
            "every effective license OSI-approved",
            **_LICENSE_TERM,
        ),
        _fact(
            "open_weights",
            "license_open_weights",
            "is",
            boolean,
            "every effective license open-weights",
            **_LICENSE_TERM,
        ),
        _fact(
            "commercial_use",
            "license_commercial_use",
            "one_of",
            words(COMMERCIAL_USE),
            "commercial use",
            **_LICENSE_TERM,
        ),
        # Residency and sovereignty: where the prompt is processed, by whom, on what.
        _fact(
            "location_country",
            "location_country",
            "one_of",
            COUNTRIES,
            "location country",
            confidence="location_confidence",
        ),
        _fact(
            "location_eea",
            "location_eea",
            "is",
            boolean,
            "hosted in the EEA",
            confidence="location_confidence",
        ),
        _fact(
            "operator_country",
            "operator_country",
            "one_of",
            COUNTRIES,
            "operator country",
            confidence="operator_country_confidence",
        ),
        _fact(
            "operator_listed_on",
            "operator_listings",
            "any_of",
            NAMED_LISTS,
            "lists the operator or its parent is on",
            confidence="operator_listings_confidence",
            optional=False,
        ),
        _fact(
            "first_party",
            "first_party",
            "is",
            boolean,
            "first-party service (operator in the developer's group)",
        ),
        _fact(
            "hosting",
            "hosting",
            "one_of",
            words(HOSTINGS),
            "hosting",
            confidence="hosting_confidence",
        ),
        _fact(
            "hardware_vendor",
            "hardware_vendor",
            "one_of",
            HARDWARE_VENDORS,
            "serving hardware vendor",
            confidence="hardware_confidence",
        ),
        _fact(
            "accelerator",
            "accelerator",
            "one_of",
            ACCELERATORS,
            "accelerator",
            confidence="hardware_confidence",
        ),
        # Data handling by the operator.
        _fact(
            "trains_on_inputs",
            "trains_on_inputs",
            "is",
            boolean,
            "operator trains on inputs",
            confidence="data_handling_confidence",
        ),
        _fact(
            "zero_data_retention",
            "zero_data_retention",
            "is",
            boolean,
            "zero data retention",
            confidence="data_handling_confidence",
        ),
        _fact(
            "retention_days_max",
            "retention_days",
            "at_most",
            days,
            "retention days",
            confidence="data_handling_confidence",
        ),
        # Administrative state: always known.
        _fact("model", "model", "glob", IDS, "model", optional=False, folded=True),
        _fact("model_family", "model_family", "one_of", NAMES, "model family"),
        _fact("deployment", "id", "glob", IDS, "deployment", optional=False, folded=True),
        _fact(
            "review_status",
            "model_review_status",
            "one_of",
            words(REVIEW_STATUSES),
            "model review status",
            optional=False,
        ),
        _fact(
            "deployment_review_status",
            "review_status",
            "one_of",
            words(REVIEW_STATUSES),
            "deployment review status",
            optional=False,
        ),
        MinConfidence(),
    )
}
"""Every condition key a YAML rule may use."""


@dataclass(frozen=True, slots=True)
class Condition:
    """One ``key: value`` of a rule, parsed, with the confidence bar of its rule."""

    spec: Spec
    value: Value
    min_confidence: str = "reported"

    @property
    def key(self) -> str:
        return self.spec.key

    def cedar(self, role: Role) -> str:
        return self.spec.cedar(self.value, role, self.min_confidence)

    def actual(self, subject: DecisionInput) -> str:
        return self.spec.actual(self.value, subject, self.min_confidence)

    def expected(self) -> str:
        return self.spec.expected(self.value)


def parse_condition(key: str, raw: object, min_confidence: str = "reported") -> Condition:
    """Parse ``key: raw``; raises KeyError for an unknown key, ValueError for a bad value."""
    spec = CONDITIONS.get(key)
    if spec is None:
        raise KeyError(key)
    return Condition(spec, spec.parse(raw), min_confidence)
