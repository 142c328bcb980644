"""Seed a registry for the gateway benchmark: a realistic registry and policy, all deployments
pointing at the mock backends.

- the normal first-start bootstrap (migrations, built-in catalog, default tenant, admin key);
- 10 organizations (US, SE, DE, CN, RU, CA, JP, one of unknown provenance), 5 licenses, 13 models
  with lineage (a fine-tune of a CN model, a distill that inherits its parent's license), and
  >= 60 deployments over on-prem, private-cloud, cloud-tenant and third-party hosting;
- routes ``mock`` (chat), ``mock-slow`` (chat on the mock with a fixed delay) and ``mock-embed``
  (embeddings): each lists denied candidates first (CN/RU developed, trains on inputs, unknown
  provenance, outside the EEA) so that every request really runs the policy filter, then the
  allowed ones; plus other routes so the registry is not just the benchmark's;
- tenant ``bench`` (region EU) with an ``inference`` API key;
- a YAML policy of 14 rules, activated.

It then builds the policy engine on the stored snapshot and checks that the ``bench`` tenant
is allowed on each benchmark route (and denied where it should be); the summary (counts and
decisions) is printed as JSON.

    python -m bench.seed_registry --database-url sqlite:////tmp/gw.db \
        --chat-url http://127.0.0.1:18001/v1 --slow-url http://127.0.0.1:18002/v1 \
        --api-key sk-bench-... --admin-key sk-admin-...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

TODAY = "2026-11-25"
TENANT = "bench"
KEY_ID = "bench-load"
ROUTES = ("mock", "mock-slow", "mock-embed")


def claim(confidence: str = "verified") -> dict[str, Any]:
    return {
        "source": "provenance-router benchmark fixture (synthetic)",
        "retrieved_at": TODAY,
        "confidence": confidence,
    }


ORGANIZATIONS: list[dict[str, Any]] = [
    {
        "id": "acme-ai",
        "name": "Acme AI, Inc.",
        "hq_country": "US",
        "incorporation_country": "US",
        "state_affiliated": False,
    },
    {
        "id": "svea-ml",
        "name": "Svea ML AB",
        "hq_country": "SE",
        "incorporation_country": "SE",
        "jurisdiction_tags": ["eu"],
        "state_affiliated": False,
    },
    {
        "id": "dragon-lab",
        "name": "Dragon Lab Co., Ltd.",
        "hq_country": "CN",
        "incorporation_country": "CN",
        "state_affiliated": True,
    },
    {
        "id": "redstar-ai",
        "name": "Redstar AI LLC",
        "hq_country": "RU",
        "incorporation_country": "RU",
        "listings": [{"list": "us-ofac-sdn"}],  # fictional organization, fictional listing
        "state_affiliated": True,
    },
    {
        "id": "maple-ml",
        "name": "Maple ML Inc.",
        "hq_country": "CA",
        "incorporation_country": "CA",
        "state_affiliated": False,
    },
    {
        "id": "sakura-ai",
        "name": "Sakura AI K.K.",
        "hq_country": "JP",
        "incorporation_country": "JP",
        "state_affiliated": False,
    },
    {
        "id": "cloudco",
        "name": "CloudCo Inference, Inc.",
        "hq_country": "US",
        "incorporation_country": "US",
        "state_affiliated": False,
    },
    {
        "id": "eurocloud",
        "name": "EuroCloud GmbH",
        "hq_country": "DE",
        "incorporation_country": "DE",
        "jurisdiction_tags": ["eu"],
        "state_affiliated": False,
    },
    {
        "id": "bench-inhouse",
        "name": "Benchmark Corp (own infrastructure)",
        "hq_country": "DE",
        "incorporation_country": "DE",
        "jurisdiction_tags": ["eu"],
        "state_affiliated": False,
    },
    {"id": "unknown-labs", "name": "Unknown Labs", "claim": claim("unknown")},
]

LICENSES: list[dict[str, Any]] = [
    {
        "id": "Apache-2.0",
        "name": "Apache License 2.0",
        "osi_approved": True,
        "open_weights": True,
        "commercial_use": "yes",
        "attribution_required": True,
    },
    {
        "id": "MIT",
        "name": "MIT License",
        "osi_approved": True,
        "open_weights": True,
        "commercial_use": "yes",
        "attribution_required": True,
    },
    {
        "id": "LicenseRef-acme-community",
        "name": "Acme Community License",
        "osi_approved": False,
        "open_weights": True,
        "commercial_use": "conditional",
        "user_threshold": 700_000_000,
        "use_restrictions": ["military"],
        "attribution_required": True,
        "derivatives_inherit": True,
    },
    {
        "id": "LicenseRef-dragon-research",
        "name": "Dragon Research License",
        "osi_approved": False,
        "open_weights": True,
        "commercial_use": "no",
    },
    {
        "id": "LicenseRef-acme-proprietary",
        "name": "Acme API Terms",
        "osi_approved": False,
        "open_weights": False,
        "commercial_use": "yes",
    },
]


def _model(mid: str, dev: str, lic: str, hw: str | None, **extra: Any) -> dict[str, Any]:
    data = {
        "id": mid,
        "name": mid.split("/")[1],
        "developer": dev,
        "publisher": dev,
        "family": mid.split("/")[1].split("-")[0],
        "license": lic,
        "review_status": "approved",
        "training_hardware": [{"vendor": hw}] if hw else [],
        "training_data_origin": "web",
        "claim": claim(),
    }
    data.update(extra)
    return data


MODELS: list[dict[str, Any]] = [
    _model(
        "acme-ai/acme-8b",
        "acme-ai",
        "LicenseRef-acme-community",
        "nvidia",
        parameters_total=8_000_000_000,
        context_length=131072,
    ),
    _model(
        "acme-ai/acme-70b",
        "acme-ai",
        "LicenseRef-acme-community",
        "nvidia",
        parameters_total=70_000_000_000,
        context_length=131072,
    ),
    _model("acme-ai/acme-pro", "acme-ai", "LicenseRef-acme-proprietary", "nvidia"),
    _model("acme-ai/acme-embed", "acme-ai", "Apache-2.0", "nvidia", modalities=["text"]),
    _model(
        "svea-ml/svea-7b",
        "svea-ml",
        "Apache-2.0",
        "nvidia",
        parameters_total=7_000_000_000,
        context_length=32768,
    ),
    _model("svea-ml/svea-embed-small", "svea-ml", "Apache-2.0", "nvidia"),
    _model("dragon-lab/dragon-14b", "dragon-lab", "MIT", "huawei", parameters_total=14_000_000_000),
    _model(
        "svea-ml/svea-dragon-ft",
        "svea-ml",
        "Apache-2.0",
        "nvidia",
        lineage=[{"relation": "finetune_of", "model": "dragon-lab/dragon-14b"}],
    ),
    _model(
        "maple-ml/maple-distill-8b",
        "maple-ml",
        "MIT",
        "nvidia",
        lineage=[{"relation": "distilled_from", "model": "acme-ai/acme-8b"}],
    ),
    _model("redstar-ai/redstar-7b", "redstar-ai", "Apache-2.0", "nvidia"),
    _model("sakura-ai/sakura-13b", "sakura-ai", "Apache-2.0", "nvidia"),
    _model(
        "sakura-ai/sakura-next", "sakura-ai", "Apache-2.0", "nvidia", review_status="under_review"
    ),
    _model("unknown-labs/mystery-7b", "unknown-labs", "MIT", None, claim=claim("unknown")),
]

# Where a deployment can run: (suffix, operator, hosting, country, region, hw, retention, zdr,
# trains_on_inputs)
SITES: dict[str, tuple[str, str, str, str, str, int, bool, bool]] = {
    "onprem-de": ("bench-inhouse", "on_prem", "DE", "eu-central", "nvidia", 0, True, False),
    "private-se": ("eurocloud", "private_cloud", "SE", "eu-north", "nvidia", 0, True, False),
    "tenant-de": ("eurocloud", "cloud_tenant", "DE", "eu-central", "nvidia", 7, False, False),
    "tenant-us": ("cloudco", "cloud_tenant", "US", "us-east", "nvidia", 7, False, False),
    "api-us": ("cloudco", "third_party_api", "US", "us-west", "nvidia", 30, False, False),
    "api-us-train": ("cloudco", "third_party_api", "US", "us-west", "nvidia", 90, False, True),
    "api-cn": ("dragon-lab", "third_party_api", "CN", "cn-east", "huawei", 30, False, False),
}


def deployment(did: str, model: str, site: str, url: str, priority: int) -> dict[str, Any]:
    op, hosting, country, region, hw, retention, zdr, trains = SITES[site]
    return {
        "id": did,
        "model": model,
        "adapter": "openai",
        "endpoint_url": url,
        "operator": op,
        "hosting": hosting,
        "location_country": country,
        "location_region": region,
        "hardware_vendor": hw,
        "accelerator": "H100" if hw == "nvidia" else "Ascend-910B",
        "accelerator_count": 8,
        "retention_days": retention,
        "zero_data_retention": zdr,
        "trains_on_inputs": trains,
        "priority": priority,
        "timeout_s": 30,
        "review_status": "approved",
        "claim": claim(),
    }


def build_deployments(
    chat_url: str, slow_url: str
) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """(deployments, routes): >= 60 deployments; each route's candidate list."""
    deps: list[dict[str, Any]] = []
    routes: dict[str, list[str]] = {}
    # Benchmark routes: denied candidates first (lower priority number = tried first).
    order = [
        ("dragon-lab/dragon-14b", "api-cn"),  # developer CN + state-affiliated
        ("redstar-ai/redstar-7b", "tenant-de"),  # sanctioned developer (RU)
        ("svea-ml/svea-dragon-ft", "onprem-de"),  # fine-tune of a state-affiliated CN model
        ("acme-ai/acme-8b", "api-us-train"),  # operator trains on inputs
        ("unknown-labs/mystery-7b", "onprem-de"),  # unknown provenance: fails closed
        ("acme-ai/acme-8b", "tenant-us"),  # outside the EEA for an EU tenant
        ("svea-ml/svea-7b", "onprem-de"),  # allowed
        ("svea-ml/svea-7b", "private-se"),  # allowed
        ("acme-ai/acme-8b", "onprem-de"),  # allowed
        ("sakura-ai/sakura-13b", "tenant-de"),  # allowed
    ]
    for route, url, upstream in (("mock", chat_url, "mock"), ("mock-slow", slow_url, "mock-slow")):
        names = []
        for n, (model, site) in enumerate(order):
            did = f"{route}-{model.split('/')[1]}-{site}"
            dep = deployment(did, model, site, url, priority=10 + n)
            dep["upstream_model"] = upstream
            deps.append(dep)
            names.append(did)
        routes[route] = names
    embed_order = [
        ("acme-ai/acme-embed", "api-us"),  # embeddings must stay on own hardware
        ("dragon-lab/dragon-14b", "onprem-de"),  # developer CN
        ("svea-ml/svea-embed-small", "onprem-de"),  # allowed
        ("svea-ml/svea-embed-small", "private-se"),  # allowed
        ("acme-ai/acme-embed", "onprem-de"),  # allowed
    ]
    names = []
    for n, (model, site) in enumerate(embed_order):
        did = f"embed-{model.split('/')[1]}-{site}"
        dep = deployment(did, model, site, chat_url, priority=10 + n)
        dep["upstream_model"] = "mock-embed"
        deps.append(dep)
        names.append(did)
    routes["mock-embed"] = names
    # The rest of the registry: every chat model on several sites, grouped in routes.
    extra_models = [
        "acme-ai/acme-70b",
        "acme-ai/acme-pro",
        "maple-ml/maple-distill-8b",
        "sakura-ai/sakura-13b",
        "sakura-ai/sakura-next",
        "svea-ml/svea-7b",
        "dragon-lab/dragon-14b",
    ]
    for model in extra_models:
        short = model.split("/")[1]
        names = []
        for n, site in enumerate(SITES):
            did = f"{short}-{site}"
            deps.append(deployment(did, model, site, chat_url, priority=10 + n))
            names.append(did)
        routes[short] = names
    routes["chat-eu"] = [d for d in (x["id"] for x in deps) if d.endswith(("-de", "-se"))][:12]
    return deps, routes


POLICY = """\
description: Benchmark policy - realistic compliance rules for an EU company.
baseline: true
rules:
  - id: no-sanctioned-developers
    description: Never route to models whose lineage includes a sanctioned developer.
    deny: {developer_listed_on: [us-ofac-sdn, us-entity-list]}
  - id: no-ru-developed
    deny: {developer_country_any_ancestor: [RU, KP, IR]}
  - id: no-state-affiliated
    description: No model whose developer (or an ancestor's) is state-affiliated.
    deny: {state_affiliated: true}
  - id: no-cn-for-confidential
    deny: {developer_country_any_ancestor: [CN], classification: [confidential, restricted]}
  - id: no-training-on-prompts
    deny: {trains_on_inputs: true}
  - id: no-huawei-trained-for-confidential
    deny: {training_hardware_vendor: [huawei], classification: [confidential, restricted]}
  - id: eu-tenants-stay-in-eea
    allow_only: {tenant_region: [EU], location_eea: true}
  - id: restricted-on-prem-only
    allow_only: {classification: [restricted], hosting: [on_prem]}
  - id: confidential-zero-retention
    allow_only: {classification: [confidential, restricted], zero_data_retention: true}
  - id: retention-at-most-30-days
    allow_only: {retention_days_max: 30}
  - id: commercial-use-allowed
    allow_only: {commercial_use: ["yes", conditional]}
  - id: embeddings-on-own-infrastructure
    allow_only: {action: [embed], hosting: [on_prem, private_cloud]}
  - id: defense-no-military-restricted-licenses
    deny: {tenant_attribute: [business_unit=defense], license_any: [LicenseRef-acme-community]}
  - id: public-sector-osi-only
    allow_only: {tenant_attribute: [sector=public], license_osi: true}
"""


def seed(args: argparse.Namespace) -> dict[str, Any]:
    from registry.db import make_engine, session_scope
    from registry.service import NotFoundError, load_snapshot, read_one, write_transaction
    from router.bootstrap import bootstrap
    from router.policy.compiler import compile_policy
    from router.settings import Settings

    t0 = time.perf_counter()
    compile_policy("yaml", POLICY)  # validate first: save_policy stores what it is given
    settings = Settings(database_url=args.database_url, local_model=False, admin_key=args.admin_key)
    engine = make_engine(args.database_url)
    bootstrap(engine, settings)
    deps, routes = build_deployments(args.chat_url.rstrip("/"), args.slow_url.rstrip("/"))

    def exists(kind: str, id: str) -> bool:
        with session_scope(engine) as session:
            try:
                read_one(session=session, kind=kind, id=id)
            except NotFoundError:
                return False
            return True

    created: dict[str, int] = {}
    with write_transaction(engine=engine, actor="bench-seed") as writer:
        for kind, items in (
            ("organization", ORGANIZATIONS),
            ("license", LICENSES),
            ("model", MODELS),
            ("deployment", deps),
        ):
            for item in items:
                if not exists(kind, item["id"]):
                    data = dict(item)
                    if kind in ("organization", "license"):
                        data.setdefault("claim", claim())
                    writer.create(kind, data)
                    created[kind] = created.get(kind, 0) + 1
        for name, candidates in routes.items():
            if not exists("route", name):
                writer.create(
                    "route", {"name": name, "strategy": "priority", "candidates": candidates}
                )
                created["route"] = created.get("route", 0) + 1
        if not exists("tenant", TENANT):
            writer.create(
                "tenant",
                {
                    "id": TENANT,
                    "name": "Benchmark tenant",
                    "region": "EU",
                    "default_classification": "internal",
                    "attributes": {"business_unit": "platform"},
                },
            )
        if not exists("api_key", KEY_ID):
            writer.create_api_key(
                id=KEY_ID, tenant=TENANT, scopes=["inference"], raw_key=args.api_key
            )
        policy = writer.save_policy(name="bench", format="yaml", source=POLICY, activate=True)
    seeded_s = time.perf_counter() - t0

    with session_scope(engine) as session:
        snapshot = load_snapshot(session=session)
    return {
        "seed_s": round(seeded_s, 3),
        "created": created,
        "policy_version": policy.get("version"),
        "policy_rules": POLICY.count("  - id: "),
        "counts": {
            "organizations": len(snapshot.orgs),
            "models": len(snapshot.models),
            "deployments": len(snapshot.deployments),
            "routes": len(snapshot.routes),
            "tenants": len(snapshot.tenants),
        },
        "registry_version": snapshot.version,
        "decisions": check_decisions(snapshot),
    }


def check_decisions(snapshot: Any) -> dict[str, Any]:
    """Build the engine on the stored snapshot and decide every benchmark route's candidates for
    the bench tenant; fails loudly when a route has no allowed candidate."""
    from router.policy.engine import PolicyEngine, RequestContext, eligible_deployments

    engine = PolicyEngine.build(snapshot, snapshot.policy)
    out: dict[str, Any] = {}
    for route, action in (("mock", "infer"), ("mock-slow", "infer"), ("mock-embed", "embed")):
        candidates = [snapshot.deployments[c] for c in snapshot.routes[route].candidates]
        decisions = eligible_deployments(
            engine,
            tenant_id=TENANT,
            action=action,
            context=RequestContext(classification="internal"),
            candidates=candidates,
        )
        out[route] = {
            d.deployment_id: ("allow" if d.allowed else "deny:" + ",".join(d.rule_ids))
            for d in decisions
        }
        if not any(d.allowed for d in decisions):
            raise SystemExit(f"seed: tenant {TENANT!r} has no allowed candidate on {route!r}")
        if all(d.allowed for d in decisions):
            raise SystemExit(f"seed: the policy denies nothing on {route!r}; fixture is wrong")
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--database-url", required=True)
    p.add_argument("--chat-url", required=True, help="base URL of the mock, ending in /v1")
    p.add_argument("--slow-url", required=True, help="base URL of the delayed mock")
    p.add_argument("--api-key", required=True, help="raw key for the bench tenant")
    p.add_argument("--admin-key", default=os.environ.get("PROVENANCE_ROUTER_ADMIN_KEY"))
    p.add_argument("--out", help="write the JSON summary here too")
    args = p.parse_args()
    summary = seed(args)
    text = json.dumps(summary, indent=1, default=str)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
