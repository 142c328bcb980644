"""The CycloneDX ML-BOM of the registry, or of what one tenant may use (``export cyclonedx``,
``GET /admin/export/cyclonedx``).

"What a tenant may use" is decided by the policy, through the one candidate resolver
(``router.policy.candidate_deployments``) and the one decision seam (``eligible_deployments``)
that live routing, ``explain`` and ``/v1/models`` use: for every route and every model a client
may name, the deployments the policy allows for that tenant (action ``infer``, the tenant's
default classification, no other request context), and the models they serve. The conversion
itself (``registry.bom``) knows nothing of policies.
"""

from __future__ import annotations

from registry.bom import BomScope, to_cyclonedx, whole_registry
from registry.snapshot import RegistrySnapshot
from registry.vocabulary import did_you_mean
from router.policy import (
    PolicyEngine,
    RequestContext,
    UnknownTenant,
    candidate_deployments,
    eligible_deployments,
)


def tenant_scope(snapshot: RegistrySnapshot, engine: PolicyEngine, tenant_id: str) -> BomScope:
    """The deployments ``tenant_id`` may call through some route or model name, and their models
    (raises UnknownTenant for a tenant the registry does not have)."""
    if tenant_id not in snapshot.tenants:
        raise UnknownTenant(
            f"no tenant is called {tenant_id!r}{did_you_mean(tenant_id, snapshot.tenants)}"
        )
    context = RequestContext(classification=snapshot.tenants[tenant_id].default_classification)
    allowed: dict[str, str] = {}  # deployment id -> model id
    for name in (*snapshot.routes, *snapshot.models):
        candidates = candidate_deployments(snapshot, name)
        decisions = eligible_deployments(
            engine, tenant_id=tenant_id, action="infer", context=context, candidates=candidates
        )
        for deployment, decision in zip(candidates, decisions, strict=True):
            if decision.allowed and deployment.enabled:
                allowed[deployment.id] = deployment.model_id
    return BomScope(
        models=tuple(sorted(set(allowed.values()))),
        deployments=tuple(sorted(allowed)),
        tenant=tenant_id,
        policy_version=engine.policy_version,
    )


def cyclonedx_bom(snapshot: RegistrySnapshot, *, tenant: str | None = None) -> str:
    """The ML-BOM (CycloneDX 1.6 JSON) of the whole registry, or of what ``tenant`` may use
    under the registry's active policy."""
    if tenant is None:
        return to_cyclonedx(snapshot, whole_registry(snapshot))
    engine = PolicyEngine.build(snapshot, snapshot.policy)
    return to_cyclonedx(snapshot, tenant_scope(snapshot, engine, tenant))
