"""The provenance profile of a model or a deployment: one row per dimension, each listing the
facts behind it with their source, confidence and retrieval date. Pure over a snapshot.

    developer_jurisdiction   who developed the weights and every model they derive from
    license_terms            declared licenses along the lineage, and the effective set
    training                 training hardware, data origin and compute along the lineage
    serving                  the model's weights digest; where each deployment runs, who
                             operates it, on what, and its review status
    data_handling            what each operator keeps and whether it trains on inputs
    governance               state affiliation, control chain, listings of the organizations
    behavioral_evidence      topics declined or distorted, where observed, with the evidence
    evidence                 how many facts per confidence, and the oldest retrieval

No score: a reader sees the facts and where they come from, and decides. A fact with no value
is shown as ``unknown`` (confidence ``unknown``), never left out: a gap is information too. An
empty list under a claim (no listings, no restrictions) is a stated fact, shown as ``[]``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from registry.lineage import ancestors, effective_provenance
from registry.snapshot import (
    Claimed,
    Confidence,
    DeploymentSnap,
    ListingSnap,
    ModelSnap,
    RegistrySnapshot,
)
from registry.vocabulary import named_list_info

UNKNOWN = "unknown"


class ProfileSubjectNotFound(LookupError):
    """Neither a model nor a deployment has this id."""


@dataclass(frozen=True, slots=True)
class Fact:
    """One fact of one entity, with the claim behind it."""

    entity: str  # "model deepseek-ai/DeepSeek-V3", "organization deepseek", ...
    fact: str  # the registry field name
    value: Any  # JSON-ready; "unknown" when not stated
    confidence: Confidence
    source: str | None
    retrieved_at: str | None


@dataclass(frozen=True, slots=True)
class Row:
    dimension: str
    facts: tuple[Fact, ...]


@dataclass(frozen=True, slots=True)
class Profile:
    subject: str
    kind: str  # model | deployment
    model: str
    deployments: tuple[str, ...]
    registry_version: int
    rows: tuple[Row, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_profile(snapshot: RegistrySnapshot, subject: str, *, today: date) -> Profile:
    """The profile of the deployment or model ``subject`` (a deployment id wins: ids of the two
    kinds have different shapes, ``org/name`` for models)."""
    if subject in snapshot.deployments:
        deployments: tuple[DeploymentSnap, ...] = (snapshot.deployments[subject],)
        kind, model_id = "deployment", deployments[0].model_id
    elif subject in snapshot.models:
        kind, model_id = "model", subject
        deployments = tuple(sorted(snapshot.deployments_of(model_id), key=lambda d: d.id))
    else:
        raise ProfileSubjectNotFound(f"no model or deployment is called {subject!r}")
    lineage = (model_id, *ancestors(snapshot.models, model_id))
    rows = [
        Row("developer_jurisdiction", tuple(_jurisdiction(snapshot, lineage))),
        Row("license_terms", tuple(_licenses(snapshot, lineage))),
        Row("training", tuple(_training(snapshot, lineage))),
        Row("serving", (*_weights(snapshot, model_id), *_serving(snapshot, deployments))),
        Row("data_handling", tuple(_data_handling(deployments))),
        Row("governance", tuple(_governance(snapshot, lineage, deployments))),
        Row("behavioral_evidence", tuple(_behavior(snapshot, lineage))),
    ]
    rows.append(Row("evidence", _evidence([f for row in rows for f in row.facts], today)))
    return Profile(
        subject, kind, model_id, tuple(d.id for d in deployments), snapshot.version, tuple(rows)
    )


# ---------------------------------------------------------------------------- facts


def fact(entity: str, claimed: Claimed, name: str, value: Any) -> Fact:
    """The fact ``name`` (registry field name) of ``claimed`` with value ``value``, and its
    claim: the per-field claim if there is one, else the entity's."""
    claim = claimed.claim_of(name)
    stated = value is not None  # the snapshot holds None for a fact no source states
    confidence: Confidence = claim.confidence if stated else "unknown"
    return Fact(
        entity=entity,
        fact=name,
        value=_jsonable(value) if stated else UNKNOWN,
        confidence=confidence,
        source=claim.source if stated else None,
        retrieved_at=claim.retrieved_at.isoformat() if stated and claim.retrieved_at else None,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, frozenset | set):
        return sorted(value)
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(v) for k, v in asdict(value).items() if v is not None}
    if isinstance(value, date):
        return value.isoformat()
    return value


def _missing(entity: str, name: str) -> Fact:
    return Fact(entity, name, UNKNOWN, "unknown", None, None)


def _models(snapshot: RegistrySnapshot, lineage: Iterable[str]) -> Iterator[tuple[str, ModelSnap]]:
    for model_id in lineage:
        model = snapshot.models.get(model_id)
        if model is not None:
            yield f"model {model_id}", model


def _jurisdiction(snapshot: RegistrySnapshot, lineage: tuple[str, ...]) -> Iterator[Fact]:
    for model_id in lineage:
        model = snapshot.models.get(model_id)
        if model is None:
            yield _missing(f"model {model_id}", "not in the registry")
            continue
        yield fact(f"model {model_id}", model, "developer", model.developer_id)
        org = snapshot.orgs.get(model.developer_id or "")
        if org is not None:
            yield fact(f"organization {org.id}", org, "hq_country", org.hq_country)
            yield fact(
                f"organization {org.id}", org, "incorporation_country", org.incorporation_country
            )


def _licenses(snapshot: RegistrySnapshot, lineage: tuple[str, ...]) -> Iterator[Fact]:
    for entity, model in _models(snapshot, lineage):
        yield fact(entity, model, "license", model.license_id)
        lic = snapshot.licenses.get(model.license_id or "")
        if lic is not None:
            for name in ("commercial_use", "use_restrictions", "derivatives_inherit"):
                yield fact(f"license {lic.id}", lic, name, getattr(lic, name))
    effective = effective_provenance(snapshot.models, snapshot.orgs, snapshot.licenses, lineage[0])
    yield Fact(
        f"model {lineage[0]}",
        "effective_licenses",
        sorted(effective.licenses) if effective.licenses else UNKNOWN,
        "reported" if effective.complete else "unknown",
        "computed along the lineage from the license facts above",
        None,
    )


def _training(snapshot: RegistrySnapshot, lineage: tuple[str, ...]) -> Iterator[Fact]:
    for entity, model in _models(snapshot, lineage):
        yield fact(entity, model, "training_hardware", model.training_hardware)
        yield fact(entity, model, "training_data_countries", model.training_data_countries)
        if model.training_data_origin:
            yield fact(entity, model, "training_data_origin", model.training_data_origin)
        compute = {"flops": model.training_flops, "gpu_hours": model.training_gpu_hours}
        stated = {k: v for k, v in compute.items() if v is not None}
        yield fact(entity, model, "training_compute", stated or None)


_SERVING = (
    ("hosting", "hosting"),
    ("location_country", "location_country"),
    ("location_region", "location_region"),
    ("location_eea", "location_eea"),
    ("operator", "operator_id"),
    ("hardware_vendor", "hardware_vendor"),
    ("accelerator", "accelerator"),
)
_HANDLING = ("retention_days", "zero_data_retention", "trains_on_inputs")


def _serving(snapshot: RegistrySnapshot, deployments: Iterable[DeploymentSnap]) -> Iterator[Fact]:
    for d in deployments:
        entity = f"deployment {d.id}"
        for name, attr in _SERVING:
            yield fact(entity, d, name, getattr(d, attr))
        operator = snapshot.orgs.get(d.operator_id or "")
        if operator is not None:
            yield fact(f"organization {operator.id}", operator, "hq_country", operator.hq_country)
        # Blocked (e.g. weights that failed verification): the claim of the status says why.
        yield fact(entity, d, "review_status", d.review_status)
        is_first_party = first_party(snapshot, d)
        yield Fact(
            entity,
            "first_party",
            is_first_party,
            "unknown" if is_first_party == UNKNOWN else "reported",
            "computed: operator and developer share a control chain",
            None,
        )


def _weights(snapshot: RegistrySnapshot, model_id: str) -> Iterator[Fact]:
    """The model's published weights digest; ``verified`` once served weights matched it."""
    model = snapshot.models.get(model_id)
    if model is not None:
        yield fact(f"model {model_id}", model, "weights_digest", model.weights_digest)


def first_party(snapshot: RegistrySnapshot, deployment: DeploymentSnap) -> bool | str:
    """True when the operator and the model's developer are the same group; ``unknown`` when
    either is not known."""
    model = snapshot.models.get(deployment.model_id)
    same = snapshot.same_group(deployment.operator_id, model.developer_id if model else None)
    return UNKNOWN if same is None else same


def _data_handling(deployments: Iterable[DeploymentSnap]) -> Iterator[Fact]:
    for d in deployments:
        for name in _HANDLING:
            yield fact(f"deployment {d.id}", d, name, getattr(d, name))


def _governance(
    snapshot: RegistrySnapshot, lineage: tuple[str, ...], deployments: Iterable[DeploymentSnap]
) -> Iterator[Fact]:
    roots = [m.developer_id for _, m in _models(snapshot, lineage)]
    roots += [d.operator_id for d in deployments]
    seen: dict[str, None] = {}
    for root in roots:
        for org_id in snapshot.control_chain(root):
            seen.setdefault(org_id, None)
    for org_id in seen:
        org = snapshot.orgs[org_id]
        entity = f"organization {org_id}"
        yield fact(entity, org, "state_affiliated", org.state_affiliated)
        yield fact(entity, org, "parent", org.parent_id)
        chain = snapshot.control_chain(org_id)
        yield Fact(entity, "control_chain", list(chain), "reported", "computed from parents", None)
        yield fact(entity, org, "listings", [_listing(item) for item in org.listings])
        if org.jurisdiction_tags:
            yield fact(entity, org, "jurisdiction_tags", org.jurisdiction_tags)


def _listing(item: ListingSnap) -> dict[str, Any]:
    """A listing with its list's official name and URL (``registry/data/listings.yaml``)."""
    name, url = named_list_info(item.list)
    return {**_jsonable(item), "name": name, "url": url}


def _behavior(snapshot: RegistrySnapshot, lineage: tuple[str, ...]) -> Iterator[Fact]:
    for entity, model in _models(snapshot, lineage):
        yield fact(entity, model, "behavioral_restrictions", model.behavioral_restrictions)


def _evidence(facts: list[Fact], today: date) -> tuple[Fact, ...]:
    """How much of the above is verified, reported or unknown, and how old the oldest claim is."""
    counts = Counter(f.confidence for f in facts)
    dates = sorted(f.retrieved_at for f in facts if f.retrieved_at)
    oldest = dates[0] if dates else None
    age = (today - date.fromisoformat(oldest)).days if oldest else UNKNOWN
    summary = "computed from the facts above"
    return (
        Fact(
            "profile",
            "facts_by_confidence",
            dict(sorted(counts.items())),
            "reported",
            summary,
            None,
        ),
        Fact("profile", "oldest_retrieved_at", oldest or UNKNOWN, "reported", summary, None),
        Fact("profile", "oldest_claim_age_days", age, "reported", summary, None),
    )
