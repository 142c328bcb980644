"""Compliance reads are scoped to the key's tenant (issue 15), black box through the real
gateway on SQLite and PostgreSQL.

A ``compliance`` key reads only its own tenant's routing decisions, registry changes, explain
and what-if; asking for another tenant is 403 in the OpenAI envelope. A ``compliance_org`` key
(organisation-wide grant) and an ``admin`` key read every tenant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.fakes import FakeUpstream
from tests.router.conftest import TEST_POLICY, RunningGateway, deployment, uid

PROMPT = [{"role": "user", "content": "Who may read this?"}]


@dataclass(frozen=True)
class Setup:
    gw: RunningGateway
    route: str
    apps_requests: list[str]
    limited_requests: list[str]


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def setup(
    request: pytest.FixtureRequest,
    gateway_factory: Callable[..., RunningGateway],
    up: FakeUpstream,
) -> Setup:
    gw = gateway_factory(backend=request.param)
    route, dep = uid("scoped"), uid("scoped-dep")
    with gw.write() as w:
        w.create("deployment", deployment(dep, up.base_url))
        w.create("route", {"name": route, "candidates": [dep]})

    def served(key: str) -> str:
        raw = gw.openai(gw.keys[key]).chat.completions.with_raw_response.create(
            model=route,
            messages=PROMPT,  # type: ignore[arg-type]
        )
        request_id: str = raw.headers["x-request-id"]
        gw.decision(request_id)
        return request_id

    return Setup(
        gw, route, [served("apps") for _ in range(2)], [served("limited") for _ in range(2)]
    )


@pytest.fixture(scope="module")
def auditor(setup: Setup) -> Iterator[httpx.Client]:
    """Scope ``compliance``, tenant ``apps``."""
    with setup.gw.http(setup.gw.keys["no-inference"]) as client:
        yield client


@pytest.fixture(scope="module")
def org_auditor(setup: Setup) -> Iterator[httpx.Client]:
    """Scope ``compliance_org``, tenant ``apps``: the organisation-wide grant."""
    with setup.gw.http(setup.gw.keys["compliance-org"]) as client:
        yield client


@pytest.fixture(scope="module")
def admin(setup: Setup) -> Iterator[httpx.Client]:
    with setup.gw.http(setup.gw.admin_key) as client:
        yield client


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def out_of_scope(response: httpx.Response, param: str) -> None:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"], error["param"]) == (
        "permission_error",
        "insufficient_scope",
        param,
    )
    assert "compliance_org" in error["message"]


def request_ids(response: httpx.Response) -> set[str]:
    return {d["request_id"] for d in ok(response)["data"]}


# --- decisions ----------------------------------------------------------------------------------


def test_a_compliance_key_lists_only_its_own_tenants_decisions(
    setup: Setup, auditor: httpx.Client
) -> None:
    listed = ok(auditor.get("/admin/decisions", params={"limit": 1000}))["data"]

    assert {d["tenant_id"] for d in listed} == {"apps"}
    assert set(setup.apps_requests) <= {d["request_id"] for d in listed}
    own = request_ids(auditor.get("/admin/decisions", params={"tenant_id": "apps"}))
    assert set(setup.apps_requests) <= own


def test_a_compliance_key_may_not_ask_for_another_tenants_decisions(
    auditor: httpx.Client,
) -> None:
    out_of_scope(auditor.get("/admin/decisions", params={"tenant_id": "limited"}), "tenant_id")


@pytest.mark.parametrize("reader", ["org_auditor", "admin"])
def test_org_wide_and_admin_keys_read_every_tenants_decisions(
    setup: Setup, reader: str, request: pytest.FixtureRequest
) -> None:
    client: httpx.Client = request.getfixturevalue(reader)

    everyone = request_ids(client.get("/admin/decisions", params={"limit": 1000}))
    limited = ok(client.get("/admin/decisions", params={"tenant_id": "limited"}))["data"]

    assert set(setup.apps_requests + setup.limited_requests) <= everyone
    assert {d["tenant_id"] for d in limited} == {"limited"}
    assert set(setup.limited_requests) <= {d["request_id"] for d in limited}


# --- registry changes ---------------------------------------------------------------------------


def changed_entities(response: httpx.Response) -> set[tuple[str, str]]:
    return {(c["kind"], c["entity_id"]) for c in ok(response)["data"]}


def test_a_compliance_key_sees_shared_facts_and_its_own_tenant_and_keys(
    setup: Setup, auditor: httpx.Client
) -> None:
    seen = changed_entities(auditor.get("/admin/changes", params={"limit": 1000}))

    # organisation-wide facts that decide where every tenant's requests go
    assert {("organization", "acme"), ("model", "acme/alpha"), ("route", setup.route)} <= seen
    assert ("policy", str(setup.gw.policy_version)) in seen
    # its own tenant and that tenant's keys
    assert {("tenant", "apps"), ("api_key", "apps-key"), ("api_key", "compliance-only")} <= seen
    # never another tenant or another tenant's keys
    assert ("tenant", "limited") not in seen and ("api_key", "limited-key") not in seen
    assert not changed_entities(
        auditor.get("/admin/changes", params={"kind": "tenant", "entity_id": "limited"})
    )


@pytest.mark.parametrize("reader", ["org_auditor", "admin"])
def test_org_wide_and_admin_keys_see_every_change(
    setup: Setup, reader: str, request: pytest.FixtureRequest
) -> None:
    client: httpx.Client = request.getfixturevalue(reader)

    seen = changed_entities(client.get("/admin/changes", params={"limit": 1000}))

    assert {("tenant", "limited"), ("api_key", "limited-key"), ("tenant", "apps")} <= seen


# --- explain and what-if ------------------------------------------------------------------------


def test_a_compliance_key_explains_only_its_own_tenant(setup: Setup, auditor: httpx.Client) -> None:
    own = ok(auditor.post("/admin/explain", json={"tenant": "apps", "model": setup.route}))
    other = auditor.post("/admin/explain", json={"tenant": "limited", "model": setup.route})

    assert own["tenant_id"] == "apps"
    out_of_scope(other, "tenant")


def test_an_org_wide_key_explains_any_tenant(setup: Setup, org_auditor: httpx.Client) -> None:
    body = ok(org_auditor.post("/admin/explain", json={"tenant": "limited", "model": setup.route}))
    assert body["tenant_id"] == "limited"


def test_a_compliance_keys_what_if_replays_only_its_own_tenant(
    setup: Setup, auditor: httpx.Client, org_auditor: httpx.Client
) -> None:
    everything = {"source": TEST_POLICY + "  - id: x\n    deny: {model: ['acme/*']}\n"}

    own = ok(auditor.post("/admin/what-if", json={**everything, "last": 1000}))
    other = auditor.post("/admin/what-if", json={**everything, "tenant": "limited"})
    org = ok(org_auditor.post("/admin/what-if", json={**everything, "last": 1000}))

    own_ids = {c["request_id"] for c in own["changes"]}
    assert set(setup.apps_requests) <= own_ids
    assert not own_ids & set(setup.limited_requests)
    assert {c["tenant_id"] for c in own["changes"]} == {"apps"}
    out_of_scope(other, "tenant")
    assert set(setup.apps_requests + setup.limited_requests) <= {
        c["request_id"] for c in org["changes"]
    }


def test_a_compliance_key_runs_policy_tests_only_for_its_own_tenant(
    setup: Setup, auditor: httpx.Client, org_auditor: httpx.Client
) -> None:
    """Before, any compliance key could learn another tenant's decisions through a test file."""
    case = "  - given: {{tenant: {tenant}, deployment: x}}\n    expect: deny\n"
    own = {"tests": "tests:\n" + case.format(tenant="apps")}
    mixed = {"tests": "tests:\n" + case.format(tenant="apps") + case.format(tenant="limited")}

    assert ok(auditor.post("/admin/policy-tests", json=own))["passed"] == 1
    out_of_scope(auditor.post("/admin/policy-tests", json=mixed), "tests")
    assert ok(org_auditor.post("/admin/policy-tests", json=mixed))["passed"] == 2
