"""What the console's pages show, gathered from the registry's read functions and the live
routing table's snapshot. No SQL and no HTTP here: routes call one of these and render it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from registry.db import session_scope
from registry.decision_reads import DecisionFilter, decision_counts, search_decisions
from registry.lineage import effective_provenance
from registry.service import list_changes, list_policies, read_all
from registry.snapshot import Claim, Claimed, DeploymentSnap, ModelSnap, RegistrySnapshot
from router.console.lineage_svg import lineage_edges, lineage_svg
from router.policy import compile_policy
from router.policy.errors import PolicyError
from router.receipts import ReceiptError, verify_receipt
from router.signing import Signer, public_keys

STALE_AFTER_DAYS = 365  # a fact retrieved longer ago than this is shown as stale
MODEL_FACTS = (
    "name",
    "developer_id",
    "publisher_id",
    "family",
    "license_id",
    "review_status",
    "training_data_countries",
    "training_data_origin",
    "training_hardware",
)
DEPLOYMENT_FACTS = (
    "model_id",
    "operator_id",
    "hosting",
    "location_country",
    "location_region",
    "location_eea",
    "hardware_vendor",
    "accelerator",
    "accelerator_count",
    "retention_days",
    "zero_data_retention",
    "trains_on_inputs",
    "enabled",
    "review_status",
)
# the facts rules usually test: the overview lists those that are unknown or stale
WATCHED_MODEL_FACTS = ("developer_id", "license_id", "training_data_countries", "training_hardware")
WATCHED_DEPLOYMENT_FACTS = (
    "operator_id",
    "hosting",
    "location_country",
    "hardware_vendor",
    "retention_days",
    "zero_data_retention",
    "trains_on_inputs",
)
ORG_FACTS = ("name", "hq_country", "incorporation_country", "parent_id", "state_affiliated")


@dataclass(frozen=True, slots=True)
class Fact:
    name: str
    value: str
    source: str | None
    confidence: str
    retrieved_at: date | None
    age_days: int | None

    @property
    def stale(self) -> bool:
        return self.age_days is not None and self.age_days > STALE_AFTER_DAYS


def _shown(value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, frozenset | set):
        return ", ".join(sorted(str(v) for v in value)) or "none"
    if isinstance(value, tuple):
        return ", ".join(_shown(getattr(v, "vendor", v)) for v in value) or "none"
    return str(value)


def facts_of(entity: Claimed, names: Iterable[str], today: date | None = None) -> list[Fact]:
    """Each named fact with the claim behind it (its own, or the entity's default)."""
    today = today or datetime.now(UTC).date()
    facts = []
    for name in names:
        value = getattr(entity, name, None)
        claim: Claim = entity.claims.get(name, entity.claim)
        if value is None:  # nothing is claimed: no source or age to show
            claim = Claim()
        age = (today - claim.retrieved_at).days if claim.retrieved_at else None
        facts.append(
            Fact(name, _shown(value), claim.source, claim.confidence, claim.retrieved_at, age)
        )
    return facts


def overview(engine: Engine, snapshot: RegistrySnapshot, tenant: str | None) -> dict[str, Any]:
    since = datetime.now(UTC) - timedelta(days=1)
    with session_scope(engine) as session:
        counts = decision_counts(session=session, since=since, tenant_id=tenant)
    weak = [
        (kind, entity.id, fact)
        for kind, entities, names in (
            ("model", snapshot.models.values(), WATCHED_MODEL_FACTS),
            ("deployment", snapshot.deployments.values(), WATCHED_DEPLOYMENT_FACTS),
        )
        for entity in entities
        for fact in facts_of(entity, names)
        if fact.confidence == "unknown" or fact.stale
    ]
    return {
        "routes": sorted(snapshot.routes.values(), key=lambda r: r.name),
        "deployments": snapshot.deployments,
        "policy": snapshot.policy,
        "registry_version": snapshot.version,
        "counts": counts,
        "total": sum(counts.values()),
        "weak_facts": weak,
        "pending": pending_review(snapshot),
    }


def pending_review(snapshot: RegistrySnapshot) -> list[DeploymentSnap | ModelSnap]:
    waiting: list[DeploymentSnap | ModelSnap] = [
        m for m in snapshot.models.values() if m.review_status == "under_review"
    ]
    waiting.extend(d for d in snapshot.deployments.values() if d.review_status == "under_review")
    return waiting


def find_models(
    snapshot: RegistrySnapshot, *, q: str = "", status: str = "", country: str = ""
) -> list[dict[str, Any]]:
    """Models whose id, name or family contains ``q``, with ``status`` and developer ``country``."""
    found = []
    for model in sorted(snapshot.models.values(), key=lambda m: m.id):
        org = snapshot.orgs.get(model.developer_id or "")
        developer_country = (org.hq_country if org else None) or "unknown"
        text = " ".join(filter(None, (model.id, model.name, model.family))).lower()
        if q and q.lower() not in text:
            continue
        if (status and model.review_status != status) or (
            country and developer_country != country.upper()
        ):
            continue
        found.append({"model": model, "country": developer_country})
    return found


def model_detail(snapshot: RegistrySnapshot, model_id: str) -> dict[str, Any] | None:
    model = snapshot.models.get(model_id)
    if model is None:
        return None
    return {
        "model": model,
        "facts": facts_of(model, MODEL_FACTS),
        "effective": effective_provenance(
            snapshot.models, snapshot.orgs, snapshot.licenses, model_id
        ),
        "svg": lineage_svg(snapshot.models, snapshot.orgs, model_id),
        "edges": lineage_edges(snapshot.models, model_id),
        "deployments": [d for d in snapshot.deployments.values() if d.model_id == model_id],
    }


def deployments(
    snapshot: RegistrySnapshot, *, q: str = "", hosting: str = "", country: str = ""
) -> list[dict[str, Any]]:
    """Deployments whose id, model or operator contains ``q``, with ``hosting`` and location
    ``country``."""
    shown = []
    for d in sorted(snapshot.deployments.values(), key=lambda d: d.id):
        text = " ".join(filter(None, (d.id, d.model_id, d.operator_id))).lower()
        if (q and q.lower() not in text) or (hosting and d.hosting != hosting):
            continue
        if country and (d.location_country or "") != country.upper():
            continue
        shown.append({"deployment": d, "facts": facts_of(d, DEPLOYMENT_FACTS)})
    return shown


def organizations(snapshot: RegistrySnapshot, *, q: str = "") -> list[dict[str, Any]]:
    """Each organization (id or name containing ``q``) with its control chain (parent,
    grandparent, ...)."""
    shown = []
    for org in sorted(snapshot.orgs.values(), key=lambda o: o.id):
        if q and q.lower() not in f"{org.id} {org.name}".lower():
            continue
        chain: list[str] = []
        current = org.parent_id
        while current and current not in chain and len(chain) < 20:
            chain.append(current)
            parent = snapshot.orgs.get(current)
            current = parent.parent_id if parent else None
        shown.append({"org": org, "chain": chain, "facts": facts_of(org, ORG_FACTS)})
    return shown


def review_queue(engine: Engine, snapshot: RegistrySnapshot) -> list[dict[str, Any]]:
    """Models and deployments under review, with the version a decision compares against and,
    for a model, the developer countries along its lineage (what a reviewer looks at first)."""
    with session_scope(engine) as session:
        rows = [
            {"kind": kind, **row}
            for kind in ("model", "deployment")
            for row in read_all(session=session, kind=kind)
            if row.get("review_status") == "under_review"
        ]
    for row in rows:
        if row["kind"] == "model" and row["id"] in snapshot.models:
            effective = effective_provenance(
                snapshot.models, snapshot.orgs, snapshot.licenses, row["id"]
            )
            row["lineage_countries"] = sorted(effective.developer_countries) or ["unknown"]
    return rows


def review_history(engine: Engine, tenant: str | None, *, limit: int = 20) -> list[dict[str, Any]]:
    """Recent changes that carry a note (review decisions), newest first, of those the reader
    may see (``tenant``: a compliance key's, as ``GET /admin/changes`` scopes them)."""
    with session_scope(engine) as session:
        changes = list_changes(session=session, visible_to_tenant=tenant, limit=500)
    return [c for c in changes if c.get("note")][:limit]


def decisions(engine: Engine, where: DecisionFilter, limit: int = 100) -> list[dict[str, Any]]:
    with session_scope(engine) as session:
        return search_decisions(session=session, where=where, limit=limit)


def policies(engine: Engine, snapshot: RegistrySnapshot) -> dict[str, Any]:
    with session_scope(engine) as session:
        versions = list_policies(session=session)
    active = snapshot.policy
    cedar = ""
    if active is not None:
        try:
            cedar = compile_policy(active.format, active.source).cedar_text
        except PolicyError as error:  # stored policies compiled once; say so if not any more
            cedar = f"// cannot compile: {error}"
    return {"active": active, "cedar": cedar, "versions": versions}


def draft_of(data: Mapping[str, Any], version: int | None) -> tuple[str, str] | None:
    """(format, source) for the editor: saved version ``version``, or the active policy."""
    if version is None:
        active = data["active"]
        return ("yaml", "") if active is None else (active.format, active.source)
    saved = next((p for p in data["versions"] if p["version"] == version), None)
    return None if saved is None else (saved["format"], saved["source"])


def source_diff(before: str, after: str) -> list[str]:
    return list(
        difflib.unified_diff(
            before.splitlines(), after.splitlines(), "active", "draft", lineterm=""
        )
    )


def scoped(rows: Iterable[Mapping[str, Any]], tenant: str | None) -> list[Mapping[str, Any]]:
    return [r for r in rows if tenant is None or r.get("tenant_id") == tenant]


def check_receipt(
    engine: Engine, key_dir: Path, signer: Signer | None, receipt: str, tenant: str | None
) -> dict[str, Any]:
    """``receipt`` verified against every public key the gateway ever signed with, and the
    audit rows of the request it names (those the reader may see)."""
    if not receipt.strip():
        return {"claims": None, "error": None, "rows": []}
    keys = public_keys(key_dir)
    if signer is not None:
        keys.setdefault(signer.key_id, signer.public_pem())
    try:
        claims = verify_receipt(receipt, keys)
    except ReceiptError as error:
        return {"claims": None, "error": str(error), "rows": []}
    rid = claims.get("rid")
    where = DecisionFilter(request_id=str(rid), tenant_id=tenant)
    rows = decisions(engine, where, limit=5) if rid else []
    return {"claims": claims, "error": None, "rows": rows}
