"""``POST /admin/import``: the diff of a source against the registry, applied on request.

    {"source": "gguf|ollama|openai|hf|litellm", "location": "<path or URL>", "apply": false}

The answer is the diff as JSON (``registry.importers.plan``); with ``"apply": true`` the new
entries are written in one registry write (in turn with the other writers), ``under_review``.
The source is read first, outside the write turn: a GGUF's digest or a slow server never holds
the registry's write lock. Paths are read on the gateway's host and URLs fetched from it (only
the URL given, within ``IMPORT_TIMEOUT_S``): admin scope only. Bad input is 400 in the OpenAI
envelope, naming the file or URL; nothing is imported.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from registry.importers import apply_discovery, discover, preview, today
from router.admin.openapi import errors
from router.deps import AdminCaller, ContextDep

router = APIRouter(prefix="/admin", tags=["import"])


class ImportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Literal["gguf", "ollama", "openai", "hf", "litellm"]
    location: str = Field(min_length=1, max_length=4096, description="A path or a URL")
    apply: bool = Field(False, description="Write the diff (default: only show it)")


@router.post(
    "/import",
    summary="Import GGUF files, a server or a config for review (a dry-run diff by default)",
    responses=errors(400),
)
async def post_import(body: ImportIn, context: ContextDep, caller: AdminCaller) -> dict[str, Any]:
    found = await run_in_threadpool(
        discover,
        body.source,
        body.location,
        timeout_s=context.settings.import_timeout_s,
        digest_cache=context.settings.import_digest_cache,
    )
    day = today()
    if not body.apply:
        result = await run_in_threadpool(preview, context.engine, found, today=day)
    else:
        result = await context.write(
            actor=caller.actor, operation=lambda w: apply_discovery(w, found, today=day)
        )
    return result.to_dict()
