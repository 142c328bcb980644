"""CRUD routes for every registry kind, generated from one description (``registry.models.SPECS``).

    GET    /admin/{plural}              {"object": "list", "data": [...]}
    POST   /admin/{plural}              201, the created entity
    GET    /admin/{plural}/{id}         the entity (model ids contain "/": ``{id:path}``)
    PATCH  /admin/{plural}/{id}         body: {"version": <the version you read>, ...changes}
    DELETE /admin/{plural}/{id}         optional ?version=; {"id", "object", "deleted": true}

``POST /admin/api-keys`` generates the key and returns it once (``"key"``); every later read
shows only its ``prefix``. Bodies are validated by the registry service (the one place that
knows the rules, shared with ``apply``); its errors name the field.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict

from registry.models import SPECS
from registry.service import read_all, read_one
from router.deps import AdminCaller, ContextDep, SessionDep

PLURALS: Mapping[str, str] = {
    "organization": "organizations",
    "license": "licenses",
    "model": "models",
    "deployment": "deployments",
    "route": "routes",
    "tenant": "tenants",
    "api_key": "api-keys",
}


REF_TEMPLATE = "#/components/schemas/{model}"


class PatchBody(BaseModel):
    """The version you read (compare-and-set: stale -> 409) plus the fields to change."""

    model_config = ConfigDict(extra="allow")

    version: int


class NewApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    tenant: str
    scopes: list[str]


def create_schemas() -> dict[str, Any]:
    """JSON schemas of every XCreate model (and what they refer to), for the OpenAPI document:
    create bodies are validated by the service, so FastAPI does not see their models itself."""
    schemas: dict[str, Any] = {}
    for spec in SPECS.values():
        if spec.kind == "api_key":  # created from NewApiKey: the server generates the key
            continue
        schema = spec.create.model_json_schema(ref_template=REF_TEMPLATE)
        schemas.update(schema.pop("$defs", {}))
        schemas[spec.create.__name__] = schema
    return schemas


def _documented_body(model: type[BaseModel]) -> dict[str, Any]:
    ref = {"$ref": REF_TEMPLATE.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def entity_routers() -> list[APIRouter]:
    return [entity_router(kind) for kind in PLURALS]


def entity_router(kind: str) -> APIRouter:
    """The five routes of one kind."""
    plural = PLURALS[kind]
    router = APIRouter(prefix=f"/admin/{plural}", tags=[plural])
    documented: dict[int | str, dict[str, Any]] = {200: {"model": SPECS[kind].public}}

    @router.get("", summary=f"List {plural}")
    def list_entities(session: SessionDep, _caller: AdminCaller) -> dict[str, Any]:
        return {"object": "list", "data": read_all(session=session, kind=kind)}

    router.add_api_route(
        "",
        _create_key if kind == "api_key" else _create_endpoint(kind),
        methods=["POST"],
        status_code=201,
        summary=f"Create one of {plural}",
        responses={201: {"model": SPECS[kind].public}},
        openapi_extra=None if kind == "api_key" else _documented_body(SPECS[kind].create),
    )

    @router.get("/{id:path}", summary=f"Read one of {plural}", responses=documented)
    def get_entity(id: str, session: SessionDep, _caller: AdminCaller) -> dict[str, Any]:
        return read_one(session=session, kind=kind, id=id)

    @router.patch("/{id:path}", summary=f"Change one of {plural}", responses=documented)
    async def patch_entity(
        id: str, body: PatchBody, context: ContextDep, caller: AdminCaller
    ) -> dict[str, Any]:
        changes = body.model_extra or {}
        return await context.write(
            actor=caller.actor,
            operation=lambda w: w.update(kind, id, changes, expected_version=body.version),
            check=lambda: context.check_version(kind, id, body.version),
        )

    @router.delete("/{id:path}", summary=f"Delete one of {plural}")
    async def delete_entity(
        id: str, context: ContextDep, caller: AdminCaller, version: int | None = None
    ) -> dict[str, Any]:
        await context.write(
            actor=caller.actor,
            operation=lambda w: w.delete(kind, id, expected_version=version),
            check=lambda: context.check_version(kind, id, version),
        )
        return {"id": id, "object": kind, "deleted": True}

    return router


def _create_endpoint(kind: str) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def create_entity(
        body: Annotated[dict[str, Any], Body()], context: ContextDep, caller: AdminCaller
    ) -> dict[str, Any]:
        return await context.write(actor=caller.actor, operation=lambda w: w.create(kind, body))

    return create_entity


async def _create_key(body: NewApiKey, context: ContextDep, caller: AdminCaller) -> dict[str, Any]:
    """The raw key is in this response and nowhere else, ever."""
    public, raw = await context.write(
        actor=caller.actor,
        operation=lambda w: w.create_api_key(id=body.id, tenant=body.tenant, scopes=body.scopes),
    )
    return {**public, "key": raw}
