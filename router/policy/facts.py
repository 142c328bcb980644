"""What policies know about one deployment: its own facts, its model's, and its lineage's.

Computed once per registry version from the frozen snapshot; the result is exactly the
attribute record of the Cedar ``Deployment`` entity (see ``schema.DEPLOYMENT_ATTRIBUTES``), plus
the per-ancestor detail that reasons quote ("deepseek: CN").

The conventions the whole fail-closed story rests on:

- A fact is **known** when it has a value *and* a claim of at least ``reported``. A fact with no
  value, or whose claim is ``unknown`` (e.g. no claim at all), is unknown.
- Known scalar facts become attributes; unknown ones are left out (Cedar has no null).
- Set facts hold the known members; their ``*_confidence`` is ``unknown`` when any member is
  unknown, so "no CN in the set" is never read as "not CN" for an incomplete lineage.
- Facts that combine several licenses or developers use three-valued logic: "every license is
  OSI-approved" is false as soon as one known license is not, true only when all are known and
  approved, and unknown otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

from registry.lineage import EffectiveProvenance, effective_provenance
from registry.snapshot import (
    CONFIDENCE_ORDER,
    WEIGHTS,
    Claimed,
    Confidence,
    DeploymentSnap,
    LicenseSnap,
    ModelSnap,
    OrgSnap,
    RegistrySnapshot,
)
from registry.vocabulary import fold
from router.policy.schema import KNOWN_CONFIDENCES

CedarValue: TypeAlias = str | bool | int | tuple[str, ...]
Attrs: TypeAlias = dict[str, CedarValue]

_BY_RANK: tuple[Confidence, ...] = ("unknown", "reported", "verified")

# The groups `min_confidence` summarises: the facts most rules are about.
MIN_CONFIDENCE_OVER = (
    "ancestor_countries_confidence",
    "license_confidence",
    "location_confidence",
    "hosting_confidence",
    "data_handling_confidence",
    "operator_country_confidence",
)


@dataclass(frozen=True, slots=True)
class LineageMember:
    """One model of a deployment's lineage (the served model first), as far as it is known."""

    model_id: str
    in_registry: bool
    developer_id: str | None  # known developer organization
    country: str | None  # known HQ country of that developer
    country_confidence: Confidence
    license_id: str | None  # known declared license
    license_confidence: Confidence


@dataclass(frozen=True, slots=True)
class DeploymentFacts:
    """The Cedar attributes of one deployment, and the lineage behind them."""

    deployment_id: str
    attrs: Mapping[str, CedarValue]
    lineage: tuple[LineageMember, ...]
    # Why the deployment is blocked, when its review status's claim says (e.g. its weights
    # failed verification): quoted by ``baseline-blocked``'s reason, never tested by a rule.
    blocked_because: str | None = None


def weakest(confidences: Iterable[Confidence]) -> Confidence:
    """The weakest of some claims; ``unknown`` when there are none."""
    ranks = [CONFIDENCE_ORDER[c] for c in confidences]
    return _BY_RANK[min(ranks)] if ranks else "unknown"


def known(entity: Claimed, fact: str) -> bool:
    """True when ``fact`` has a value and a claim of at least ``reported``."""
    return entity.confidence(fact) in KNOWN_CONFIDENCES


def all_true(values: Iterable[bool | None]) -> bool | None:
    """Three-valued AND: False if any is False, None if any is unknown, else True."""
    seen = list(values)
    if False in seen:
        return False
    return None if None in seen else True


def any_true(values: Iterable[bool | None]) -> bool | None:
    """Three-valued OR: True if any is True, None if any is unknown, else False."""
    seen = list(values)
    if True in seen:
        return True
    return None if None in seen else False


def most_restrictive_commercial_use(values: Iterable[str | None]) -> str | None:
    """``no`` beats unknown beats ``conditional`` beats ``yes``."""
    seen = list(values)
    if "no" in seen:
        return "no"
    if None in seen or not seen:
        return None
    return "conditional" if "conditional" in seen else "yes"


def deployment_facts(snapshot: RegistrySnapshot, deployment: DeploymentSnap) -> DeploymentFacts:
    """Everything a policy may read about ``deployment``, with unknown facts left out."""
    model = snapshot.models.get(deployment.model_id)
    provenance = effective_provenance(
        snapshot.models, snapshot.orgs, snapshot.licenses, deployment.model_id
    )
    lineage = tuple(
        lineage_member(snapshot, model_id)
        for model_id in (deployment.model_id, *provenance.ancestors)
    )
    attrs: Attrs = {}
    attrs.update(_deployment_attrs(deployment, snapshot.orgs))
    attrs.update(_model_attrs(model, snapshot.orgs))
    attrs.update(_lineage_attrs(provenance, lineage, snapshot.orgs))
    attrs.update(_license_attrs(provenance, lineage, snapshot.licenses))
    models = (deployment.model_id, *provenance.ancestors)
    attrs.update(_training_attrs(snapshot, models))
    attrs.update(_restriction_attrs(snapshot, models, deployment.id))
    attrs.update(_control_attrs(snapshot, deployment, lineage))
    attrs["min_confidence"] = weakest(_confidence(attrs, name) for name in MIN_CONFIDENCE_OVER)
    return DeploymentFacts(deployment.id, attrs, lineage, _blocked_because(deployment))


def _blocked_because(deployment: DeploymentSnap) -> str | None:
    claim = deployment.claims.get("review_status")  # a claim of its own, not the entity's
    return claim.source if claim is not None and deployment.review_status == "blocked" else None


def lineage_member(snapshot: RegistrySnapshot, model_id: str) -> LineageMember:
    """What is known about one model of a lineage: developer, its country, license."""
    model = snapshot.models.get(model_id)
    if model is None:
        return LineageMember(model_id, False, None, None, "unknown", None, "unknown")
    developer = model.developer_id if known(model, "developer_id") else None
    country, confidence = org_country(snapshot.orgs, model, "developer_id")
    license_id = model.license_id if known(model, "license_id") else None
    license_confidence = model.confidence("license_id")
    return LineageMember(
        model_id, True, developer, country, confidence, license_id, license_confidence
    )


def org_country(
    orgs: Mapping[str, OrgSnap], entity: Claimed, org_field: str
) -> tuple[str | None, Confidence]:
    """HQ country of the organization ``entity.<org_field>`` names, and the weaker of both claims.

    Knowing the country needs both claims: who the organization is, and where it is."""
    org_id = getattr(entity, org_field, None)
    org = orgs.get(org_id) if isinstance(org_id, str) else None
    if org is None:
        return None, "unknown"
    confidence = weakest((entity.confidence(org_field), org.confidence("hq_country")))
    return (org.hq_country if confidence in KNOWN_CONFIDENCES else None), confidence


def _put_known(attrs: Attrs, entity: Claimed, fact: str, name: str | None = None) -> None:
    value = getattr(entity, fact)
    if known(entity, fact) and isinstance(value, str | bool | int):
        attrs[name or fact] = value


def _group(attrs: Attrs, entity: Claimed, facts: tuple[str, ...], confidence_name: str) -> None:
    """Put the known facts of a group, and the weakest claim among those that have a value."""
    for fact in facts:
        _put_known(attrs, entity, fact)
    with_value = [entity.confidence(f) for f in facts if getattr(entity, f) is not None]
    attrs[confidence_name] = weakest(with_value)


def _deployment_attrs(deployment: DeploymentSnap, orgs: Mapping[str, OrgSnap]) -> Attrs:
    attrs: Attrs = {
        "id": deployment.id,
        "id_folded": fold(deployment.id),
        "model": deployment.model_id,
        "model_folded": fold(deployment.model_id),
        "adapter": deployment.adapter,
        "enabled": deployment.enabled,
        "review_status": deployment.review_status,
    }
    _group(attrs, deployment, ("hosting",), "hosting_confidence")
    location = ("location_country", "location_region", "location_eea")
    _group(attrs, deployment, location, "location_confidence")
    _group(attrs, deployment, ("hardware_vendor", "accelerator"), "hardware_confidence")
    handling = ("retention_days", "zero_data_retention", "trains_on_inputs")
    _group(attrs, deployment, handling, "data_handling_confidence")
    _put_known(attrs, deployment, "operator_id", "operator")
    _put_org_country(attrs, orgs, deployment, "operator_id", "operator_country")
    return attrs


def _put_org_country(
    attrs: Attrs, orgs: Mapping[str, OrgSnap], entity: Claimed, org_field: str, name: str
) -> None:
    country, confidence = org_country(orgs, entity, org_field)
    if country is not None:
        attrs[name] = country
    attrs[f"{name}_confidence"] = confidence


def _model_attrs(model: ModelSnap | None, orgs: Mapping[str, OrgSnap]) -> Attrs:
    if model is None:  # a deployment of a model the registry does not have: nothing is known
        return {
            "model_review_status": "unknown",
            "developer_country_confidence": "unknown",
            "publisher_country_confidence": "unknown",
        }
    attrs: Attrs = {"model_review_status": model.review_status}
    if model.family is not None:
        attrs["model_family"] = fold(model.family)
    _put_known(attrs, model, "license_id", "declared_license")
    _put_known(attrs, model, "developer_id", "developer")
    _put_org_country(attrs, orgs, model, "developer_id", "developer_country")
    _put_known(attrs, model, "publisher_id", "publisher")
    _put_org_country(attrs, orgs, model, "publisher_id", "publisher_country")
    return attrs


def _lineage_attrs(
    provenance: EffectiveProvenance, lineage: tuple[LineageMember, ...], orgs: Mapping[str, OrgSnap]
) -> Attrs:
    developers = [orgs.get(m.developer_id) if m.developer_id else None for m in lineage]
    tag_sets = [
        frozenset(map(fold, o.jurisdiction_tags))
        for o in developers
        if o and known(o, "jurisdiction_tags")
    ]
    affiliations = [
        org.state_affiliated if org and known(org, "state_affiliated") else None
        for org in developers
    ]
    attrs: Attrs = {
        "ancestor_ids": tuple(sorted(provenance.ancestors)),
        "lineage_complete": provenance.complete and _all_known(lineage),
        "ancestor_developer_countries": tuple(sorted({m.country for m in lineage if m.country})),
        "ancestor_countries_confidence": weakest(m.country_confidence for m in lineage),
        "jurisdiction_tags": _union(tag_sets),
        "governance_confidence": weakest(
            org.confidence("jurisdiction_tags") if org else "unknown" for org in developers
        ),
    }
    if (affiliated := any_true(affiliations)) is not None:
        attrs["state_affiliated"] = affiliated
    return attrs


def _license_attrs(
    provenance: EffectiveProvenance,
    lineage: tuple[LineageMember, ...],
    licenses: Mapping[str, LicenseSnap],
) -> Attrs:
    """Effective licenses (declared + inherited, from known claims) and their combined terms.

    A lineage member whose license is unknown might pass its terms on, so it makes every
    combined term unknown unless a known license already decides it (e.g. one non-OSI license)."""
    known_ids = {member.license_id for member in lineage if member.license_id in licenses}
    effective = [licenses[i] for i in sorted(provenance.licenses) if i in known_ids]
    some_unknown = any(member.license_id not in licenses for member in lineage)
    confidence = weakest(
        [lic.claim.confidence for lic in effective]
        + [member.license_confidence for member in lineage]
        + (["unknown"] if some_unknown else [])
    )
    unknown_member: list[None] = [None] if some_unknown else []
    osi = [_known_bool(lic, "osi_approved") for lic in effective] + unknown_member
    open_weights = [_known_bool(lic, "open_weights") for lic in effective] + unknown_member
    commercial = [
        lic.commercial_use if known(lic, "commercial_use") else None for lic in effective
    ] + unknown_member
    attrs: Attrs = {
        "effective_licenses": tuple(lic.id for lic in effective),
        "effective_licenses_folded": tuple(sorted({fold(lic.id) for lic in effective})),
        "license_confidence": confidence,
        "license_use_restrictions": _union(lic.use_restrictions for lic in effective),
        "license_geographic_restrictions": _union(lic.geographic_restrictions for lic in effective),
    }
    combined = {
        "license_osi_approved": all_true(osi),
        "license_osi_any": any_true(osi),
        "license_open_weights": all_true(open_weights),
        "license_commercial_use": most_restrictive_commercial_use(commercial),
    }
    attrs.update({name: value for name, value in combined.items() if value is not None})
    return attrs


# Model facts that are sets: (fact of ModelSnap, its values, own attribute, lineage attribute).
_MODEL_SETS: tuple[tuple[str, Callable[[ModelSnap], Iterable[str]], str, str], ...] = (
    (
        "training_hardware",
        lambda m: m.training_hardware_vendors,
        "training_hardware_vendors",
        "ancestor_training_hardware_vendors",
    ),
    (
        "training_hardware",
        lambda m: (p.accelerator for p in m.training_hardware or () if p.accelerator),
        "training_accelerators",
        "ancestor_training_accelerators",
    ),
    (
        "training_data_countries",
        lambda m: m.training_data_countries or (),
        "training_data_countries",
        "ancestor_training_data_countries",
    ),
)
_SET_CONFIDENCE = {
    "training_hardware": ("training_hardware_confidence", "ancestor_training_hardware_confidence"),
    "training_data_countries": ("training_data_confidence", "ancestor_training_data_confidence"),
}


def _training_attrs(snapshot: RegistrySnapshot, model_ids: tuple[str, ...]) -> Attrs:
    """Training hardware and data origin: the served model's own, and along its lineage (a
    fine-tune runs on its base's pre-training). Known members only; the confidence attributes
    say whether the set is complete (``unknown`` when any model's fact is not stated)."""
    models = [snapshot.models.get(i) for i in model_ids]
    attrs: Attrs = {}
    for fact, values, own, along in _MODEL_SETS:
        known_sets = [frozenset(values(m)) if m and known(m, fact) else frozenset() for m in models]
        attrs[own] = _union(known_sets[:1])
        attrs[along] = _union(known_sets)
    for fact, (own, along) in _SET_CONFIDENCE.items():
        claims = [m.confidence(fact) if m else "unknown" for m in models]
        attrs[own] = claims[0]
        attrs[along] = weakest(claims)
    return attrs


def _restriction_attrs(
    snapshot: RegistrySnapshot, model_ids: tuple[str, ...], deployment_id: str
) -> Attrs:
    """Behavioural restrictions that apply to this deployment: those observed on the weights of
    the model or an ancestor, on this deployment itself, or where the evidence does not say.
    Evidence gathered on another deployment (a first-party API's own filter) does not apply."""
    models = [snapshot.models.get(i) for i in model_ids]
    restrictions = [
        item
        for model in models
        if model and known(model, "behavioral_restrictions")
        for item in model.behavioral_restrictions
    ]
    on_weights = {r.topic for r in restrictions if r.observed_on == WEIGHTS}
    applying = {r.topic for r in restrictions if r.observed_on in (WEIGHTS, deployment_id, None)}
    claims = [m.confidence("behavioral_restrictions") if m else "unknown" for m in models]
    return {
        "restricted_topics": tuple(sorted(applying)),
        "restricted_topics_on_weights": tuple(sorted(on_weights)),
        "behavior_confidence": weakest(claims),
    }


def _control_attrs(
    snapshot: RegistrySnapshot, deployment: DeploymentSnap, lineage: tuple[LineageMember, ...]
) -> Attrs:
    """Governance along control chains: who controls each lineage developer and the operator,
    the lists any of them is on, and whether the operator belongs to the developer's group
    (a first-party service)."""
    developers = [snapshot.control_chain(m.developer_id) if m.developer_id else () for m in lineage]
    operator_id = deployment.operator_id if known(deployment, "operator_id") else None
    operator = snapshot.control_chain(operator_id)
    attrs: Attrs = {
        "developer_control_chain": _union(frozenset(map(fold, chain)) for chain in developers),
        "developer_listings": _listings(snapshot, [o for chain in developers for o in chain]),
        "developer_listings_confidence": _listings_confidence(snapshot, developers),
        "operator_listings": _listings(snapshot, operator),
        "operator_listings_confidence": _listings_confidence(snapshot, [operator]),
    }
    same = snapshot.same_group(operator_id, lineage[0].developer_id)
    if same is not None:
        attrs["first_party"] = same
    return attrs


def _listings(snapshot: RegistrySnapshot, org_ids: Iterable[str]) -> tuple[str, ...]:
    orgs = [snapshot.orgs[i] for i in org_ids]
    return _union(frozenset(item.list for item in o.listings) for o in orgs if known(o, "listings"))


def _listings_confidence(
    snapshot: RegistrySnapshot, chains: Iterable[tuple[str, ...]]
) -> Confidence:
    """Weakest claim behind the listings of every organization of these chains; ``unknown``
    when a chain is empty (an organization not known)."""
    claims: list[Confidence] = []
    for chain in chains:
        claims += [snapshot.orgs[o].confidence("listings") for o in chain] or ["unknown"]
    return weakest(claims)


def _union(sets: Iterable[frozenset[str]]) -> tuple[str, ...]:
    return tuple(sorted(frozenset[str]().union(*sets)))


def _all_known(lineage: tuple[LineageMember, ...]) -> bool:
    """Every member's developer country and license is backed by a claim."""
    return all(m.country is not None and m.license_id is not None for m in lineage)


def _known_bool(entity: Claimed, fact: str) -> bool | None:
    value = getattr(entity, fact)
    return value if isinstance(value, bool) and known(entity, fact) else None


def _confidence(attrs: Mapping[str, CedarValue], name: str) -> Confidence:
    value = attrs[name]
    if value == "verified":
        return "verified"
    return "reported" if value == "reported" else "unknown"
