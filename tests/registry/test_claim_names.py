"""Per-field claims are stored under registry field names (``claims: {developer: ...}``) while
the snapshot names references by what they hold (``developer_id``). Every reader must find the
claim of a fact whichever name it uses: before this was fixed, the policy looked claims up by
snapshot attribute and never saw an override of ``developer``, ``license`` or ``operator``."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from sqlalchemy import Engine

from registry import models, snapshot
from registry.db import session_scope
from registry.profile import fact
from registry.service import load_snapshot, write_transaction
from router.policy.facts import deployment_facts
from tests.registry.conftest import DEPLOYMENT, DISTILL

VERIFIED: dict[str, Any] = {
    "source": "https://example.org/filing",
    "retrieved_at": "2026-11-30",
    "confidence": "verified",
}
PAIRS = [
    (snapshot.OrgSnap, models.OrganizationCreate),
    (snapshot.LicenseSnap, models.LicenseCreate),
    (snapshot.ModelSnap, models.ModelCreate),
    (snapshot.DeploymentSnap, models.DeploymentCreate),
]


@pytest.mark.parametrize(("snap", "create"), PAIRS, ids=lambda p: p.__name__)
def test_every_snapshot_fact_names_the_registry_field_its_claim_is_stored_under(
    snap: type, create: type[models.SQLModel]
) -> None:
    """A renamed attribute without an entry in FIELD_OF_ATTRIBUTE would read the entity's
    default claim and silently ignore the per-field one."""
    for attribute in dataclasses.fields(snap):
        if attribute.name in {"claim", "claims"}:
            continue
        field = snapshot.FIELD_OF_ATTRIBUTE.get(attribute.name, attribute.name)
        assert field in create.model_fields, f"{snap.__name__}.{attribute.name}"


def _write(engine: Engine, kind: str, id: str, changes: dict[str, Any]) -> None:
    with write_transaction(engine=engine, actor="test") as writer:
        writer.update(kind, id, changes, expected_version=None)


def test_policy_facts_use_the_per_field_claims_of_references(seeded: Engine) -> None:
    # Every organization, the model and the deployment keep a `reported` entity claim; only the
    # references (developer, license, operator) and the countries are raised to `verified`.
    for org in ("meta", "deepseek"):
        _write(seeded, "organization", org, {"claims": {"hq_country": VERIFIED}})
    _write(seeded, "license", "MIT", {"claim": VERIFIED})
    _write(
        seeded,
        "model",
        DISTILL["id"],
        {"claims": {"developer": VERIFIED, "license": VERIFIED}},
    )
    _write(seeded, "deployment", DEPLOYMENT["id"], {"claims": {"operator": VERIFIED}})
    with session_scope(seeded) as session:
        loaded = load_snapshot(session=session)
    model = loaded.models[DISTILL["id"]]
    assert model.confidence("developer_id") == "verified"
    assert model.confidence("license_id") == "verified"
    assert loaded.deployments[DEPLOYMENT["id"]].confidence("operator_id") == "verified"
    attrs = deployment_facts(loaded, loaded.deployments[DEPLOYMENT["id"]]).attrs
    assert attrs["developer_country_confidence"] == "verified"
    assert attrs["operator_country_confidence"] == "verified"
    # The profile reads by field name and agrees with the policy.
    assert fact("model", model, "developer", model.developer_id).confidence == "verified"
