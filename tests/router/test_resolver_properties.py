"""One candidate resolver: over random registries, routes, policies and requested names,
``explain`` and live routing (``router.routing.allowed_deployments`` on the routing table, what
the hot path, ``/v1/models`` and the audit row use) name the same candidates, in the same order,
with the same verdicts, rule ids and reasons, and refuse the same names."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.snapshot import PolicySnap, RegistrySnapshot, RouteSnap
from router.errors import NotFound
from router.policy import PolicyEngine, RequestContext, UnknownModelOrRoute, explain
from router.routing import allowed_deployments
from router.table import build_table
from tests.policy.test_properties import TENANTS, contexts, policies, registries


@st.composite
def with_routes(draw: st.DrawFn) -> tuple[RegistrySnapshot, list[str]]:
    """A registry with a few routes over its deployment and model ids (and names that do not
    exist), and the names a client might send: routes, model ids, deployment ids, unknowns."""
    snap = draw(registries())
    names = [*snap.deployments, *snap.models, "ghost/model", "nothing"]
    routes = tuple(
        RouteSnap(
            name=f"route-{n}",
            strategy=draw(st.sampled_from(["priority", "weighted", "least-latency"])),
            candidates=tuple(draw(st.lists(st.sampled_from(names), max_size=4, unique=True))),
        )
        for n in range(draw(st.integers(0, 3)))
    )
    snap = replace(snap, routes={r.name: r for r in routes})
    requested = draw(
        st.lists(
            st.sampled_from([*snap.routes, *snap.models, *snap.deployments, "nothing", "M/0"]),
            min_size=1,
            max_size=4,
        )
    )
    return snap, requested


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=with_routes(), policy=policies(), context=contexts)
def test_explain_and_live_routing_agree_on_every_candidate(
    world: tuple[RegistrySnapshot, list[str]], policy: dict[str, Any], context: RequestContext
) -> None:
    snap, requested = world
    engine = PolicyEngine.build(snap, PolicySnap(1, "p", "yaml", json.dumps(policy)))
    table = build_table(snap, engine, local_urls={}, secret=lambda _: None)
    for name in requested:
        for tenant_id in TENANTS:
            assert _live(table, name, tenant_id, context) == _explained(
                engine, snap, name, tenant_id, context
            )


Verdicts = list[tuple[str, bool, tuple[str, ...], tuple[str, ...]]] | None


def _live(table: Any, name: str, tenant_id: str, context: RequestContext) -> Verdicts:
    try:
        _, decisions = allowed_deployments(
            table, model=name, tenant_id=tenant_id, action="infer", context=context
        )
    except NotFound:
        return None
    return [(d.deployment_id, d.allowed, d.rule_ids, d.reasons) for d in decisions]


def _explained(
    engine: PolicyEngine,
    snap: RegistrySnapshot,
    name: str,
    tenant_id: str,
    context: RequestContext,
) -> Verdicts:
    try:
        explanation = explain(
            engine, snap, tenant_id=tenant_id, model_or_route=name, action="infer", context=context
        )
    except UnknownModelOrRoute:
        return None
    return [(c.deployment_id, c.allowed, c.rule_ids, c.reasons) for c in explanation.candidates]
