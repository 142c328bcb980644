"""The Cedar entity store for one registry version: one ``Tenant`` per tenant, one ``Deployment``
per deployment (with its model, lineage, organizations and licenses flattened into attributes).

Built once per registry version; ``PolicyEngine`` parses it once and reuses the handle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from registry.snapshot import RegistrySnapshot, TenantSnap
from registry.vocabulary import fold
from router.policy.facts import DeploymentFacts, deployment_facts
from router.policy.schema import DEPLOYMENT_TYPE, TENANT_TYPE


@dataclass(frozen=True, slots=True)
class RegistryEntities:
    """Everything Cedar knows about one registry version."""

    registry_version: int
    tenants: Mapping[str, TenantSnap]
    deployments: Mapping[str, DeploymentFacts]

    def cedar_json(self) -> str:
        """The entities in Cedar's JSON format (sets as sorted lists)."""
        entities = [tenant_entity(t) for t in self.tenants.values()]
        entities += [deployment_entity(f) for f in self.deployments.values()]
        return json.dumps(entities)


def build_registry_entities(snapshot: RegistrySnapshot) -> RegistryEntities:
    """Compute the facts of every deployment of ``snapshot`` (lineage included), once."""
    facts = {d.id: deployment_facts(snapshot, d) for d in snapshot.deployments.values()}
    return RegistryEntities(snapshot.version, dict(snapshot.tenants), facts)


def tenant_attrs(tenant: TenantSnap) -> dict[str, Any]:
    """The ``Tenant`` attributes; ``region`` is left out when not set."""
    attrs: dict[str, Any] = {
        "id": tenant.id,
        "id_folded": fold(tenant.id),
        "default_classification": tenant.default_classification,
        "attributes": sorted(f"{key}={value}" for key, value in tenant.attributes.items()),
    }
    if tenant.region is not None:
        attrs["region"] = tenant.region
    return attrs


def tenant_entity(tenant: TenantSnap) -> dict[str, Any]:
    return {"uid": uid(TENANT_TYPE, tenant.id), "attrs": tenant_attrs(tenant), "parents": []}


def deployment_entity(facts: DeploymentFacts) -> dict[str, Any]:
    attrs = {k: list(v) if isinstance(v, tuple) else v for k, v in facts.attrs.items()}
    return {"uid": uid(DEPLOYMENT_TYPE, facts.deployment_id), "attrs": attrs, "parents": []}


def uid(entity_type: str, entity_id: str) -> dict[str, str]:
    """An entity reference in the structured form (safe for any id characters)."""
    return {"type": entity_type, "id": entity_id}
