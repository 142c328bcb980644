"""Small registry snapshots for policy tests, built from the public facts in the catalog notes.

``world()`` is the standard registry; tests change one thing with ``with_(...)``.
Facts carry a ``reported`` claim unless a test says otherwise (a fact without a claim is
unknown, see router/policy/facts.py).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

from registry.snapshot import (
    Claim,
    DeploymentSnap,
    LicenseSnap,
    Lineage,
    ModelSnap,
    OrgSnap,
    PolicySnap,
    RegistrySnapshot,
    RouteSnap,
    TenantSnap,
)
from router.policy import CandidateDecision, PolicyEngine, RequestContext

REPORTED = Claim(
    source="https://huggingface.co/", retrieved_at=date(2026, 11, 25), confidence="reported"
)
VERIFIED = Claim(
    source="https://example.org/audit", retrieved_at=date(2026, 11, 25), confidence="verified"
)
UNSOURCED = Claim()  # confidence "unknown"

R1 = "deepseek-ai/DeepSeek-R1"
R1_FINETUNE = "acme/R1-support-ft"
LLAMA = "meta-llama/Llama-3.1-8B"
R1_DISTILL = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
SMOLLM = "HuggingFaceTB/SmolLM2-135M-Instruct"
MISTRAL = "mistralai/Mistral-7B-Instruct-v0.3"
MYSTERY = "mystery/model-7b"
NEW_MODEL = "acme/new-model"
LLAMA_LICENSE = "LicenseRef-Llama-3.1-Community"


def org(org_id: str, country: str | None, **kw: Any) -> OrgSnap:
    return OrgSnap(
        id=org_id, name=org_id, hq_country=country, claim=kw.pop("claim", REPORTED), **kw
    )


def license_(license_id: str, *, osi: bool | None, **kw: Any) -> LicenseSnap:
    defaults: dict[str, Any] = {"open_weights": True, "commercial_use": "yes", "claim": REPORTED}
    return LicenseSnap(id=license_id, name=license_id, osi_approved=osi, **(defaults | kw))


def model(model_id: str, developer: str | None, license_id: str | None, **kw: Any) -> ModelSnap:
    defaults: dict[str, Any] = {
        "review_status": "approved",
        "claim": REPORTED,
        "publisher_id": developer,
    }
    return ModelSnap(id=model_id, developer_id=developer, license_id=license_id, **(defaults | kw))


def derived(relation: str, parent: str) -> tuple[Lineage, ...]:
    return (Lineage(relation, parent),)  # type: ignore[arg-type]  # relation is a Literal


def deployment(deployment_id: str, model_id: str, **kw: Any) -> DeploymentSnap:
    """An on-prem deployment in Germany that keeps nothing, unless told otherwise."""
    defaults: dict[str, Any] = {
        "operator_id": "acme",
        "hosting": "on_prem",
        "location_country": "DE",
        "location_region": "eu-central",
        "location_eea": True,
        "hardware_vendor": "nvidia",
        "accelerator": "H100",
        "retention_days": 0,
        "zero_data_retention": True,
        "trains_on_inputs": False,
        "claim": REPORTED,
    }
    return DeploymentSnap(id=deployment_id, model_id=model_id, **(defaults | kw))


def tenant(tenant_id: str, **kw: Any) -> TenantSnap:
    return TenantSnap(id=tenant_id, name=tenant_id, **kw)


def snapshot(
    *,
    version: int = 1,
    orgs: tuple[OrgSnap, ...] = (),
    licenses: tuple[LicenseSnap, ...] = (),
    models: tuple[ModelSnap, ...] = (),
    deployments: tuple[DeploymentSnap, ...] = (),
    tenants: tuple[TenantSnap, ...] = (),
    routes: tuple[RouteSnap, ...] = (),
) -> RegistrySnapshot:
    return RegistrySnapshot(
        version=version,
        orgs={o.id: o for o in orgs},
        licenses={lic.id: lic for lic in licenses},
        models={m.id: m for m in models},
        deployments={d.id: d for d in deployments},
        routes={r.name: r for r in routes},
        tenants={t.id: t for t in tenants},
        keys_by_hash={},
    )


def world(version: int = 1) -> RegistrySnapshot:
    """The standard test registry.

    Deployments: r1-dc (DeepSeek-R1, CN), r1-finetune-dc (US fine-tune of R1), distill-dc
    (R1-Distill-Llama-8B: MIT card, Llama license inherited), llama-dc, smollm2-local,
    mistral-us (cloud tenant in the US), openai-api (third-party API that retains and trains),
    mystery-dc (developer of unknown country), new-model-dc (model under review)."""
    return snapshot(
        version=version,
        orgs=(
            org("deepseek", "CN"),
            org("meta", "US"),
            org("acme", "US"),
            org("huggingface", "US"),
            org("mistral", "FR", jurisdiction_tags=frozenset({"eu"})),
            org("bigapi", "US"),
            org("mystery-lab", None),
        ),
        licenses=(
            license_("MIT", osi=True),
            license_("Apache-2.0", osi=True),
            license_(
                LLAMA_LICENSE, osi=False, commercial_use="conditional", derivatives_inherit=True
            ),
            license_("Proprietary", osi=False, open_weights=False, commercial_use="no"),
        ),
        models=(
            model(R1, "deepseek", "MIT", family="deepseek-r1"),
            model(R1_FINETUNE, "acme", "MIT", parents=derived("finetune_of", R1)),
            model(LLAMA, "meta", LLAMA_LICENSE, family="llama-3.1"),
            model(R1_DISTILL, "deepseek", "MIT", parents=derived("distilled_from", LLAMA)),
            model(SMOLLM, "huggingface", "Apache-2.0", family="smollm2"),
            model(MISTRAL, "mistral", "Apache-2.0"),
            model(MYSTERY, "mystery-lab", "Apache-2.0"),
            model(NEW_MODEL, "acme", "Apache-2.0", review_status="under_review"),
        ),
        deployments=(
            deployment("r1-dc", R1),
            deployment("r1-finetune-dc", R1_FINETUNE),
            deployment("distill-dc", R1_DISTILL),
            deployment("llama-dc", LLAMA),
            deployment("smollm2-local", SMOLLM, hardware_vendor="generic", accelerator="CPU"),
            deployment(
                "mistral-us",
                MISTRAL,
                hosting="cloud_tenant",
                location_country="US",
                location_region="us-east",
                location_eea=False,
            ),
            deployment(
                "openai-api",
                MISTRAL,
                operator_id="bigapi",
                hosting="third_party_api",
                location_country="US",
                location_eea=False,
                retention_days=30,
                zero_data_retention=False,
                trains_on_inputs=True,
            ),
            deployment("mystery-dc", MYSTERY),
            deployment("new-model-dc", NEW_MODEL),
        ),
        tenants=(
            tenant("acme"),
            tenant("eu-bank", region="EU", default_classification="internal"),
            tenant("product-x"),
            tenant("lab"),
            tenant("vault", default_classification="confidential"),
        ),
        routes=(RouteSnap(name="chat", candidates=("r1-dc", MISTRAL, "smollm2-local")),),
    )


def with_(snap: RegistrySnapshot, **changes: Any) -> RegistrySnapshot:
    """``snap`` with some entities replaced or added, e.g. ``with_(s, models=(model(...),))``."""
    merged: dict[str, Any] = {}
    for section, entities in changes.items():
        current = dict(getattr(snap, section))
        for entity in entities:
            current[getattr(entity, "name" if section == "routes" else "id")] = entity
        merged[section] = current
    return replace(snap, **merged)


def engine_for(source: str, snap: RegistrySnapshot | None = None, version: int = 1) -> PolicyEngine:
    policy = PolicySnap(version=version, name="test", format="yaml", source=source)
    return PolicyEngine.build(snap or world(), policy)


def decide(
    engine: PolicyEngine,
    tenant_id: str,
    deployment_id: str,
    classification: str = "public",
    *,
    action: str = "infer",
    purpose: str | None = None,
    caller_region: str | None = None,
) -> CandidateDecision:
    context = RequestContext(classification, purpose, caller_region)
    return engine.decide(
        tenant_id=tenant_id, action=action, deployment_id=deployment_id, context=context
    )


def allowed(
    engine: PolicyEngine, tenant_id: str, deployment_id: str, *args: Any, **kw: Any
) -> bool:
    return decide(engine, tenant_id, deployment_id, *args, **kw).allowed
