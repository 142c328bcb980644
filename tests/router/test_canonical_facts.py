"""Issue 14 through the real gateway: a rule means what it says, whatever the spelling of a fact
or the headers a client repeats. Each test reproduces one finding made on the old main.

The gateway is real (uvicorn on port 0, SQLite), driven with the official SDK and httpx; the
upstream is the fake, so the tests can count what reached it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import text

from router.policy.schema import CLASSIFICATIONS
from tests.fakes import FakeUpstream
from tests.router.conftest import (
    REPORTED,
    RunningGateway,
    assert_envelope,
    deployment,
    uid,
)

PROMPT = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream(reply="Hello.") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gw(gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return gateway_factory()


def admin(gw: RunningGateway) -> httpx.Client:
    return gw.http(gw.admin_key)


def activate(gw: RunningGateway, source: str) -> httpx.Response:
    """Save and activate a policy; an admin write reloads the gateway before it answers."""
    with admin(gw) as http:
        return http.post(
            "/admin/policies",
            json={"name": uid("p"), "format": "yaml", "source": source, "activate": True},
        )


def add(gw: RunningGateway, kind: str, body: dict[str, Any]) -> httpx.Response:
    with admin(gw) as http:
        return http.post(f"/admin/{kind}", json=body)


def route_to(gw: RunningGateway, up: FakeUpstream, **fields: Any) -> tuple[str, str]:
    """A new deployment (of acme/alpha, at ``up``) with ``fields``, and a route to it alone."""
    dep, route = uid("dep"), uid("route")
    created = add(gw, "deployments", deployment(dep, up.base_url, **fields))
    assert created.status_code == 201, created.text
    assert add(gw, "routes", {"name": route, "candidates": [dep]}).status_code == 201
    return dep, route


def denied(gw: RunningGateway, route: str, **headers: str) -> str:
    """The message of the 403 a request for ``route`` gets."""
    with pytest.raises(openai.PermissionDeniedError) as caught:
        gw.openai().chat.completions.create(model=route, messages=PROMPT, extra_headers=headers)
    body = caught.value.body
    assert isinstance(body, dict)
    return str(body["message"])


# --- one canonical spelling for every fact ---------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "stored"),
    [
        ({"hardware_vendor": "Huawei", "accelerator": None}, ("huawei", None)),
        ({"hardware_vendor": "Huawei Technologies", "accelerator": None}, ("huawei", None)),
        ({"hardware_vendor": None, "accelerator": "ascend 910b"}, ("huawei", "ascend-910b")),
        ({"hardware_vendor": "HUAWEI", "accelerator": "Ascend-910B"}, ("huawei", "ascend-910b")),
    ],
)
def test_a_vendor_spelling_cannot_dodge_a_rule(
    gw: RunningGateway, up: FakeUpstream, fields: dict[str, Any], stored: tuple[str, Any]
) -> None:
    """Old main: a deployment registered as `Huawei` served traffic under
    `deny: {hardware_vendor: [huawei]}` (Cedar compares text exactly)."""
    dep, route = route_to(gw, up, **fields)
    with admin(gw) as http:
        body = http.get(f"/admin/deployments/{dep}").json()
    assert (body["hardware_vendor"], body["accelerator"]) == stored
    rule = (
        f"rules:\n  - id: no-huawei\n    deny: {{hardware_vendor: [Huawei], deployment: [{dep}]}}\n"
    )
    assert activate(gw, rule).status_code == 201
    up.reset()
    message = denied(gw, route)
    assert "no-huawei" in message and up.calls == 0


def test_accelerator_and_training_hardware_rules_match_every_spelling(
    gw: RunningGateway, up: FakeUpstream
) -> None:
    model = f"acme/{uid('m')}"
    created = add(
        gw,
        "models",
        {
            "id": model,
            "developer": "acme",
            "license": "MIT",
            "review_status": "approved",
            "training_hardware": [{"vendor": "Huawei Technologies Co., Ltd."}],
            "claim": REPORTED,
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["training_hardware"][0]["vendor"] == "huawei"
    dep, route = route_to(gw, up, model=model, hardware_vendor=None, accelerator="ASCEND 910B")
    rules = (
        "rules:\n"
        f"  - id: no-ascend\n    deny: {{accelerator: [Ascend-910B], deployment: [{dep}]}}\n"
        f"  - id: no-huawei-trained\n    deny: {{training_hardware_vendor: [huawei], "
        f"model: ['{model.upper()}']}}\n"
    )
    assert activate(gw, rules).status_code == 201
    message = denied(gw, route)
    assert "no-ascend" in message and "no-huawei-trained" in message


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"hardware_vendor": "Huaweii"}, "did you mean 'huawei'"),
        ({"accelerator": "ascend 91b"}, "did you mean 'ascend-910b'"),
        ({"hardware_vendor": "nvidia", "accelerator": "ascend-910b"}, "made by huawei"),
        ({"location_region": "eu\r\nx-injected: 1"}, "location_region"),
    ],
)
def test_unknown_spellings_are_refused_on_write(
    gw: RunningGateway, up: FakeUpstream, fields: dict[str, Any], needle: str
) -> None:
    response = add(gw, "deployments", deployment(uid("bad"), up.base_url, **fields))
    assert response.status_code == 400, response.text
    assert needle in response.json()["error"]["message"]


# --- policies checked against the same vocabularies ------------------------------------------


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("rules: [{id: x, deny: {location_country: [XX]}}]", "'XX' is not an ISO 3166-1"),
        ("presets: [{use: no-countries, with: {countries: [XX]}}]", "'XX' is not an ISO"),
        ("rules: [{id: x, deny: {hardware_vendor: [nvida]}}]", "did you mean 'nvidia'"),
        ("rules: [{id: x, deny: {accelerator: [h1000]}}]", "is not a known accelerator"),
        ("rules: [{id: x, deny: {license_any: [MTI]}}]", "did you mean 'MIT'"),
        ("rules: [{id: x, deny: {hosting: [onprem]}}]", "did you mean 'on_prem'"),
        ("rules: [{id: x, deny: {tenant: [aps], hosting: [on_prem]}}]", "did you mean 'apps'"),
        (
            'cedar: |\n  @id("typo")\n  forbid (principal, action, resource)\n'
            '  when { resource has hostng && resource.hostng == "on_prem" };\n',
            "`resource` has no attribute 'hostng' (did you mean 'hosting'?)",
        ),
    ],
)
def test_a_policy_naming_what_does_not_exist_is_refused(
    gw: RunningGateway, source: str, needle: str
) -> None:
    """Old main: these all passed `policy validate` and then matched nothing."""
    response = activate(gw, source)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "policy_invalid",
        "source",
    )
    assert needle in error["message"]


def test_rule_literals_match_whatever_their_case(gw: RunningGateway, up: FakeUpstream) -> None:
    """`license_any: [apache-2.0]` and `model: [ACME/*]` mean Apache-2.0 and acme/...; `UK`
    means GB (old main: `license_any: [mit]` and `model: [qwen/*]` matched nothing)."""
    dep, route = route_to(gw, up, location_country="GB")
    rules = (
        "rules:\n"
        f"  - id: no-apache\n    deny: {{license_any: [apache-2.0], deployment: [{dep.upper()}]}}\n"
        f"  - id: no-acme\n    deny: {{model: ['ACME/*'], deployment: [{dep}]}}\n"
        f"  - id: no-uk\n    deny: {{location_country: [UK], deployment: [{dep}]}}\n"
    )
    assert activate(gw, rules).status_code == 201
    message = denied(gw, route)
    for rule in ("no-apache", "no-acme", "no-uk"):
        assert rule in message


def test_validate_warns_about_rules_that_match_nothing(gw: RunningGateway) -> None:
    with admin(gw) as http:
        response = http.post(
            "/admin/policies/validate",
            json={
                "format": "yaml",
                "source": "rules: [{id: cambricon, deny: {hardware_vendor: [cambricon]}}]",
            },
        )
    assert response.status_code == 200, response.text
    (warning,) = response.json()["warnings"]
    assert "cambricon" in warning and "matches nothing" in warning


# --- request context that only tightens ------------------------------------------------------


CONFIDENTIAL_DENIED = (
    "rules:\n  - id: nothing-confidential\n"
    "    deny: {classification: [confidential, restricted], model: [acme/*]}\n"
)


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Data-Classification", "confidential"), ("X-Data-Classification", "public")],
        [("X-Data-Classification", "public"), ("X-Data-Classification", "confidential")],
        [("X-Data-Classification", "public, confidential")],
        [("X-Data-Classification", "Public,RESTRICTED")],
    ],
)
def test_repeated_classification_headers_take_the_strictest(
    gw: RunningGateway, up: FakeUpstream, headers: list[tuple[str, str]]
) -> None:
    """Old main: `confidential` followed by `public` was served as `public`."""
    _, route = route_to(gw, up)
    assert activate(gw, CONFIDENTIAL_DENIED).status_code == 201
    up.reset()
    with gw.http() as http:
        response = http.post(
            "/v1/chat/completions",
            json={"model": route, "messages": PROMPT},
            headers=httpx.Headers(headers),
        )
    assert_envelope(response, 403, type="permission_error", code="provenance_policy_denied")
    assert up.calls == 0
    decision = gw.decision(response.headers["x-request-id"])
    assert decision["context"]["classification"] in CLASSIFICATIONS[2:]


@pytest.mark.parametrize(
    ("headers", "param"),
    [
        ([("X-Data-Classification", "public, top-secret")], "X-Data-Classification"),
        ([("X-Purpose", "free text of the caller's choosing")], "X-Purpose"),
        ([("X-Purpose", "not-declared")], "X-Purpose"),
        ([("X-Purpose", "support-bot"), ("X-Purpose", "evaluation")], "X-Purpose"),
        ([("X-Purpose", "support-bot, evaluation")], "X-Purpose"),
    ],
)
def test_unknown_or_ambiguous_context_is_400(
    gw: RunningGateway, up: FakeUpstream, headers: list[tuple[str, str]], param: str
) -> None:
    """Old main: any X-Purpose was accepted as free text, so each new value was a new entry in
    the decision and routing caches (one tenant could evict everyone else's)."""
    _, route = route_to(gw, up)
    assert activate(gw, "rules: []").status_code == 201
    table = gw.app.gateway.table
    cached = len(table.filtered)
    up.reset()
    with gw.http() as http:
        for _ in range(3):
            response = http.post(
                "/v1/chat/completions",
                json={"model": route, "messages": PROMPT},
                headers=httpx.Headers(headers),
            )
            code = (
                "invalid_classification" if param.endswith("Classification") else "invalid_purpose"
            )
            assert_envelope(response, 400, type="invalid_request_error", code=code, param=param)
    assert up.calls == 0 and len(table.filtered) == cached


def test_a_declared_purpose_reaches_the_policy_and_the_audit(
    gw: RunningGateway, up: FakeUpstream
) -> None:
    _, route = route_to(gw, up)
    rule = "rules:\n  - id: no-evaluation\n    deny: {purpose: [evaluation], model: [acme/*]}\n"
    assert activate(gw, rule).status_code == 201
    served = gw.openai().chat.completions.with_raw_response.create(
        model=route, messages=PROMPT, extra_headers={"X-Purpose": "Support-Bot"}
    )
    assert gw.decision(served.headers["x-request-id"])["context"]["purpose"] == "support-bot"
    message = denied(gw, route, **{"X-Purpose": "evaluation"})
    assert "no-evaluation" in message


def test_two_authorization_headers_are_refused(gw: RunningGateway) -> None:
    with httpx.Client(base_url=gw.url) as http:
        response = http.post(
            "/v1/chat/completions",
            json={"model": "chat", "messages": PROMPT},
            headers=httpx.Headers(
                [
                    ("Authorization", f"Bearer {gw.keys['limited']}"),
                    ("Authorization", f"Bearer {gw.keys['apps']}"),
                ]
            ),
        )
    assert_envelope(response, 400, type="invalid_request_error", code="invalid_header", param=None)


# --- one candidate resolver ------------------------------------------------------------------


def test_explain_and_live_routing_name_the_same_candidates(
    gw: RunningGateway, up: FakeUpstream
) -> None:
    """Old main: explain answered for a deployment id that live routing 404s, and listed
    disabled deployments that live routing dropped before the policy (so the audit row's
    candidates differed from explain's)."""
    on, route = route_to(gw, up)
    off = uid("off")
    assert add(gw, "deployments", deployment(off, up.base_url, enabled=False)).status_code == 201
    with admin(gw) as http:
        patched = http.patch(
            f"/admin/routes/{route}",
            json={
                "candidates": [off, on],
                "version": http.get(f"/admin/routes/{route}").json()["version"],
            },
        )
        assert patched.status_code == 200, patched.text
        assert activate(gw, "rules: []").status_code == 201
        explained = http.post("/admin/explain", json={"tenant": "apps", "model": route}).json()
        by_id = http.post("/admin/explain", json={"tenant": "apps", "model": on})
    served = gw.openai().chat.completions.with_raw_response.create(model=route, messages=PROMPT)
    audited = gw.decision(served.headers["x-request-id"])["candidates"]
    assert [(c["deployment"], c["allowed"], c["rule_ids"]) for c in audited] == [
        (c["deployment_id"], c["allowed"], c["rule_ids"]) for c in explained["candidates"]
    ]
    assert audited[0]["rule_ids"] == ["baseline-disabled"]
    with pytest.raises(openai.NotFoundError):
        gw.openai().chat.completions.create(model=on, messages=PROMPT)
    assert by_id.status_code == 404


# --- headers tell the truth ------------------------------------------------------------------


def test_unclaimed_facts_read_unknown_and_lineage_is_visible(
    gw: RunningGateway, up: FakeUpstream
) -> None:
    """Old main: facts without a claim were shown as if known, while the policy treated them
    as unknown; and a fine-tune of a CN model showed only its own developer's country."""
    tune = f"acme/{uid('tune')}"
    body = {
        "id": tune,
        "developer": "acme",
        "license": "MIT",
        "review_status": "approved",
        "lineage": [{"relation": "finetune_of", "model": "dragon/beta"}],
        "claim": REPORTED,
    }
    assert add(gw, "models", body).status_code == 201
    _, route = route_to(gw, up, model=tune, claim={"confidence": "unknown"})
    assert activate(gw, "rules: []").status_code == 201
    raw = gw.openai().chat.completions.with_raw_response.create(model=route, messages=PROMPT)
    assert raw.headers["x-provenance-developer-country"] == "US; lineage=CN,US"
    assert raw.headers["x-provenance-location"] == "unknown"  # the deployment's claim: unknown
    assert raw.headers["x-provenance-hardware"] == "unknown"


def test_a_deployment_with_bad_stored_text_is_never_called(
    gw: RunningGateway, up: FakeUpstream
) -> None:
    """Old main: an accelerator holding CR/LF (written around the API) made every response
    fail after the upstream was called; the SDK retried, so the prompt reached it 3 times."""
    bad, route = route_to(gw, up)
    good = uid("good")
    assert add(gw, "deployments", deployment(good, up.base_url)).status_code == 201
    with admin(gw) as http:
        version = http.get(f"/admin/routes/{route}").json()["version"]
        patched = http.patch(
            f"/admin/routes/{route}", json={"candidates": [bad, good], "version": version}
        )
    assert patched.status_code == 200, patched.text
    with gw.engine.begin() as connection:
        connection.execute(
            text("UPDATE deployments SET accelerator = :bad WHERE id = :id"),
            {"bad": "h100\r\nx-injected: 1", "id": bad},
        )
    assert activate(gw, "rules: []").status_code == 201  # any write: the gateway reloads
    up.reset()
    raw = gw.openai().chat.completions.with_raw_response.create(model=route, messages=PROMPT)
    assert raw.headers["x-provenance-deployment"] == good
    assert "x-injected" not in raw.headers and up.calls == 1
    audited = gw.decision(raw.headers["x-request-id"])["candidates"]
    assert (audited[0]["deployment"], audited[0]["rule_ids"]) == (bad, ["baseline-disabled"])


# --- a denial says why -----------------------------------------------------------------------


def test_a_denial_says_why_without_naming_deployments(gw: RunningGateway, up: FakeUpstream) -> None:
    dep, route = route_to(gw, up, location_country=None, location_eea=None)
    rule = "rules:\n  - id: eea-only\n    allow_only: {tenant: [apps], location_eea: true}\n"
    assert activate(gw, rule).status_code == 201
    message = denied(gw, route)
    assert "eea-only" in message
    assert "hosted in the EEA: yes (is unknown)" in message
    assert dep not in message
