"""The admin REST API (FastAPI): registry CRUD, API keys, audit reads, under ``/admin/``.

``build_admin_app`` returns a complete ASGI app that the gateway's lean dispatcher mounts for
every path that is not ``/v1/*``. Routes are thin (parse, one registry service call, shape);
authentication, sessions and writes come from ``router.deps``; errors are rendered in the
OpenAI envelope by ``router.admin.errors``. Other admin routers (e.g. ``/admin/policies``) are
added with ``extra_routers`` and may use the same dependencies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fastapi import APIRouter, FastAPI
from fastapi_offline import FastAPIOffline
from sqlalchemy import Engine

from router.admin import audit, export, imports, profile
from router.admin.entities import create_schemas, entity_routers
from router.admin.errors import install_error_handlers
from router.admin.openapi import install_openapi
from router.deps import AdminContext
from router.settings import Settings

__all__ = ["DOCS_ASSETS", "build_admin_app"]

DOCS_ASSETS = "/admin/docs-assets"  # the interactive references' scripts, styles and icon


def build_admin_app(
    engine: Engine,
    settings: Settings,
    *,
    on_change: Callable[[], None] | None = None,
    on_key_use: Callable[[str, float], None] | None = None,
    extra_routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """The admin app; ``on_change`` runs after every committed write that changed the registry
    (the gateway reloads its snapshot there)."""
    app = FastAPIOffline(  # Swagger UI and ReDoc from the package's own files, no CDN
        title="provenance-router admin API",
        openapi_url="/admin/openapi.json",
        docs_url="/admin/docs",
        redoc_url="/admin/redoc",
        static_url=DOCS_ASSETS,
        swagger_ui_oauth2_redirect_url="/admin/docs/oauth2-redirect",
    )
    app.state.admin = AdminContext(
        engine=engine, settings=settings, on_change=on_change, on_key_use=on_key_use
    )
    routers = (audit.router, profile.router, export.router, imports.router)
    for router in (*entity_routers(), *routers, *extra_routers):
        app.include_router(router)
    install_error_handlers(app)
    install_openapi(app, create_schemas())
    return app
