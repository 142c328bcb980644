"""CRUD routes for every registry kind, generated from one description (``registry.models.SPECS``).

    GET    /admin/{plural}              {"object": "list", "data": [...]}
    POST   /admin/{plural}              201, the created entity
    GET    /admin/{plural}/{id}         the entity (model ids contain "/": ``{id:path}``)
    PATCH  /admin/{plural}/{id}         body: {"version": <the version you read>, ...changes}
    DELETE /admin/{plural}/{id}         optional ?version=; {"id", "object", "deleted": true}

``POST /admin/api-keys`` generates the key and returns it once (``"key"``); every later read
shows only its ``prefix``. ``POST /admin/api-keys/{id}/rotate`` (body ``{"grace_s"}``) gives the
key a new raw key, returned once the same way; revoking a key is ``PATCH`` ``enabled: false``
(docs/keys.md). Bodies are validated by the registry service (the one place that
knows the rules, shared with ``apply``); its errors name the field.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, ConfigDict, Field, create_model

from registry.limits import Limits
from registry.models import (
    SPECS,
    KeyNote,
    KindSpec,
    UniqueModelIds,
    UniqueRouteNames,
    UniqueScopes,
    UtcTime,
)
from registry.service import DEFAULT_GRACE_S, MAX_GRACE_S, read_all, read_one
from registry.validation import INT32_MAX, Count32, Slug
from router.admin.openapi import errors
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
QueryVersion = Annotated[
    int | None, Query(ge=0, le=INT32_MAX, description="Delete only if still at this version")
]


VERSION_DESCRIPTION = "The version you read (compare-and-set: a stale one answers 409)"


class PatchBody(BaseModel):
    """The version you read plus the fields to change; the fields are validated by the service
    (documented as ``XPatch``: :func:`patch_model`)."""

    model_config = ConfigDict(extra="allow")

    version: Count32


class NewApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Slug
    tenant: Slug
    scopes: UniqueScopes = Field(min_length=1)
    owner: KeyNote | None = None
    description: KeyNote | None = None
    expires_at: UtcTime | None = Field(default=None, description="None: never expires")
    allowed_routes: UniqueRouteNames | None = Field(
        default=None, description="Route names the key may call (None: any)"
    )
    allowed_models: UniqueModelIds | None = Field(
        default=None, description="Model ids the key may call or be served by (None: any)"
    )
    limits: Limits | None = None  # docs/keys.md, "Limits"


class RotateApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_s: float = Field(
        default=DEFAULT_GRACE_S,
        ge=0,
        le=MAX_GRACE_S,
        description="How long the replaced key keeps working, in seconds (0: it stops at once)",
    )
    version: Count32 | None = Field(default=None, description=VERSION_DESCRIPTION)


def patch_model(spec: KindSpec) -> type[BaseModel]:
    """What a PATCH body may hold: ``version`` plus the XUpdate fields, nothing else."""
    name = spec.update.__name__.removesuffix("Update") + "Patch"
    version = (Count32, Field(description=VERSION_DESCRIPTION))
    model: type[BaseModel] = create_model(name, __base__=spec.update, version=version)
    return model


def create_schemas() -> dict[str, Any]:
    """JSON schemas of every XCreate and XPatch model (and what they refer to), for the
    OpenAPI document: these bodies are validated by the service, so FastAPI does not see
    their models itself."""
    schemas: dict[str, Any] = {}
    for spec in SPECS.values():
        models = [patch_model(spec)]
        if spec.kind != "api_key":  # created from NewApiKey: the server generates the key
            models.append(spec.create)
        for model in models:
            schema = model.model_json_schema(ref_template=REF_TEMPLATE)
            schemas.update(schema.pop("$defs", {}))
            _claims_name_fields(schema, sorted(spec.create.model_fields))
            schemas[model.__name__] = schema
    return schemas


def _claims_name_fields(schema: dict[str, Any], fields: list[str]) -> None:
    """``claims`` may only override fields the entity has (``ClaimsMatchFields``)."""
    claims = schema["properties"].get("claims")
    if claims is not None and claims.get("type") == "object":
        claims["propertyNames"] = {"enum": fields}


def _documented_body(model: type[BaseModel]) -> dict[str, Any]:
    ref = {"$ref": REF_TEMPLATE.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def entity_routers() -> list[APIRouter]:
    return [key_rotation_router(), *(entity_router(kind) for kind in PLURALS)]


def entity_router(kind: str) -> APIRouter:
    """The five routes of one kind."""
    plural = PLURALS[kind]
    router = APIRouter(prefix=f"/admin/{plural}", tags=[plural])
    spec = SPECS[kind]
    # Model ids (and route names) contain "/"; key ids are slugs, which keeps
    # /admin/api-keys/{id}/rotate apart from the key itself.
    one = "/{id}" if kind == "api_key" else "/{id:path}"
    read_responses: dict[int | str, dict[str, Any]] = {200: {"model": spec.public}, **errors(404)}
    write_responses = {**read_responses, **errors(409)}

    @router.get("", summary=f"List {plural}")
    def list_entities(session: SessionDep, _caller: AdminCaller) -> dict[str, Any]:
        return {"object": "list", "data": read_all(session=session, kind=kind)}

    router.add_api_route(
        "",
        _create_key if kind == "api_key" else _create_endpoint(kind),
        methods=["POST"],
        status_code=201,
        summary=f"Create one of {plural}",
        responses={201: {"model": spec.public}, **errors(409)},
        openapi_extra=None if kind == "api_key" else _documented_body(spec.create),
    )

    @router.get(one, summary=f"Read one of {plural}", responses=read_responses)
    def get_entity(id: str, session: SessionDep, _caller: AdminCaller) -> dict[str, Any]:
        return read_one(session=session, kind=kind, id=id)

    @router.patch(
        one,
        summary=f"Change one of {plural}",
        responses=write_responses,
        openapi_extra=_documented_body(patch_model(spec)),
    )
    async def patch_entity(
        id: str, body: PatchBody, context: ContextDep, caller: AdminCaller
    ) -> dict[str, Any]:
        changes = body.model_extra or {}
        return await context.write(
            actor=caller.actor,
            operation=lambda w: w.update(kind, id, changes, expected_version=body.version),
            check=lambda: context.check_version(kind, id, body.version),
        )

    @router.delete(one, summary=f"Delete one of {plural}", responses=errors(404, 409))
    async def delete_entity(
        id: str, context: ContextDep, caller: AdminCaller, version: QueryVersion = None
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
    fields = body.model_dump(exclude={"id", "tenant", "scopes"}, exclude_none=True)
    public, raw = await context.write(
        actor=caller.actor,
        operation=lambda w: w.create_api_key(
            id=body.id, tenant=body.tenant, scopes=list(body.scopes), **fields
        ),
    )
    return {**public, "key": raw}


def key_rotation_router() -> APIRouter:
    """``POST /admin/api-keys/{id}/rotate``: a new raw key for the same key id (docs/keys.md)."""
    router = APIRouter(prefix="/admin/api-keys", tags=["api-keys"])

    @router.post(
        "/{id}/rotate",
        summary="Rotate one of api-keys: a new raw key, the old one valid for grace_s",
        responses={200: {"model": SPECS["api_key"].public}, **errors(404, 409)},
    )
    async def rotate_key(
        id: str, body: RotateApiKey, context: ContextDep, caller: AdminCaller
    ) -> dict[str, Any]:
        """The new raw key is in this response (``"key"``) and nowhere else, ever."""
        public, raw = await context.write(
            actor=caller.actor,
            operation=lambda w: w.rotate_api_key(
                id=id, grace_s=body.grace_s, expected_version=body.version
            ),
            check=lambda: context.check_version("api_key", id, body.version),
        )
        return {**public, "key": raw}

    return router
