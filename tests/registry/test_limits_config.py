"""Limits, budgets and deployment prices as registry data (docs/keys.md): written by ``apply``
files, validated, exported and re-applied unchanged, served in the snapshot. Both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from registry.db import session_scope
from registry.gitops import apply, describe_error, export
from registry.service import RegistryError, load_snapshot, read_one
from registry.snapshot import BudgetSnap, LimitsSnap
from tests.registry.test_gitops import BASE, ENV, KEYS

LIMITED = (
    BASE.replace(
        "    attributes: {business_unit: retail}\n",
        "    attributes: {business_unit: retail}\n"
        "    limits:\n"
        "      rpm: 600\n"
        "      budget: {period: day, soft_tokens: 800, hard_tokens: 1000}\n",
    ).replace(
        "    timeout_s: 30\n",
        "    timeout_s: 30\n    input_cost_per_mtok_usd: 0.5\n    output_cost_per_mtok_usd: 1.5\n",
    )
    + KEYS
    + "    limits: {tpm: 20000, max_concurrent: 4, budget: {hard_cost_usd: 25}}\n"
)


def test_an_apply_file_sets_limits_prices_and_the_snapshot_serves_them(engine: Engine) -> None:
    apply(engine, LIMITED, actor="test", env=ENV)

    with session_scope(engine) as session:
        snapshot = load_snapshot(session=session)
        stored = read_one(session=session, kind="tenant", id="retail")
    assert stored["limits"]["budget"]["hard_tokens"] == 1000
    assert snapshot.tenants["retail"].limits == LimitsSnap(
        rpm=600, budget=BudgetSnap(period="day", soft_tokens=800, hard_tokens=1000)
    )
    (key,) = snapshot.keys_by_hash.values()
    assert key.limits == LimitsSnap(
        tpm=20000, max_concurrent=4, budget=BudgetSnap(period="month", hard_cost_usd=25.0)
    )
    deployment = snapshot.deployments["acme-fra"]
    assert (deployment.input_cost_per_mtok_usd, deployment.output_cost_per_mtok_usd) == (0.5, 1.5)


def test_limits_survive_an_export_and_reapply_unchanged(engine: Engine) -> None:
    apply(engine, LIMITED, actor="test", env=ENV)

    result = apply(engine, export(engine), actor="test", env={})

    assert result.changes == ()


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ("{rpm: 0}", "rpm"),
        ("{rps: 5}", "rps"),
        ("{budget: {period: week}}", "period"),
        ("{budget: {soft_tokens: 10, hard_tokens: 5}}", "above hard_tokens"),
    ],
)
def test_invalid_limits_are_refused_with_the_field_named(
    engine: Engine, limits: str, message: str
) -> None:
    bad = BASE.replace(
        "    attributes: {business_unit: retail}\n",
        f"    attributes: {{business_unit: retail}}\n    limits: {limits}\n",
    )
    with pytest.raises(RegistryError) as raised:
        apply(engine, bad, actor="test")
    text = describe_error(raised.value)
    assert "tenants[retail]" in text and message in text
