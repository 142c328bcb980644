"""``GET /v1/models`` and ``GET /v1/models/{id}``: only what the caller may use, with provenance.

Each entry is an OpenAI model object (``id``, ``object``, ``created``, ``owned_by``) plus extra
keys the SDK keeps: the developers and their countries (including every lineage ancestor's),
the effective licenses and where the allowed deployments run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from registry.snapshot import DeploymentSnap, KeySnap
from router.errors import NotFound
from router.policy import RequestContext
from router.routing import allowed_for_key, key_refusal
from router.table import RoutingTable, VisibleModel


def describe(table: RoutingTable, name: str, allowed: Sequence[DeploymentSnap]) -> VisibleModel:
    """The model object for ``name`` (a route or model id) served by ``allowed`` deployments.

    Facts come from the policy engine's view of each deployment, so a fact the policy treats
    as unknown (no value, or an ``unknown`` claim) is listed as ``unknown`` here too."""
    facts = [table.engine.entities.deployments[d.id].attrs for d in allowed]
    entry: dict[str, Any] = {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": _owner(facts),
        "kind": "route" if name in table.snapshot.routes else "model",
        "models": sorted({str(f["model"]) for f in facts}),
        "developers": sorted({str(f.get("developer", "unknown")) for f in facts}),
        "developer_countries": sorted({str(f.get("developer_country", "unknown")) for f in facts}),
        "lineage_developer_countries": sorted({c for f in facts for c in _lineage_countries(f)}),
        "effective_licenses": sorted(
            {lic for f in facts for lic in _members(f, "effective_licenses", "license_confidence")}
        ),
        "deployment_locations": sorted({str(f.get("location_country", "unknown")) for f in facts}),
        "deployments": [d.id for d in allowed],
    }
    return VisibleModel(name, entry)


def _owner(facts: Sequence[Mapping[str, Any]]) -> str:
    developers = {f.get("developer") for f in facts}
    only = developers.pop() if len(developers) == 1 else None
    return str(only) if only else "provenance-router"


def _lineage_countries(attrs: Mapping[str, Any]) -> list[str]:
    return _members(attrs, "ancestor_developer_countries", "ancestor_countries_confidence")


def _members(attrs: Mapping[str, Any], name: str, confidence: str) -> list[str]:
    """A set fact's known members, and ``unknown`` when its claim says some are not known."""
    unknown = ["unknown"] if attrs.get(confidence) == "unknown" else []
    return [str(x) for x in attrs.get(name, ())] + unknown


def visible_models(
    table: RoutingTable, key: KeySnap, context: RequestContext
) -> list[VisibleModel]:
    """Every name the key may call, each with at least one allowed deployment: its tenant's
    policy narrowed by its allow-list (computed once per tenant, context and allow-list for the
    life of the routing table)."""
    listing = (key.tenant_id, context, key.allowed_routes, key.allowed_models)
    return table.listings.get(
        listing,
        lambda: [
            describe(table, name, allowed)
            for name in sorted(table.candidates)
            if key_refusal(table, key, name) is None
            and (allowed := _allowed(table, name, key, context))
        ],
    )


def _allowed(
    table: RoutingTable, name: str, key: KeySnap, context: RequestContext
) -> tuple[DeploymentSnap, ...]:
    """What a chat request for ``name`` could be served by: the routing decision itself."""
    allowed, _ = allowed_for_key(table, key, model=name, action="infer", context=context)
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
