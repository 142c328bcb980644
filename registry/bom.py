"""The registry as a CycloneDX 1.6 ML-BOM (JSON). Pure over a snapshot: no database, no policy.

    metadata.component        provenance-router, with the scope (registry or one tenant) and
                              the registry and policy versions the BOM was built at
    components[]              one ``machine-learning-model`` per model:
        supplier                the publisher (else the developer): name and HQ country
        manufacturer            the developer: name and HQ country
        licenses                the declared license (``acknowledgement: declared``) and the
                                effective ones along the lineage (``concluded``)
        hashes                  the published weights digest (``sha256:<hex>``)
        pedigree.ancestors      every ancestor, nearest first, each with the relation that
                                links it (``provenance-router:relation``)
        modelCard               family, input modalities, parameter counts, context length
        properties              provenance facts, ``provenance-router:<fact>``, each with
                                ``…:<fact>:confidence`` and ``…:<fact>:source`` from its claim
    services[]                one per deployment: the operator as provider; location, hosting,
                              hardware and data handling as properties (with their claims)
    dependencies[]            each deployment on the model it serves

What is left out on purpose: endpoint URLs and secret references (a URL may carry a credential;
a BOM is handed to third parties), API keys and tenants' keys. Output is deterministic apart
from ``serialNumber`` and ``metadata.timestamp``: the same registry gives the same document, so
two exports can be diffed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cyclonedx.model import HashAlgorithm, HashType, Property, XsUri
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType, Pedigree
from cyclonedx.model.contact import OrganizationalEntity, PostalAddress
from cyclonedx.model.license import DisjunctiveLicense, LicenseAcknowledgement
from cyclonedx.model.service import Service
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.spdx import is_supported_id

from registry.lineage import effective_provenance
from registry.snapshot import Claimed, DeploymentSnap, ModelSnap, RegistrySnapshot

NAMESPACE = "provenance-router"
SPEC_VERSION = "1.6"
_ALGORITHMS = {
    "sha256": HashAlgorithm.SHA_256,
    "sha384": HashAlgorithm.SHA_384,
    "sha512": HashAlgorithm.SHA_512,
    "blake3": HashAlgorithm.BLAKE3,
}
_SERVICE_FACTS = (
    "hosting",
    "location_country",
    "location_region",
    "location_eea",
    "hardware_vendor",
    "accelerator",
    "accelerator_count",
    "retention_days",
    "zero_data_retention",
    "trains_on_inputs",
)


@dataclass(frozen=True, slots=True)
class BomScope:
    """What a BOM covers: every model and deployment, or what one tenant may use."""

    models: tuple[str, ...]
    deployments: tuple[str, ...]
    tenant: str | None = None  # None: the whole registry
    policy_version: int | None = None  # the policy that decided a tenant's scope


def whole_registry(snapshot: RegistrySnapshot) -> BomScope:
    return BomScope(models=tuple(snapshot.models), deployments=tuple(snapshot.deployments))


def to_cyclonedx(snapshot: RegistrySnapshot, scope: BomScope) -> str:
    """The ML-BOM of ``scope`` as CycloneDX 1.6 JSON text."""
    bom = Bom()
    root = bom.metadata.component = _root(snapshot, scope)
    components = {
        model_id: _model_component(snapshot, snapshot.models[model_id])
        for model_id in sorted(set(scope.models) & set(snapshot.models))
    }
    bom.components.update(components.values())
    for deployment_id in sorted(set(scope.deployments) & set(snapshot.deployments)):
        deployment = snapshot.deployments[deployment_id]
        service = _service(snapshot, deployment)
        bom.services.add(service)
        if deployment.model_id in components:
            bom.register_dependency(service, [components[deployment.model_id]])
    bom.register_dependency(root, [*bom.services, *components.values()])
    document = json.loads(JsonV1Dot6(bom).output_as_string())
    _add_model_cards(document, snapshot)
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------- components


def _root(snapshot: RegistrySnapshot, scope: BomScope) -> Component:
    properties = {"scope": f"tenant:{scope.tenant}" if scope.tenant else "registry"}
    properties["registry_version"] = str(snapshot.version)
    if scope.policy_version is not None:
        properties["policy_version"] = str(scope.policy_version)
    return Component(
        type=ComponentType.APPLICATION,
        name="provenance-router",
        bom_ref="provenance-router",
        description="Models and deployments of a provenance-router registry",
        properties=[_prop(name, value) for name, value in properties.items()],
    )


def _model_ref(model_id: str) -> str:
    return f"model:{model_id}"


def _model_component(snapshot: RegistrySnapshot, model: ModelSnap) -> Component:
    component = _model_summary(snapshot, model, _model_ref(model.id))
    effective = effective_provenance(snapshot.models, snapshot.orgs, snapshot.licenses, model.id)
    component.licenses.update(
        _license(snapshot, lic, LicenseAcknowledgement.CONCLUDED)
        for lic in sorted(effective.licenses)
    )
    ancestors = list(_ancestors(snapshot, model))
    if ancestors:
        component.pedigree = Pedigree(ancestors=ancestors)
    component.properties.update(
        [
            *_claimed_facts(model, _model_facts(model)),
            *_developer_facts(snapshot, model),
            _prop("effective_licenses_complete", _text(effective.complete)),
            _prop("lineage_developer_countries", ",".join(sorted(effective.developer_countries))),
        ]
    )
    return component


def _model_summary(snapshot: RegistrySnapshot, model: ModelSnap, ref: str) -> Component:
    """Name, supplier, manufacturer, declared license and hashes: what an ancestor shows too."""
    group, _, name = model.id.rpartition("/")
    component = Component(
        type=ComponentType.MACHINE_LEARNING_MODEL,
        bom_ref=ref,
        group=group or None,
        name=name,
        version=model.revision,
        supplier=_organization(snapshot, model.publisher_id or model.developer_id),
        manufacturer=_organization(snapshot, model.developer_id),
        hashes=_hashes(model.weights_digest),
        properties=[_prop("model_id", model.id)],
    )
    if model.license_id is not None:
        component.licenses.add(
            _license(snapshot, model.license_id, LicenseAcknowledgement.DECLARED)
        )
    return component


def _ancestors(snapshot: RegistrySnapshot, model: ModelSnap) -> Iterator[Component]:
    """Every ancestor, breadth first, each once, with the relation to the model that names it."""
    seen = {model.id}
    frontier = [model]
    while frontier:
        following: list[ModelSnap] = []
        for child in frontier:
            for edge in child.parents:
                if edge.parent_id in seen:
                    continue
                seen.add(edge.parent_id)
                yield _ancestor(snapshot, model.id, child.id, edge.relation, edge.parent_id)
                if (parent := snapshot.models.get(edge.parent_id)) is not None:
                    following.append(parent)
        frontier = following


def _ancestor(
    snapshot: RegistrySnapshot, model_id: str, child_id: str, relation: str, parent_id: str
) -> Component:
    ref = f"{_model_ref(parent_id)}#ancestor-of:{model_id}"
    parent = snapshot.models.get(parent_id)
    if parent is None:
        group, _, name = parent_id.rpartition("/")
        component = Component(
            type=ComponentType.MACHINE_LEARNING_MODEL, bom_ref=ref, group=group, name=name
        )
        component.properties.add(_prop("in_registry", "false"))
    else:
        component = _model_summary(snapshot, parent, ref)
    component.properties.update(
        [_prop("model_id", parent_id), _prop("relation", relation), _prop("child", child_id)]
    )
    return component


def _model_facts(model: ModelSnap) -> dict[str, Any]:
    hardware = model.training_hardware
    return {
        "developer": model.developer_id,
        "publisher": model.publisher_id,
        "license": model.license_id,
        "weights_digest": model.weights_digest,
        "review_status": model.review_status,
        "release_date": model.release_date.isoformat() if model.release_date else None,
        "training_data_countries": _joined(model.training_data_countries),
        "training_data_origin": model.training_data_origin,
        "training_hardware": _joined(None if hardware is None else {h.vendor for h in hardware}),
        "behavioral_restrictions": _joined({r.topic for r in model.behavioral_restrictions}),
    }


def _developer_facts(snapshot: RegistrySnapshot, model: ModelSnap) -> Iterator[Property]:
    """The developer's country (``developer_country``), with the organization's claim."""
    org = snapshot.orgs.get(model.developer_id or "")
    if org is not None and org.hq_country is not None:
        yield from _claimed_facts(org, {"hq_country": org.hq_country}, rename="developer_country")


# ---------------------------------------------------------------------------- services


def _service(snapshot: RegistrySnapshot, deployment: DeploymentSnap) -> Service:
    facts: dict[str, Any] = {f: getattr(deployment, f) for f in _SERVICE_FACTS}
    facts["operator"] = deployment.operator_id
    facts["review_status"] = deployment.review_status
    properties = [
        _prop("deployment_id", deployment.id),
        _prop("model", deployment.model_id),
        _prop("adapter", deployment.adapter),
        _prop("enabled", _text(deployment.enabled)),
        *_claimed_facts(deployment, facts),
    ]
    return Service(
        name=deployment.id,
        bom_ref=f"deployment:{deployment.id}",
        provider=_organization(snapshot, deployment.operator_id),
        properties=properties,
    )


# ---------------------------------------------------------------------------- values


def _organization(snapshot: RegistrySnapshot, org_id: str | None) -> OrganizationalEntity | None:
    org = snapshot.orgs.get(org_id or "")
    if org is None:
        return None
    address = PostalAddress(country=org.hq_country) if org.hq_country else None
    return OrganizationalEntity(name=org.name, address=address)


def _license(
    snapshot: RegistrySnapshot, license_id: str, acknowledgement: LicenseAcknowledgement
) -> DisjunctiveLicense:
    """An SPDX id as ``id``; a ``LicenseRef-*`` (not in the SPDX list) as ``name``."""
    known = snapshot.licenses.get(license_id)
    url = XsUri(known.url) if known is not None and known.url else None
    if is_supported_id(license_id):
        return DisjunctiveLicense(id=license_id, url=url, acknowledgement=acknowledgement)
    return DisjunctiveLicense(name=license_id, url=url, acknowledgement=acknowledgement)


def _hashes(digest: str | None) -> list[HashType]:
    """``sha256:<hex>`` (or another algorithm CycloneDX names) as a hash; anything else: none."""
    algorithm, _, value = (digest or "").partition(":")
    alg = _ALGORITHMS.get(algorithm.lower())
    if alg is None or not value:
        return []
    return [HashType(alg=alg, content=value.lower())]


def _claimed_facts(
    entity: Claimed, facts: Mapping[str, Any], *, rename: str | None = None
) -> Iterator[Property]:
    """Each known fact as a property, with its claim's confidence and source."""
    for fact, value in facts.items():
        if value is None:
            continue
        name = rename or fact
        claim = entity.claims.get(fact, entity.claim)
        yield _prop(name, _text(value))
        yield _prop(f"{name}:confidence", claim.confidence)
        if claim.source:
            yield _prop(f"{name}:source", claim.source)
        if claim.retrieved_at:
            yield _prop(f"{name}:retrieved_at", claim.retrieved_at.isoformat())


def _prop(name: str, value: str) -> Property:
    return Property(name=f"{NAMESPACE}:{name}", value=value)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _joined(values: Iterable[str] | None) -> str | None:
    return None if values is None else ",".join(sorted(values))


# ---------------------------------------------------------------------------- model cards


def _add_model_cards(document: dict[str, Any], snapshot: RegistrySnapshot) -> None:
    """``modelCard`` (not modelled by cyclonedx-python-lib) on each top-level model component."""
    for component in document.get("components", []):
        model = snapshot.models.get(str(component["bom-ref"]).removeprefix("model:"))
        card = _model_card(model) if model is not None else None
        if card:
            component["modelCard"] = card


def _model_card(model: ModelSnap) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    if model.family:
        parameters["architectureFamily"] = model.family
    if model.modalities:
        parameters["inputs"] = [{"format": m} for m in model.modalities]
    numbers = {
        "parameters_total": model.parameters_total,
        "parameters_active": model.parameters_active,
        "context_length": model.context_length,
    }
    card: dict[str, Any] = {}
    if parameters:
        card["modelParameters"] = parameters
    known = [
        {"name": f"{NAMESPACE}:{name}", "value": str(value)}
        for name, value in numbers.items()
        if value is not None
    ]
    if known:
        card["properties"] = known
    return card
