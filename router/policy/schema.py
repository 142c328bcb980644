"""The Cedar schema policies are written against: who asks (principal), to do what (action),
with which deployment (resource), under which request attributes (context).

    principal  ProvenanceRouter::Tenant::"<tenant id>"
    action     ProvenanceRouter::Action::"infer" | ProvenanceRouter::Action::"embed"
    resource   ProvenanceRouter::Deployment::"<deployment id>"   (its model, lineage, orgs and
               licenses flattened into attributes, see ``DEPLOYMENT_ATTRIBUTES``)
    context    classification, purpose?, caller_region?

How "unknown" is represented (Cedar has no null):

- A scalar fact is present only when it is *known*: it has a value and a claim of at least
  ``reported``. Otherwise the attribute is absent (``?`` in the schema), so a policy has to test
  ``resource has location_eea`` before reading it; the schema validator rejects a policy that
  forgets, and an unknown fact can never be mistaken for a value.
- A set-valued fact (lineage countries, effective licenses, ...) is always present and lists
  what is known; its ``*_confidence`` attribute is ``"unknown"`` when any member is unknown.
- ``*_confidence`` attributes hold the weakest claim behind a group of facts:
  ``"unknown"`` < ``"reported"`` < ``"verified"``.

The attribute tables below are the single source of truth: ``CEDAR_SCHEMA`` is generated from
them (with each meaning as a comment) and ``docs/policies.md`` documents each of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import cedarpy

NAMESPACE = "ProvenanceRouter"
TENANT_TYPE = f"{NAMESPACE}::Tenant"
DEPLOYMENT_TYPE = f"{NAMESPACE}::Deployment"
ACTION_TYPE = f"{NAMESPACE}::Action"

ACTIONS = ("infer", "embed")
CLASSIFICATIONS = ("public", "internal", "confidential", "restricted")  # least to most sensitive
CONFIDENCES = ("unknown", "reported", "verified")  # weakest to strongest
KNOWN_CONFIDENCES = frozenset({"reported", "verified"})
HOSTINGS = ("on_prem", "private_cloud", "cloud_tenant", "third_party_api")
REVIEW_STATUSES = ("approved", "under_review", "blocked")
COMMERCIAL_USE = ("yes", "conditional", "no")


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute of a Cedar entity or of the request context."""

    name: str
    cedar_type: str  # String | Bool | Long | Set<String>
    optional: bool  # absent when unknown; policies must test `has` first
    meaning: str


def _req(name: str, cedar_type: str, meaning: str) -> Attribute:
    return Attribute(name, cedar_type, optional=False, meaning=meaning)


def _opt(name: str, cedar_type: str, meaning: str) -> Attribute:
    return Attribute(name, cedar_type, optional=True, meaning=meaning)


TENANT_ATTRIBUTES: tuple[Attribute, ...] = (
    _req("id", "String", "tenant id"),
    _req("id_folded", "String", "tenant id in lower case (what `tenant:` rules compare)"),
    _opt("region", "String", "tenant region, e.g. EU; absent when not set"),
    _req("default_classification", "String", "classification applied when a request sends none"),
    _req("attributes", "Set<String>", 'tenant attributes as "key=value" strings'),
)

DEPLOYMENT_ATTRIBUTES: tuple[Attribute, ...] = (
    # The deployment: what the router calls, where, on what, keeping what.
    _req("id", "String", "deployment id"),
    _req("id_folded", "String", "deployment id in lower case (what `deployment:` rules compare)"),
    _req("model", "String", "model id (org/name) the deployment serves"),
    _req("model_folded", "String", "model id in lower case (what `model:` rules compare)"),
    _req("adapter", "String", "backend protocol: openai | litellm | local"),
    _req("enabled", "Bool", "false when an admin disabled the deployment"),
    _req("review_status", "String", "deployment review: approved | under_review | blocked"),
    _opt("hosting", "String", "on_prem | private_cloud | cloud_tenant | third_party_api"),
    _req("hosting_confidence", "String", "claim behind hosting"),
    _opt("location_country", "String", "ISO country of the compute that sees the prompt"),
    _opt("location_region", "String", "provider region, e.g. eu-central"),
    _opt("location_eea", "Bool", "true when that compute is in the European Economic Area"),
    _req("location_confidence", "String", "weakest claim behind the location facts"),
    _opt("hardware_vendor", "String", "serving hardware vendor, e.g. nvidia, huawei"),
    _opt("accelerator", "String", "serving accelerator, e.g. h100, ascend-910b"),
    _req("hardware_confidence", "String", "weakest claim behind the serving hardware facts"),
    _opt("retention_days", "Long", "days the operator keeps prompts and outputs"),
    _opt("zero_data_retention", "Bool", "true when the operator keeps nothing"),
    _opt("trains_on_inputs", "Bool", "true when the operator may train on prompts"),
    _req("data_handling_confidence", "String", "weakest claim behind the data-handling facts"),
    _opt("operator", "String", "organization operating the endpoint"),
    _opt("operator_country", "String", "HQ country of that operator (sovereignty)"),
    _req("operator_country_confidence", "String", "claim behind operator_country"),
    # The model, as its card says.
    _req("model_review_status", "String", "approved | under_review | blocked | unknown"),
    _opt("model_family", "String", "model family in lower case, e.g. llama-3.1"),
    _opt("declared_license", "String", "license id on the model card (not the effective one)"),
    _opt("developer", "String", "organization that developed the weights"),
    _opt("developer_country", "String", "HQ country of the model's own developer"),
    _req("developer_country_confidence", "String", "claim behind developer_country"),
    _opt("publisher", "String", "organization that published the weights"),
    _opt("publisher_country", "String", "HQ country of the publisher"),
    _req("publisher_country_confidence", "String", "claim behind publisher_country"),
    # Effective provenance: the model and every model it derives from.
    _req("ancestor_ids", "Set<String>", "every ancestor model id (the model itself excluded)"),
    _req("lineage_complete", "Bool", "false when anything in the lineage is unknown"),
    _req("ancestor_developer_countries", "Set<String>", "developer countries, model + ancestors"),
    _req("ancestor_countries_confidence", "String", "weakest claim behind those countries"),
    _req("jurisdiction_tags", "Set<String>", "tags of every lineage developer, lower case"),
    _opt("state_affiliated", "Bool", "any lineage developer state-affiliated"),
    _req("governance_confidence", "String", "claim behind lineage governance"),
    # Training: on what hardware, from which countries' data (own, and along the lineage).
    _req("training_hardware_vendors", "Set<String>", "vendors of the model's training hardware"),
    _req("training_accelerators", "Set<String>", "accelerators of the model's training hardware"),
    _req("training_hardware_confidence", "String", "claim behind them; unknown if not stated"),
    _req("ancestor_training_hardware_vendors", "Set<String>", "the same, model + ancestors"),
    _req("ancestor_training_accelerators", "Set<String>", "accelerators, model + ancestors"),
    _req("ancestor_training_hardware_confidence", "String", "weakest claim along the lineage"),
    _req("training_data_countries", "Set<String>", "countries the training data comes from"),
    _req("training_data_confidence", "String", "claim behind them; unknown if not stated"),
    _req("ancestor_training_data_countries", "Set<String>", "the same, model + ancestors"),
    _req("ancestor_training_data_confidence", "String", "weakest claim along the lineage"),
    # Behavioural evidence: topics the weights (or this service) decline or distort.
    _req("restricted_topics", "Set<String>", "topics restricted on the weights, here, or unsaid"),
    _req("restricted_topics_on_weights", "Set<String>", "topics observed on the weights"),
    _req("behavior_confidence", "String", "weakest claim behind the restriction lists"),
    # Control: who controls the developers and the operator, the lists they are on.
    _req("developer_control_chain", "Set<String>", "lineage developers and their parents"),
    _req("developer_listings", "Set<String>", "lists any of those organizations is on"),
    _req("developer_listings_confidence", "String", "weakest claim behind those listings"),
    _req("operator_listings", "Set<String>", "lists the operator or its parents are on"),
    _req("operator_listings_confidence", "String", "weakest claim behind those listings"),
    _opt("first_party", "Bool", "operator and the developer share a control chain (same group)"),
    # Effective licenses: the declared license plus every inherited ancestor license.
    _req("effective_licenses", "Set<String>", "known licenses that apply to the weights"),
    _req("effective_licenses_folded", "Set<String>", "the same in lower case (what rules compare)"),
    _req("license_confidence", "String", "weakest claim behind them"),
    _opt("license_osi_approved", "Bool", "every effective license OSI"),
    _opt("license_osi_any", "Bool", "some effective license OSI"),
    _opt("license_open_weights", "Bool", "every one open weights"),
    _opt("license_commercial_use", "String", "strictest: yes | conditional | no"),
    _req("license_use_restrictions", "Set<String>", "use restrictions, any license"),
    _req("license_geographic_restrictions", "Set<String>", "geographic restrictions, any"),
    # One number for "how sure are we of all of it".
    _req("min_confidence", "String", "weakest of the main groups"),
)

CONTEXT_ATTRIBUTES: tuple[Attribute, ...] = (
    _req("classification", "String", "public..restricted, >= tenant default"),
    _opt("purpose", "String", "declared purpose of the request, when the caller sends one"),
    _opt("caller_region", "String", "region the caller says it is in, when it sends one"),
)


def _record(attributes: tuple[Attribute, ...], indent: str) -> str:
    lines = [
        f"{indent}{a.name}{'?' if a.optional else ''}: {a.cedar_type}, // {a.meaning}"
        for a in attributes
    ]
    return "\n".join(lines)


def _schema_text() -> str:
    actions = ", ".join(ACTIONS)
    return (
        f"namespace {NAMESPACE} {{\n"
        f"  entity Tenant = {{\n{_record(TENANT_ATTRIBUTES, '    ')}\n  }};\n"
        f"  entity Deployment = {{\n{_record(DEPLOYMENT_ATTRIBUTES, '    ')}\n  }};\n"
        f"  type RequestContext = {{\n{_record(CONTEXT_ATTRIBUTES, '    ')}\n  }};\n"
        f"  action {actions} appliesTo {{\n"
        "    principal: [Tenant],\n    resource: [Deployment],\n    context: RequestContext,\n"
        "  };\n}\n"
    )


CEDAR_SCHEMA: str = _schema_text()
"""The schema in Cedar's human-readable syntax; every policy is validated against it."""


@cache
def parsed_schema() -> cedarpy.Schema:
    """The schema, parsed once per process (immutable)."""
    return cedarpy.Schema.from_str(CEDAR_SCHEMA)


def classification_rank(classification: str) -> int:
    """0 = public ... 3 = restricted; an unrecognised label ranks restricted (fail closed)."""
    if classification in CLASSIFICATIONS:
        return CLASSIFICATIONS.index(classification)
    return len(CLASSIFICATIONS) - 1
