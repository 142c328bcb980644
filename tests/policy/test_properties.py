"""Properties of the policy core over random registries, rule sets and contexts.

(a) ``eligible_deployments`` allows exactly what Cedar allows, evaluated independently from the
    policy text and the entities JSON (so never allows what Cedar denies);
(b) ``explain`` agrees with ``eligible_deployments``;
(c) a ``deny`` on developer country X never allows a deployment whose effective lineage
    (``registry.lineage.effective_provenance``, raw registry values) includes X;
(d) a stricter classification, or a declared purpose, never turns a denial into an allow.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import cedarpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.lineage import effective_provenance
from registry.snapshot import PolicySnap, RegistrySnapshot
from router.policy import (
    PolicyEngine,
    RequestContext,
    eligible_deployments,
    explain,
)
from router.policy.entities import uid
from router.policy.schema import (
    ACTION_TYPE,
    CLASSIFICATIONS,
    DEPLOYMENT_TYPE,
    HOSTINGS,
    TENANT_TYPE,
)
from tests.policy.factories import (
    REPORTED,
    UNSOURCED,
    VERIFIED,
    deployment,
    derived,
    license_,
    model,
    org,
    snapshot,
    tenant,
)

COUNTRIES = ("CN", "US", "FR")
TENANTS = ("eu-a", "t-b")
claims = st.sampled_from([REPORTED, REPORTED, VERIFIED, UNSOURCED])
maybe_bool = st.sampled_from([True, False, None])


@st.composite
def registries(draw: st.DrawFn) -> RegistrySnapshot:
    org_ids = [f"o{n}" for n in range(draw(st.integers(1, 4)))]
    license_ids = [f"L{n}" for n in range(draw(st.integers(1, 3)))]
    model_ids = [f"m/{n}" for n in range(draw(st.integers(1, 5)))]
    orgs = tuple(
        org(o, draw(st.sampled_from([*COUNTRIES, None])), claim=draw(claims)) for o in org_ids
    )
    licenses = tuple(
        license_(
            license_id,
            osi=draw(maybe_bool),
            open_weights=draw(maybe_bool),
            derivatives_inherit=draw(st.booleans()),
            claim=draw(claims),
        )
        for license_id in license_ids
    )
    models = tuple(_model(draw, n, model_ids, org_ids, license_ids) for n in range(len(model_ids)))
    deployments = tuple(
        deployment(
            f"d{n}",
            draw(st.sampled_from([*model_ids, "ghost/model"])),
            hosting=draw(st.sampled_from([*HOSTINGS, None])),
            location_eea=draw(maybe_bool),
            trains_on_inputs=draw(maybe_bool),
            enabled=draw(st.sampled_from([True, True, True, False])),
            review_status=draw(st.sampled_from(["approved", "approved", "under_review"])),
            claim=draw(claims),
        )
        for n in range(draw(st.integers(1, 4)))
    )
    tenants = (
        tenant("eu-a", region="EU"),
        tenant("t-b", default_classification=draw(st.sampled_from(CLASSIFICATIONS))),
    )
    return snapshot(
        orgs=orgs, licenses=licenses, models=models, deployments=deployments, tenants=tenants
    )


def _model(
    draw: st.DrawFn, n: int, model_ids: list[str], org_ids: list[str], license_ids: list[str]
) -> Any:
    """Model n, whose parents are earlier models (a DAG) or a model missing from the registry."""
    possible_parents = [*model_ids[:n], "ghost/base"]
    parents = draw(st.lists(st.sampled_from(possible_parents), max_size=2, unique=True))
    relation = draw(
        st.sampled_from(["finetune_of", "distilled_from", "merge_of", "quantized_from"])
    )
    return model(
        model_ids[n],
        draw(st.sampled_from([*org_ids, None, "ghost-org"])),
        draw(st.sampled_from([*license_ids, None, "ghost-license"])),
        parents=tuple(p for parent in parents for p in derived(relation, parent)),
        review_status=draw(st.sampled_from(["approved", "approved", "under_review", "blocked"])),
        claim=draw(claims),
    )


def _facts(draw: st.DrawFn) -> dict[str, Any]:
    """A non-empty set of fact conditions."""
    pool = {
        "developer_country_any_ancestor": st.lists(
            st.sampled_from(COUNTRIES), min_size=1, unique=True
        ),
        "developer_country": st.lists(st.sampled_from(COUNTRIES), min_size=1, unique=True),
        "location_eea": st.booleans(),
        "license_osi": st.booleans(),
        "open_weights": st.booleans(),
        "trains_on_inputs": st.booleans(),
        "hosting": st.lists(st.sampled_from(HOSTINGS), min_size=1, unique=True),
    }
    keys = draw(st.lists(st.sampled_from(sorted(pool)), min_size=1, max_size=3, unique=True))
    facts = {key: draw(pool[key]) for key in keys}
    if draw(st.integers(0, 3)) == 0:
        facts["min_confidence"] = draw(st.sampled_from(["reported", "verified"]))
    return facts


def _selectors(draw: st.DrawFn, forbid: bool) -> dict[str, Any]:
    selectors: dict[str, Any] = {}
    if draw(st.booleans()):
        selectors["tenant"] = [draw(st.sampled_from(["eu-*", "t-b", "*"]))]
    if draw(st.booleans()):
        cut = draw(st.integers(0, 3))  # forbids list levels upward, permits downward
        levels = CLASSIFICATIONS[cut:] if forbid else CLASSIFICATIONS[: cut + 1]
        selectors["classification"] = list(levels)
    if draw(st.booleans()):
        selectors["purpose"] = ["hr"]
    return selectors


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    for n in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["deny", "deny", "allow_only", "allow"]))
        body = _selectors(draw, forbid=kind != "allow") | _facts(draw)
        rules.append({"id": f"r{n}", kind: body})
    if draw(st.booleans()):  # the plain lineage-country deny that property (c) checks
        countries = st.lists(st.sampled_from(COUNTRIES), min_size=1, max_size=2, unique=True)
        deny = {"developer_country_any_ancestor": draw(countries)}
        rules.append({"id": "no-countries", "deny": deny})
    if draw(st.booleans()):
        admit = {"tenant": ["t-b"], "model": ["m/*"]}
        rules.append({"id": "unreviewed", "allow_unreviewed": admit})
    return {"baseline": draw(st.sampled_from([True, True, False])), "rules": rules}


contexts = st.builds(
    RequestContext,
    classification=st.sampled_from(CLASSIFICATIONS),
    purpose=st.sampled_from([None, "hr", "x"]),
)


def _cedar_allows(
    engine: PolicyEngine, requests: list[tuple[str, str, RequestContext]]
) -> list[bool]:
    """Cedar's own verdicts, from the policy text and entities JSON (no engine handles)."""
    batch = [
        {
            "principal": uid(TENANT_TYPE, t),
            "action": uid(ACTION_TYPE, "infer"),
            "resource": uid(DEPLOYMENT_TYPE, d),
            "context": engine.effective_context(t, c).cedar(),
        }
        for t, d, c in requests
    ]
    results = cedarpy.is_authorized_batch(
        batch, engine.policy.cedar_text, engine.entities.cedar_json()
    )
    assert all(not r.diagnostics.errors for r in results)
    return [r.allowed for r in results]


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snap=registries(), policy=policies(), context=contexts)
def test_policy_core_properties(
    snap: RegistrySnapshot, policy: dict[str, Any], context: RequestContext
) -> None:
    engine = PolicyEngine.build(snap, PolicySnap(1, "p", "yaml", json.dumps(policy)))
    deployments = list(snap.deployments.values())
    seam = {
        tenant_id: eligible_deployments(
            engine, tenant_id=tenant_id, action="infer", context=context, candidates=deployments
        )
        for tenant_id in TENANTS
    }
    # (a) exactly Cedar's verdict, so never allowed where Cedar denies.
    cedar = _cedar_allows(engine, [(t, d.id, context) for t in TENANTS for d in deployments])
    assert [d.allowed for t in TENANTS for d in seam[t]] == cedar
    for tenant_id, decisions in seam.items():
        _assert_explain_agrees(engine, snap, tenant_id, context, decisions)
        _assert_country_denies_hold(snap, policy, decisions)
        _assert_context_only_tightens(engine, tenant_id, context, deployments)


def _assert_explain_agrees(
    engine: PolicyEngine,
    snap: RegistrySnapshot,
    tenant_id: str,
    context: RequestContext,
    decisions: list[Any],
) -> None:
    """(b) explain shows the same verdicts, rule ids and reasons as the seam."""
    by_id = {d.deployment_id: d for d in decisions}
    for model_id in {d.model_id for d in snap.deployments.values()} & set(snap.models):
        explanation = explain(
            engine,
            snap,
            tenant_id=tenant_id,
            model_or_route=model_id,
            action="infer",
            context=context,
        )
        for candidate in explanation.candidates:
            seam = by_id[candidate.deployment_id]
            assert (candidate.allowed, candidate.rule_ids, candidate.reasons) == (
                seam.allowed,
                seam.rule_ids,
                seam.reasons,
            )


def _assert_country_denies_hold(
    snap: RegistrySnapshot, policy: dict[str, Any], decisions: list[Any]
) -> None:
    """(c) an unconditional lineage-country deny holds against the raw registry lineage."""
    denied: set[str] = set()
    for rule in policy["rules"]:
        body = rule.get("deny", {})
        if set(body) == {"developer_country_any_ancestor"}:
            denied |= set(body["developer_country_any_ancestor"])
    for decision in decisions:
        if decision.allowed:
            model_id = snap.deployments[decision.deployment_id].model_id
            lineage = effective_provenance(snap.models, snap.orgs, snap.licenses, model_id)
            assert not lineage.developer_countries & denied, decision


def _assert_context_only_tightens(
    engine: PolicyEngine, tenant_id: str, context: RequestContext, deployments: list[Any]
) -> None:
    """(d) raising the classification or declaring a purpose never allows more."""
    ids = [d.id for d in deployments]

    def allowed_set(c: RequestContext) -> set[str]:
        verdicts = engine.decide_many(
            tenant_id=tenant_id, action="infer", deployment_ids=ids, context=c
        )
        return {d.deployment_id for d in verdicts if d.allowed}

    by_level = [allowed_set(RequestContext(level, context.purpose)) for level in CLASSIFICATIONS]
    for lower, higher in itertools.pairwise(by_level):
        assert higher <= lower
    undeclared = allowed_set(RequestContext(context.classification))
    assert allowed_set(context) <= undeclared
