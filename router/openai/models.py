"""``GET /v1/models`` and ``GET /v1/models/{id}``: only what the caller may use, with provenance.

Each entry is an OpenAI model object (``id``, ``object``, ``created``, ``owned_by``) plus extra
keys the SDK keeps: the developers and their countries (including every lineage ancestor's),
the effective licenses and where the allowed deployments run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from registry.lineage import effective_provenance
from registry.snapshot import DeploymentSnap, RegistrySnapshot
from router.errors import NoBackendAvailable, NotFound
from router.policy import RequestContext
from router.routing import allowed_deployments
from router.table import RoutingTable


@dataclass(frozen=True, slots=True)
class VisibleModel:
    name: str
    entry: dict[str, Any]


def describe(
    snapshot: RegistrySnapshot, name: str, allowed: Sequence[DeploymentSnap]
) -> VisibleModel:
    """The model object for ``name`` (a route or model id) served by ``allowed`` deployments."""
    model_ids = sorted({d.model_id for d in allowed})
    provenance = [
        effective_provenance(snapshot.models, snapshot.orgs, snapshot.licenses, m)
        for m in model_ids
    ]
    developers = sorted({snapshot.models[m].developer_id or "" for m in model_ids} - {""})
    entry: dict[str, Any] = {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": developers[0] if len(developers) == 1 else "provenance-router",
        "kind": "route" if name in snapshot.routes else "model",
        "models": model_ids,
        "developers": developers,
        "developer_countries": sorted(
            {snapshot.orgs[d].hq_country or "unknown" for d in developers if d in snapshot.orgs}
        ),
        "lineage_developer_countries": sorted(
            {c for p in provenance for c in p.developer_countries}
        ),
        "effective_licenses": sorted({lic for p in provenance for lic in p.licenses}),
        "deployment_locations": sorted({d.location_country or "unknown" for d in allowed}),
        "deployments": [d.id for d in allowed],
    }
    return VisibleModel(name, entry)


def visible_models(
    table: RoutingTable, tenant_id: str, context: RequestContext
) -> list[VisibleModel]:
    """Every name the tenant may call, each with at least one allowed deployment (computed once
    per tenant and context for the life of the routing table)."""
    return table.listings.get(
        (tenant_id, context),
        lambda: [
            describe(table.snapshot, name, allowed)
            for name in sorted(table.candidates)
            if (allowed := _allowed(table, name, tenant_id, context))
        ],
    )


def _allowed(
    table: RoutingTable, name: str, tenant_id: str, context: RequestContext
) -> tuple[DeploymentSnap, ...]:
    """What a chat request for ``name`` could be served by: the routing decision itself."""
    try:
        allowed, _ = allowed_deployments(
            table, model=name, tenant_id=tenant_id, action="infer", context=context
        )
    except NoBackendAvailable:
        return ()
    return allowed


def model_list(visible: Sequence[VisibleModel]) -> bytes:
    return orjson.dumps({"object": "list", "data": [v.entry for v in visible]})


def one_model(visible: Sequence[VisibleModel], name: str) -> bytes:
    for model in visible:
        if model.name == name:
            return orjson.dumps(model.entry)
    raise NotFound(
        f"The model `{name}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )
