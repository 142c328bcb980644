"""Budgets of keys and tenants through the real gateway and the openai SDK, on SQLite and
PostgreSQL: the hard threshold refuses (429 budget_exceeded), the soft one is reported
(header, one warning, a metric), cost comes from deployment prices, a new gateway process
starts from the spend in the audit log, and ``GET /admin/spend`` shows it (docs/keys.md)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from router.limiter import BUDGET_HEADER
from tests.fakes import FakeUpstream
from tests.router.conftest import RunningGateway, assert_envelope, deployment, uid, wait_for

MESSAGES: Any = [{"role": "user", "content": "hi"}]
SOFT = BUDGET_HEADER.decode()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(
    request: pytest.FixtureRequest, gateway_factory: Callable[..., RunningGateway]
) -> RunningGateway:
    return gateway_factory(backend=request.param)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


def budgeted(
    gw: RunningGateway, upstream: FakeUpstream, budget: dict[str, Any], **prices: float
) -> tuple[str, str, str, str]:
    """A fresh deployment (with ``prices``), route and key with ``budget``:
    (raw key, route, key id, deployment id)."""
    route, dep, key_id = uid("route"), uid("dep"), uid("key")
    with gw.write() as w:
        w.create("deployment", deployment(dep, upstream.base_url, **prices))
        w.create("route", {"name": route, "candidates": [dep]})
        _, raw = w.create_api_key(
            id=key_id, tenant="apps", scopes=["inference"], limits={"budget": budget}
        )
    return raw, route, key_id, dep


def chat(gw: RunningGateway, key: str, route: str) -> Any:
    return gw.openai(key).chat.completions.with_raw_response.create(model=route, messages=MESSAGES)


def test_the_hard_token_budget_refuses_with_its_own_code(
    gw: RunningGateway, upstream: FakeUpstream
) -> None:
    key, route, _, _ = budgeted(gw, upstream, {"period": "day", "hard_tokens": 15})
    chat(gw, key, route)  # 10 tokens
    chat(gw, key, route)  # 10 < 15 before it: admitted, 20 after
    with pytest.raises(openai.RateLimitError) as refused:
        chat(gw, key, route)
    response = refused.value.response
    error = assert_envelope(response, 429, type="insufficient_quota", code="budget_exceeded")
    assert "20 of 15 tokens" in error["message"]
    assert int(response.headers["retry-after"]) <= 24 * 3600  # the day's end
    row = gw.decision(response.headers["x-request-id"])
    assert (row["status"], row["error_code"]) == ("denied", "budget_exceeded")
    assert row["context"]["limit"] == "key:budget"
    assert upstream.calls == 2


def test_the_soft_budget_is_reported_once_and_counted(
    gw: RunningGateway, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    key, route, key_id, _ = budgeted(gw, upstream, {"soft_tokens": 5, "hard_tokens": 1000})
    metrics = gw.app.gateway.telemetry.metrics
    assert metrics is not None
    sample = f"{metrics.budget_soft._name}_total"

    def counted() -> float:
        return metrics.registry.get_sample_value(sample, {"subject": "key"}) or 0.0

    before = counted()
    assert SOFT not in chat(gw, key, route).headers
    with caplog.at_level(logging.WARNING, logger="provenance_router"):
        assert chat(gw, key, route).headers[SOFT] == "soft-exceeded"
        assert chat(gw, key, route).headers[SOFT] == "soft-exceeded"
    warnings = [r for r in caplog.records if "soft budget" in r.getMessage()]
    assert len(warnings) == 1 and key_id in warnings[0].getMessage()
    assert counted() == before + 1


def test_a_cost_budget_uses_the_deployments_prices(
    gw: RunningGateway, upstream: FakeUpstream
) -> None:
    # 1 USD per prompt token, 2 per completion token: 5 + 5 tokens cost 15 USD a request
    key, route, _, dep = budgeted(
        gw,
        upstream,
        {"soft_cost_usd": 10, "hard_cost_usd": 20},
        input_cost_per_mtok_usd=1_000_000.0,
        output_cost_per_mtok_usd=2_000_000.0,
    )
    assert SOFT not in chat(gw, key, route).headers
    assert chat(gw, key, route).headers[SOFT] == "soft-exceeded"  # 15 of 20 USD
    with pytest.raises(openai.RateLimitError) as refused:  # 30 of 20 USD
        chat(gw, key, route)
    assert "30.0000 of 20 USD" in refused.value.message
    spend = admin_spend(gw, "deployment", expect=dep)
    assert spend == {
        "deployment": dep,
        "requests": 2,
        "prompt_tokens": 10,
        "completion_tokens": 10,
        "total_tokens": 20,
        "cost_usd": 30.0,
    }


def admin_spend(gw: RunningGateway, group_by: str, *, expect: str) -> dict[str, Any]:
    """The row of ``expect`` in ``GET /admin/spend``, once the audit writer stored it."""
    headers = {"Authorization": f"Bearer {gw.admin_key}"}

    def row() -> dict[str, Any] | None:
        response = httpx.get(
            f"{gw.url}/admin/spend", params={"group_by": group_by}, headers=headers
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["object"], body["period"], body["group_by"]) == ("spend", "month", group_by)
        found = [r for r in body["data"] if r[group_by] == expect]
        return found[0] if found and found[0]["requests"] == 2 else None

    result: dict[str, Any] = wait_for(row, what=f"spend of {expect}")
    return result


def test_spend_is_grouped_by_key_tenant_and_route(
    gw: RunningGateway, upstream: FakeUpstream
) -> None:
    key, route, key_id, _ = budgeted(gw, upstream, {"hard_tokens": 1000})
    for _ in range(2):
        chat(gw, key, route)
    assert admin_spend(gw, "key", expect=key_id)["total_tokens"] == 20
    assert admin_spend(gw, "route", expect=route)["prompt_tokens"] == 10
    with httpx.Client(base_url=gw.url) as http:
        tenant = http.get(
            "/admin/spend",
            params={"group_by": "tenant", "period": "day"},
            headers={"Authorization": f"Bearer {gw.admin_key}"},
        ).json()
    assert any(r["tenant"] == "apps" and r["total_tokens"] >= 20 for r in tenant["data"])


def test_a_new_gateway_process_starts_from_the_spend_in_the_audit_log(
    gw: RunningGateway,
    upstream: FakeUpstream,
    gateway_factory: Callable[..., RunningGateway],
) -> None:
    """A restart (or a replica counting in its own process) keeps the budget: its counters
    start from the audit log. Without that the second gateway would admit two more requests."""
    key, route, _, _ = budgeted(gw, upstream, {"hard_tokens": 25})
    ids = [chat(gw, key, route).headers["x-request-id"] for _ in range(2)]  # 20 tokens
    for request_id in ids:
        gw.decision(request_id)  # stored
    fresh = gateway_factory(
        seeded=False, database_url=gw.app.gateway.settings.database_url, admin_key=gw.admin_key
    )
    chat(fresh, key, route)  # 20 < 25: admitted; 30 after
    with pytest.raises(openai.RateLimitError) as refused:
        chat(fresh, key, route)
    assert refused.value.code == "budget_exceeded"
    assert upstream.calls == 3


def test_two_gateways_sharing_redis_spend_one_budget(
    gw: RunningGateway,
    upstream: FakeUpstream,
    gateway_factory: Callable[..., RunningGateway],
) -> None:
    shared = {"redis_url": "redis://127.0.0.1:6379/0", "redis_key_prefix": uid("test")}
    first = gateway_factory(
        seeded=False,
        database_url=gw.app.gateway.settings.database_url,
        admin_key=gw.admin_key,
        **shared,
    )
    second = gateway_factory(
        seeded=False,
        database_url=gw.app.gateway.settings.database_url,
        admin_key=gw.admin_key,
        **shared,
    )
    key, route, _, _ = budgeted(gw, upstream, {"hard_tokens": 25})
    for replica in (first, second):
        wait_for(lambda r=replica: route in r.app.gateway.table.snapshot.routes, what="route")
    chat(first, key, route)  # 10
    chat(second, key, route)  # 20: the second replica sees the first one's 10
    chat(first, key, route)  # 20 < 25 before it: admitted, 30 after
    for replica in (second, first):
        with pytest.raises(openai.RateLimitError) as refused:
            chat(replica, key, route)
        assert refused.value.code == "budget_exceeded"
    assert upstream.calls == 3
