"""Policy administration and the compliance tools, black box through the real gateway (uvicorn,
httpx and the openai SDK), on SQLite and PostgreSQL: save, validate, activate, list, presets,
explain, what-if and policy tests, and the scopes that guard them.

Tests that activate a policy restore the previously active version when they end
(``activated``), so the module-scoped gateway always serves ``TEST_POLICY`` between tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from registry.db import session_scope
from registry.service import registry_version
from router.policy import list_presets
from tests.fakes import FakeUpstream
from tests.router.conftest import (
    TEST_POLICY,
    RunningGateway,
    deployment,
    uid,
)

PROMPT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Explain yourself."}]
PRESET_DIR = Path(__file__).parents[2] / "router" / "policy" / "presets"
NO_DRAGON_FOR_CONFIDENTIAL = """\
  - id: no-dragon-for-confidential
    deny: {model: ["dragon/*"], classification: [confidential, restricted]}
"""


@dataclass
class Clients:
    admin: httpx.Client  # scopes admin, inference, compliance
    auditor: httpx.Client  # scope compliance only, tenant apps: reads tenant apps only
    org_auditor: httpx.Client  # scope compliance_org: reads every tenant
    app: httpx.Client  # scope inference only


@dataclass(frozen=True)
class ExplainRoute:
    """A route over three deployments, each on its own upstream, in this fallback order."""

    name: str
    dragon: str  # dragon/beta (CN developer): denied to tenant limited
    denied: str  # acme/alpha, id ends in -denied: denied to everyone
    alpha: str  # acme/alpha: allowed to everyone
    alone: str  # another route, over the alpha deployment alone
    upstreams: dict[str, FakeUpstream]

    @property
    def order(self) -> list[str]:
        return [self.dragon, self.denied, self.alpha]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(
    request: pytest.FixtureRequest, gateway_factory: Callable[..., RunningGateway]
) -> RunningGateway:
    return gateway_factory(backend=request.param)


@pytest.fixture(scope="module")
def clients(gw: RunningGateway) -> Iterator[Clients]:
    with (
        gw.http(gw.admin_key) as admin,
        gw.http(gw.keys["no-inference"]) as auditor,
        gw.http(gw.keys["compliance-org"]) as org_auditor,
        gw.http(gw.keys["apps"]) as app,
    ):
        yield Clients(admin=admin, auditor=auditor, org_auditor=org_auditor, app=app)


@pytest.fixture(scope="module")
def route(gw: RunningGateway) -> Iterator[ExplainRoute]:
    with ExitStack() as stack:
        dragon, denied, alpha = uid("dragon"), uid("alpha") + "-denied", uid("alpha")
        ups = {d: stack.enter_context(FakeUpstream(reply=d)) for d in (dragon, denied, alpha)}
        name, alone = uid("explained"), uid("alone")
        with gw.write() as w:
            w.create("deployment", deployment(dragon, ups[dragon].base_url, model="dragon/beta"))
            w.create("deployment", deployment(denied, ups[denied].base_url))
            w.create("deployment", deployment(alpha, ups[alpha].base_url))
            w.create("route", {"name": name, "candidates": [dragon, denied, alpha]})
            w.create("route", {"name": alone, "candidates": [alpha]})
        yield ExplainRoute(name, dragon, denied, alpha, alone, ups)


@pytest.fixture(autouse=True)
def _fresh_upstreams(request: pytest.FixtureRequest) -> None:
    if "route" in request.fixturenames:
        for upstream in request.getfixturevalue("route").upstreams.values():
            upstream.reset()


# --- helpers ------------------------------------------------------------------------------------


def admin_error(
    response: httpx.Response, status: int, *, type: str, code: str | None, param: Any = None
) -> dict[str, Any]:
    """The body is exactly the OpenAI error envelope with these values; returns the error."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert (error["type"], error["code"], error["param"]) == (type, code, param), error
    return error


def policies(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/admin/policies")
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def active_version(client: httpx.Client) -> int:
    (active,) = [p["version"] for p in policies(client) if p["active"]]
    return int(active)


def save(client: httpx.Client, source: str, *, activate: bool = False, **fields: Any) -> int:
    response = client.post(
        "/admin/policies", json={"source": source, "activate": activate, **fields}
    )
    assert response.status_code == 201, response.text
    return int(response.json()["version"])


def activate(client: httpx.Client, version: int) -> dict[str, Any]:
    response = client.post(f"/admin/policies/{version}/activate")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@contextmanager
def activated(client: httpx.Client, source: str) -> Iterator[int]:
    """Save and activate ``source``; the previously active version is active again after."""
    previous = active_version(client)
    version = save(client, source, activate=True)
    try:
        yield version
    finally:
        activate(client, previous)


def stored_registry_version(gw: RunningGateway) -> int:
    with session_scope(gw.engine) as session:
        return registry_version(session=session)


def chat(gw: RunningGateway, model: str, key: str | None = None, **headers: str) -> Any:
    return gw.openai(key).chat.completions.with_raw_response.create(
        model=model, messages=PROMPT, extra_headers=headers or None
    )


def explain(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/admin/explain", json=body)


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- presets ------------------------------------------------------------------------------------


def test_presets_lists_every_shipped_preset(clients: Clients) -> None:
    data = ok(clients.admin.get("/admin/policy-presets"))["data"]

    shipped = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    assert [preset["name"] for preset in data] == shipped
    assert len(shipped) == 7 and "no-countries" in shipped
    by_name = {preset["name"]: preset for preset in data}
    no_countries = by_name["no-countries"]
    assert no_countries["title"] and no_countries["description"]
    assert no_countries["params"] == [
        {
            "name": "countries",
            "description": no_countries["params"][0]["description"],
            "default": ["CN"],
        }
    ]
    assert no_countries["rules"][0]["id"] == "no-models-from-countries"
    assert data == ok(clients.auditor.get("/admin/policy-presets"))["data"]
    assert [p.name for p in list_presets()] == shipped


# --- validate and save --------------------------------------------------------------------------

INVALID_POLICIES = [
    pytest.param(
        "yaml",
        "rules:\n  - id: eea\n    deny: {tenant: [eu-*], location_eaa: false}\n",
        "rule 'eea': unknown condition 'location_eaa' (did you mean 'location_eea'?)",
        id="yaml-unknown-condition",
    ),
    pytest.param(
        "cedar",
        '@id("typo")\nforbid (principal, action, resource)\n'
        'when { resource.hostng == "third_party_api" };\n',
        "rule 'typo': `resource` has no attribute 'hostng' (did you mean 'hosting'?)",
        id="raw-cedar-unknown-attribute",
    ),
    pytest.param(
        "yaml",
        "rules:\n  - id: ok-rule\n    deny: {trains_on_inputs: true}\n"
        'cedar: |\n  @id("typo")\n  forbid (principal, action, resource)\n'
        '  when { resource.hostng == "x" };\n',
        "`resource` has no attribute 'hostng' (did you mean 'hosting'?)",
        id="yaml-with-cedar-block",
    ),
    pytest.param(
        "yaml",
        "rulez: []\n",
        "unknown top-level key 'rulez'",
        id="yaml-unknown-top-level-key",
    ),
]


@pytest.mark.parametrize(("fmt", "source", "error_text"), INVALID_POLICIES)
def test_invalid_policy_is_400_and_changes_nothing(
    gw: RunningGateway, clients: Clients, fmt: str, source: str, error_text: str
) -> None:
    before = policies(clients.admin)
    version_before = stored_registry_version(gw)

    for activate_it in (False, True):
        response = clients.admin.post(
            "/admin/policies", json={"format": fmt, "source": source, "activate": activate_it}
        )
        error = admin_error(
            response, 400, type="invalid_request_error", code="policy_invalid", param="source"
        )
        assert error_text in error["message"]
    validated = clients.admin.post(
        "/admin/policies/validate", json={"format": fmt, "source": source}
    )
    error = admin_error(
        validated, 400, type="invalid_request_error", code="policy_invalid", param="source"
    )
    assert error_text in error["message"]

    assert policies(clients.admin) == before
    assert stored_registry_version(gw) == version_before
    assert gw.served_version() == version_before
    assert active_version(clients.admin) == gw.policy_version


def test_validate_compiles_without_saving(gw: RunningGateway, clients: Clients) -> None:
    before = policies(clients.admin)
    source = TEST_POLICY + NO_DRAGON_FOR_CONFIDENTIAL

    body = ok(clients.auditor.post("/admin/policies/validate", json={"source": source}))

    assert body["valid"] is True
    assert body["rule_ids"][:4] == [
        "baseline-approved",
        "baseline-disabled",
        "baseline-blocked",
        "baseline-unreviewed",
    ]
    assert body["rule_ids"][4:] == [
        "test-deny-denied-deployments",
        "test-limited-no-dragon",
        "no-dragon-for-confidential",
    ]
    assert '@id("no-dragon-for-confidential")' in body["cedar"]
    assert policies(clients.admin) == before


def test_saving_without_activate_keeps_the_running_policy(
    gw: RunningGateway, clients: Clients, route: ExplainRoute
) -> None:
    running = active_version(clients.admin)
    source = TEST_POLICY + f"  - id: not-yet\n    deny: {{deployment: [{route.alpha}]}}\n"

    response = clients.admin.post(
        "/admin/policies", json={"name": "draft-1", "source": source, "activate": False}
    )

    assert response.status_code == 201, response.text
    saved = response.json()
    assert saved["version"] > running and saved["active"] is False
    assert (saved["name"], saved["format"], saved["source"]) == ("draft-1", "yaml", source)
    listed = policies(clients.admin)
    assert [p["version"] for p in listed] == sorted((p["version"] for p in listed), reverse=True)
    assert [p["version"] for p in listed if p["active"]] == [running]
    assert ok(clients.auditor.get(f"/admin/policies/{saved['version']}"))["source"] == source
    served = chat(gw, route.alone)
    assert served.headers["x-provenance-policy-version"] == str(running)
    assert served.headers["x-provenance-deployment"] == route.alpha


def test_activation_takes_effect_on_the_very_next_request(
    gw: RunningGateway, clients: Clients, route: ExplainRoute
) -> None:
    rule = uid("deny-alpha")
    source = TEST_POLICY + f"  - id: {rule}\n    deny: {{deployment: [{route.alpha}]}}\n"
    previous = active_version(clients.admin)
    version = save(clients.admin, source)
    assert chat(gw, route.alone).headers["x-provenance-policy-version"] == str(previous)

    try:
        activated_row = activate(clients.admin, version)
        # no wait: the admin write reloads the routing table before it answers
        with pytest.raises(openai.PermissionDeniedError) as caught:
            gw.openai().chat.completions.create(model=route.alone, messages=PROMPT)
        listed = policies(clients.admin)
    finally:
        activate(clients.admin, previous)

    assert activated_row["version"] == version and activated_row["active"] is True
    assert [p["version"] for p in listed if p["active"]] == [version]
    denied = caught.value
    assert denied.status_code == 403 and denied.code == "provenance_policy_denied"
    assert rule in denied.message and f"v{version}" in denied.message
    assert denied.response.headers["x-provenance-policy-version"] == str(version)
    assert route.upstreams[route.alpha].calls == 1  # only the request before activation
    row = gw.decision(denied.response.headers["x-request-id"])
    assert (row["status"], row["policy_version"]) == ("denied", version)
    assert row["candidates"][0]["rule_ids"] == [rule]
    # and back: the previous version serves the next request again, at once
    served = chat(gw, route.alone)
    assert served.headers["x-provenance-policy-version"] == str(previous)
    assert route.upstreams[route.alpha].calls == 2


def test_activating_the_active_version_changes_nothing(
    gw: RunningGateway, clients: Clients
) -> None:
    version_before = stored_registry_version(gw)
    running = active_version(clients.admin)

    assert activate(clients.admin, running)["active"] is True

    assert stored_registry_version(gw) == version_before


def test_unknown_policy_version_is_404(gw: RunningGateway, clients: Clients) -> None:
    before = policies(clients.admin)
    missing = max(p["version"] for p in before) + 100

    for response in (
        clients.admin.get(f"/admin/policies/{missing}"),
        clients.admin.post(f"/admin/policies/{missing}/activate"),
    ):
        error = admin_error(response, 404, type="invalid_request_error", code="not_found")
        assert str(missing) in error["message"]
    assert policies(clients.admin) == before


# --- scopes -------------------------------------------------------------------------------------

READ_ENDPOINTS: list[tuple[str, str, Any]] = [
    ("GET", "/admin/policies", None),
    ("GET", "/admin/policies/1", None),
    ("POST", "/admin/policies/validate", {"source": TEST_POLICY}),
    ("GET", "/admin/policy-presets", None),
    ("POST", "/admin/explain", {"tenant": "apps", "model": "acme/alpha"}),
    ("POST", "/admin/what-if", {"source": TEST_POLICY, "last": 5}),
    (
        "POST",
        "/admin/policy-tests",
        {"tests": "tests:\n  - given: {tenant: apps, deployment: x}\n    expect: deny\n"},
    ),
]
WRITE_ENDPOINTS: list[tuple[str, str, Any]] = [
    ("POST", "/admin/policies", {"source": TEST_POLICY, "activate": True}),
    ("POST", "/admin/policies/1/activate", None),
]


@pytest.mark.parametrize(("method", "path", "body"), READ_ENDPOINTS + WRITE_ENDPOINTS)
def test_an_inference_key_may_use_no_policy_endpoint(
    gw: RunningGateway, clients: Clients, method: str, path: str, body: Any
) -> None:
    before = policies(clients.admin)

    response = clients.app.request(method, path, json=body)

    error = admin_error(response, 403, type="permission_error", code="insufficient_scope")
    assert "admin" in error["message"]
    assert policies(clients.admin) == before


@pytest.mark.parametrize(("method", "path", "body"), READ_ENDPOINTS)
def test_a_compliance_key_may_read_explain_and_test(
    clients: Clients, method: str, path: str, body: Any
) -> None:
    response = clients.auditor.request(method, path, json=body)

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("method", "path", "body"), WRITE_ENDPOINTS)
def test_a_compliance_key_may_not_save_or_activate(
    gw: RunningGateway, clients: Clients, method: str, path: str, body: Any
) -> None:
    before = policies(clients.admin)
    version_before = stored_registry_version(gw)

    response = clients.auditor.request(method, path, json=body)

    error = admin_error(response, 403, type="permission_error", code="insufficient_scope")
    assert "scope admin" in error["message"]
    assert policies(clients.admin) == before
    assert stored_registry_version(gw) == version_before


def test_a_missing_key_is_401(gw: RunningGateway) -> None:
    with httpx.Client(base_url=gw.url) as anonymous:
        response = anonymous.post("/admin/explain", json={"tenant": "apps", "model": "x"})
    admin_error(response, 401, type="invalid_request_error", code="invalid_api_key")


# --- explain ------------------------------------------------------------------------------------


def test_explain_lists_every_candidate_with_rules_and_reasons(
    gw: RunningGateway, clients: Clients, route: ExplainRoute
) -> None:
    body = ok(explain(clients.org_auditor, tenant="limited", model=route.name))

    assert (body["tenant_id"], body["requested"], body["action"]) == (
        "limited",
        route.name,
        "infer",
    )
    assert body["context"] == {"classification": "internal", "purpose": None, "caller_region": None}
    assert body["policy_version"] == gw.policy_version
    assert body["registry_version"] == gw.served_version()
    candidates = body["candidates"]
    assert [c["deployment_id"] for c in candidates] == route.order
    assert [c["model_id"] for c in candidates] == ["dragon/beta", "acme/alpha", "acme/alpha"]
    assert [c["allowed"] for c in candidates] == [False, False, True]
    assert [c["rule_ids"] for c in candidates] == [
        ["test-limited-no-dragon"],
        ["test-deny-denied-deployments"],
        ["baseline-approved"],
    ]
    assert candidates[0]["reasons"][0].startswith("denied by test-limited-no-dragon: ")
    assert candidates[1]["reasons"][0].startswith("denied by test-deny-denied-deployments: ")
    assert candidates[2]["reasons"][0].startswith("allowed by baseline-approved: ")
    assert candidates[0]["provenance"]["developer_country"] == "CN"
    assert candidates[2]["provenance"]["ancestor_developer_countries"] == ["US"]
    assert body["allowed_deployments"] == [route.alpha]


@pytest.mark.parametrize(
    ("tenant", "classification", "expected_first"),
    [
        ("apps", "public", "dragon"),
        ("apps", "confidential", "alpha"),
        ("limited", "public", "alpha"),
        ("limited", "restricted", "alpha"),
    ],
)
def test_explain_agrees_with_live_routing(
    gw: RunningGateway,
    clients: Clients,
    route: ExplainRoute,
    tenant: str,
    classification: str,
    expected_first: str,
) -> None:
    with activated(clients.admin, TEST_POLICY + NO_DRAGON_FOR_CONFIDENTIAL) as version:
        body = ok(
            explain(
                clients.org_auditor,
                tenant=tenant,
                model=route.name,
                classification=classification,
            )
        )
        served = chat(gw, route.name, gw.keys[tenant], **{"X-Data-Classification": classification})

    assert body["policy_version"] == version
    allowed = [c["deployment_id"] for c in body["candidates"] if c["allowed"]]
    denied = [c["deployment_id"] for c in body["candidates"] if not c["allowed"]]
    chosen = served.headers["x-provenance-deployment"]
    assert chosen == allowed[0] == getattr(route, expected_first)
    assert served.headers["x-provenance-policy-version"] == str(version)
    assert all(route.upstreams[d].calls == 0 for d in denied)
    row = gw.decision(served.headers["x-request-id"])
    assert [(c["deployment"], c["allowed"], c["rule_ids"]) for c in row["candidates"]] == [
        (c["deployment_id"], c["allowed"], c["rule_ids"]) for c in body["candidates"]
    ]
    assert row["context"]["classification"] == body["context"]["classification"]


def test_explain_uses_the_tenant_region_as_live_routing_does(
    gw: RunningGateway, clients: Clients, route: ExplainRoute
) -> None:
    """Live routing passes the tenant's region as ``caller_region`` (docs/routing.md); explain
    must decide with the same context when the caller gives none."""
    tenant = uid("eu-tenant")
    with gw.write() as w:
        w.create("tenant", {"id": tenant, "region": "EU"})
        _, key = w.create_api_key(id=uid("eu-key"), tenant=tenant, scopes=["inference"])
    rule = "  - id: no-dragon-from-eu\n    deny: {caller_region: [EU], model: [dragon/*]}\n"

    with activated(clients.admin, TEST_POLICY + rule):
        body = ok(explain(clients.org_auditor, tenant=tenant, model=route.name))
        served = chat(gw, route.name, key)

    assert body["context"]["caller_region"] == "eu"  # regions are lower-case slugs
    assert body["candidates"][0]["rule_ids"] == ["no-dragon-from-eu"]
    assert served.headers["x-provenance-deployment"] == body["allowed_deployments"][0]
    assert gw.decision(served.headers["x-request-id"])["context"] == body["context"]


def test_explain_raises_the_classification_to_the_tenant_default(
    gw: RunningGateway, clients: Clients, route: ExplainRoute
) -> None:
    tenant = uid("vault")
    with gw.write() as w:
        w.create("tenant", {"id": tenant, "default_classification": "confidential"})

    with activated(clients.admin, TEST_POLICY + NO_DRAGON_FOR_CONFIDENTIAL):
        body = ok(explain(clients.admin, tenant=tenant, model=route.name, classification="public"))

    assert body["context"]["classification"] == "confidential"
    assert body["candidates"][0]["rule_ids"] == ["no-dragon-for-confidential"]
    assert body["allowed_deployments"] == [route.alpha]


def test_explain_of_an_unknown_model_is_404(clients: Clients) -> None:
    response = explain(clients.auditor, tenant="apps", model="nobody/nothing")

    error = admin_error(
        response, 404, type="invalid_request_error", code="model_not_found", param="model"
    )
    assert "nobody/nothing" in error["message"]


def test_explain_with_a_bad_classification_is_400(clients: Clients, route: ExplainRoute) -> None:
    response = explain(clients.auditor, tenant="apps", model=route.name, classification="secret")

    # refused by the body's schema (an enum in the OpenAPI document), like every invalid field
    error = admin_error(
        response, 400, type="invalid_request_error", code="invalid_value", param="classification"
    )
    assert "confidential" in error["message"]


# --- what-if ------------------------------------------------------------------------------------


def test_what_if_reports_the_recorded_requests_a_draft_changes(
    gw: RunningGateway, clients: Clients, upstreams: Callable[..., FakeUpstream]
) -> None:
    up = upstreams()
    tenant, first, second, other = uid("wi"), uid("wi-a"), uid("wi-b"), uid("wi-c")
    route, other_route = uid("wi-route"), uid("wi-other")
    with gw.write() as w:
        w.create("tenant", {"id": tenant})
        _, key = w.create_api_key(id=uid("wi-key"), tenant=tenant, scopes=["inference"])
        for dep_id in (first, second, other):
            w.create("deployment", deployment(dep_id, up.base_url))
        w.create("route", {"name": route, "candidates": [first, second]})
        w.create("route", {"name": other_route, "candidates": [other]})
    since = datetime.now(UTC)

    routed = [chat(gw, route, key).headers["x-request-id"] for _ in range(3)]
    elsewhere = chat(gw, other_route, key).headers["x-request-id"]
    refused = []
    with pytest.raises(openai.AuthenticationError) as unauthenticated:
        chat(gw, route, "pr-not-a-key-000000000000000000000000")
    refused.append(unauthenticated.value.response.headers["x-request-id"])
    with pytest.raises(openai.NotFoundError) as unknown:
        chat(gw, "nobody/nothing", key)
    refused.append(unknown.value.response.headers["x-request-id"])
    for request_id in (*routed, elsewhere, *refused):
        gw.decision(request_id)  # every row is flushed before the replay
    window = {"since": since.isoformat(), "last": 100}
    assert {r["status"] for r in map(gw.decision, refused)} == {"error"}

    running = ok(clients.admin.get(f"/admin/policies/{active_version(clients.admin)}"))
    same = ok(
        clients.org_auditor.post("/admin/what-if", json={"source": running["source"], **window})
    )
    rule = uid("wi-rule")
    stricter = running["source"] + f"  - id: {rule}\n    deny: {{deployment: [{first}]}}\n"
    changed = ok(clients.org_auditor.post("/admin/what-if", json={"source": stricter, **window}))

    assert (same["examined"], same["changed"], same["changes"]) == (4, 0, [])
    assert (changed["examined"], changed["changed"]) == (4, 3)
    assert changed["registry_version"] == gw.served_version()
    assert [c["request_id"] for c in changed["changes"]] == routed  # oldest first
    for change in changed["changes"]:
        assert change["tenant_id"] == tenant and change["requested_model"] == route
        assert (change["allowed_before"], change["allowed_after"]) == ([first, second], [second])
        assert (change["first_before"], change["first_after"]) == (first, second)
        assert change["chosen_deployment"] == first
        assert change["first_choice_changed"] is True and change["chosen_now_denied"] is True
        (newly_denied,) = change["newly_denied"]
        assert (newly_denied["deployment_id"], newly_denied["rule_ids"]) == (first, [rule])
        assert change["newly_allowed"] == []


def test_what_if_filters_by_tenant_and_rejects_an_invalid_draft(
    gw: RunningGateway, clients: Clients, route: ExplainRoute
) -> None:
    served = chat(gw, route.name, gw.keys["limited"])
    gw.decision(served.headers["x-request-id"])
    loosened = TEST_POLICY.split("  - id: test-limited-no-dragon")[0]  # the first rule alone
    assert "test-deny-denied-deployments" in loosened and "limited" not in loosened

    report = ok(
        clients.admin.post(
            "/admin/what-if", json={"source": loosened, "tenant": "limited", "last": 1}
        )
    )
    invalid = clients.admin.post("/admin/what-if", json={"source": "rules: [{id: x}]\n"})

    assert (report["examined"], report["changed"]) == (1, 1)
    (change,) = report["changes"]
    assert change["request_id"] == served.headers["x-request-id"]
    assert change["first_after"] == route.dragon and change["first_before"] == route.alpha
    assert change["chosen_now_denied"] is False
    assert [d["deployment_id"] for d in change["newly_allowed"]] == [route.dragon]
    admin_error(invalid, 400, type="invalid_request_error", code="policy_invalid", param="source")


# --- policy tests -------------------------------------------------------------------------------


def policy_tests(route: ExplainRoute) -> str:
    return f"""\
tests:
  - name: denied deployments are denied
    given: {{tenant: apps, deployment: {route.denied}}}
    expect: deny
    rule: test-deny-denied-deployments
  - name: limited may not use dragon
    given: {{tenant: limited, deployment: {route.dragon}}}
    expect: deny
    rule: test-limited-no-dragon
  - name: apps may use dragon
    given: {{tenant: apps, deployment: {route.dragon}}}
    expect: allow
  - name: wrong on purpose
    given: {{tenant: apps, deployment: {route.alpha}}}
    expect: deny
"""


def test_policy_tests_run_against_the_active_policy(clients: Clients, route: ExplainRoute) -> None:
    report = ok(
        clients.org_auditor.post("/admin/policy-tests", json={"tests": policy_tests(route)})
    )

    assert (report["ok"], report["passed"], report["failed"]) == (False, 3, 1)
    results = {r["name"]: r for r in report["results"]}
    assert [r["passed"] for r in report["results"]] == [True, True, True, False]
    wrong = results["wrong on purpose"]
    assert (wrong["expected"], wrong["actual"]) == ("deny", "allow")
    assert wrong["message"] == "expected deny, got allow; decided by baseline-approved"
    limited = results["limited may not use dragon"]
    assert limited["rule_ids"] == ["test-limited-no-dragon"] and limited["message"] == ""
    assert limited["reasons"][0].startswith("denied by test-limited-no-dragon")


def test_policy_tests_run_against_a_draft(clients: Clients, route: ExplainRoute) -> None:
    draft = TEST_POLICY + NO_DRAGON_FOR_CONFIDENTIAL + "  - id: deny-alpha\n"
    draft += f"    deny: {{deployment: [{route.alpha}]}}\n"
    tests = policy_tests(route).replace("wrong on purpose", "alpha denied by the draft")
    tests += "    rule: deny-alpha\n"

    report = ok(
        clients.org_auditor.post(
            "/admin/policy-tests", json={"tests": tests, "policy": {"source": draft}}
        )
    )

    assert (report["ok"], report["passed"], report["failed"]) == (True, 4, 0)


def test_policy_tests_report_a_wrong_expected_rule(clients: Clients, route: ExplainRoute) -> None:
    tests = f"""\
tests:
  - name: right decision, wrong rule
    given: {{tenant: limited, deployment: {route.dragon}}}
    expect: deny
    rule: test-deny-denied-deployments
"""
    report = ok(clients.admin.post("/admin/policy-tests", json={"tests": tests}))

    assert (report["ok"], report["failed"]) == (False, 1)
    assert report["results"][0]["message"] == (
        "expected rule test-deny-denied-deployments to decide; decided by test-limited-no-dragon"
    )


@pytest.mark.parametrize(
    ("body", "param", "text"),
    [
        ({"tests": "tests: []\n"}, "tests", "non-empty `tests:` list"),
        ({"tests": "tests:\n  - given: {tenant: apps}\n    expect: deny\n"}, "tests", "deployment"),
        (
            {
                "tests": "tests:\n  - given: {tenant: apps, deployment: b}\n    expect: deny\n",
                "policy": {"source": "rules: [{id: x, deny: {no_such: 1}}]\n"},
            },
            "source",
            "unknown condition 'no_such'",
        ),
    ],
)
def test_policy_tests_reject_a_malformed_file_or_policy(
    clients: Clients, body: dict[str, Any], param: str, text: str
) -> None:
    response = clients.auditor.post("/admin/policy-tests", json=body)

    code = "policy_invalid" if param == "source" else None
    error = admin_error(response, 400, type="invalid_request_error", code=code, param=param)
    assert text in error["message"]
