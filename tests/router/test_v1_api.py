"""The OpenAI surface as the official SDK sees it: success, provenance headers, pass-through,
``/v1/models`` and every error class with its exact envelope.

One gateway (SQLite) and one fake upstream serve the whole module; tests that inject faults use
their own upstreams and uniquely named deployments, so nothing leaks between tests.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from registry.service import ValidationFailed
from router.openai.protocol import strictest_classification
from tests.fakes import FakeUpstream
from tests.router.conftest import (
    REPORTED,
    RunningGateway,
    assert_envelope,
    closed_port_url,
    deployment,
    uid,
)

PROMPT = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream(reply="Hello from the fake upstream.") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gw(gateway_factory: Callable[..., RunningGateway], up: FakeUpstream) -> RunningGateway:
    gw = gateway_factory()
    with gw.write() as w:
        w.create("deployment", deployment("alpha-us", up.base_url))
        w.create(
            "deployment",
            deployment(
                "beta-cn",
                up.base_url,
                model="dragon/beta",
                location_country="CN",
                location_region="cn-north-1",
                hardware_vendor="huawei",
                accelerator="ascend-910b",
            ),
        )
        w.create("deployment", deployment("gamma-denied", up.base_url))
        w.create("deployment", deployment("off-us", up.base_url, enabled=False))
        w.create("deployment", deployment("renamed-us", up.base_url, upstream_model="fake-model"))
        w.create("route", {"name": "chat", "candidates": ["alpha-us"]})
        w.create("route", {"name": "denied-route", "candidates": ["gamma-denied"]})
        w.create("route", {"name": "disabled-route", "candidates": ["off-us"]})
        w.create("route", {"name": "renamed", "candidates": ["renamed-us"]})
    return gw


@pytest.fixture(autouse=True)
def _fresh_upstream(up: FakeUpstream) -> None:
    up.reset()


def provenance(headers: httpx.Headers) -> dict[str, str]:
    """The deployment's provenance headers (the signed receipt has its own tests)."""
    return {
        k: v
        for k, v in headers.items()
        if k.startswith("x-provenance-") and k != "x-provenance-receipt"
    }


def alpha_headers(gw: RunningGateway) -> dict[str, str]:
    return {
        "x-provenance-model": "acme/alpha",
        "x-provenance-deployment": "alpha-us",
        "x-provenance-developer-country": "US",
        "x-provenance-license": "Apache-2.0",
        "x-provenance-location": "US/us-east-1",
        "x-provenance-hardware": "nvidia/h100",
        "x-provenance-policy-version": str(gw.policy_version),
    }


# --- success and provenance headers ---------------------------------------------------------


def test_chat_completion_carries_provenance_headers(gw: RunningGateway, up: FakeUpstream) -> None:
    raw = gw.openai().chat.completions.with_raw_response.create(model="chat", messages=PROMPT)
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello from the fake upstream."
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert provenance(raw.headers) == alpha_headers(gw)
    assert raw.headers["x-request-id"].startswith("req_")
    assert up.calls == 1 and up.requests[0].path == "/v1/chat/completions"


def test_headers_name_the_serving_deployment_facts(gw: RunningGateway) -> None:
    raw = gw.openai().chat.completions.with_raw_response.create(
        model="dragon/beta", messages=PROMPT
    )
    assert provenance(raw.headers) == {
        "x-provenance-model": "dragon/beta",
        "x-provenance-deployment": "beta-cn",
        "x-provenance-developer-country": "CN",
        "x-provenance-license": "MIT",
        "x-provenance-location": "CN/cn-north-1",
        "x-provenance-hardware": "huawei/ascend-910b",
        "x-provenance-policy-version": str(gw.policy_version),
    }


def test_stream_carries_provenance_headers_and_relays_every_chunk(
    gw: RunningGateway, up: FakeUpstream
) -> None:
    up.stream_chunks = 4
    with gw.openai().chat.completions.with_streaming_response.create(
        model="chat", messages=PROMPT, stream=True
    ) as response:
        assert provenance(response.headers) == alpha_headers(gw)
        assert response.headers["x-request-id"].startswith("req_")
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 4


@pytest.mark.anyio
async def test_async_sdk_stream(gw: RunningGateway) -> None:
    client = gw.async_openai()
    stream = await client.chat.completions.create(model="chat", messages=PROMPT, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Hello from the fake upstream."
    await client.close()


def test_completions_and_embeddings(gw: RunningGateway, up: FakeUpstream) -> None:
    client = gw.openai()
    completion = client.completions.create(model="chat", prompt="Once upon")
    assert completion.choices[0].text == "Hello from the fake upstream."
    raw = client.embeddings.with_raw_response.create(model="chat", input=["a b", "c"])
    embeddings = raw.parse()
    assert [len(e.embedding) for e in embeddings.data] == [8, 8]
    assert raw.headers["x-provenance-deployment"] == "alpha-us"
    assert [r.path for r in up.requests] == ["/v1/completions", "/v1/embeddings"]


def test_each_request_gets_its_own_request_id(gw: RunningGateway) -> None:
    client = gw.openai()
    ids = {
        client.chat.completions.with_raw_response.create(model="chat", messages=PROMPT).headers[
            "x-request-id"
        ]
        for _ in range(5)
    }
    assert len(ids) == 5


# --- pass-through ----------------------------------------------------------------------------


def test_unknown_fields_pass_through_untouched(gw: RunningGateway, up: FakeUpstream) -> None:
    extra = {"vendor_knob": {"nested": [1, 2.5, None, "x"]}, "top_k": 7, "min_p": 0.05}
    gw.openai().chat.completions.create(
        model="chat", messages=PROMPT, temperature=0.3, seed=11, extra_body=extra
    )
    received = up.requests[0].json
    assert {k: received[k] for k in extra} == extra
    assert (received["temperature"], received["seed"], received["model"]) == (0.3, 11, "chat")
    assert received["messages"] == PROMPT


def test_request_bytes_reach_the_upstream_unchanged(gw: RunningGateway, up: FakeUpstream) -> None:
    raw = (
        b'{ "model" : "chat",\n  "messages": [{"role":"user","content":"caf\\u00e9 \xe2\x98\x95"}],'
        b' "x_custom": [1, {"a": null}] }'
    )
    with gw.http() as http:
        response = http.post(
            "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
        )
    assert response.status_code == 200
    assert up.requests[0].raw == raw


def test_upstream_model_name_replaces_model_and_keeps_other_fields(
    gw: RunningGateway, up: FakeUpstream
) -> None:
    gw.openai().chat.completions.create(
        model="renamed", messages=PROMPT, extra_body={"repetition_penalty": 1.1}
    )
    received = up.requests[0].json
    assert received["model"] == "fake-model"
    assert received["repetition_penalty"] == 1.1 and received["messages"] == PROMPT


# --- admin API writes are served at once --------------------------------------------------------


def test_admin_api_registration_is_routable_immediately(
    gateway_factory: Callable[..., RunningGateway], up: FakeUpstream
) -> None:
    """An admin write reloads the routing table before it answers: no wait for the poller
    (this gateway's poller would take an hour)."""
    gw = gateway_factory(snapshot_poll_s=3600, seeded=False)
    tenant, dep, route = "adm", "adm-ca", "adm-route"
    admin = {"Authorization": f"Bearer {gw.admin_key}"}
    with httpx.Client(base_url=gw.url, headers=admin, timeout=30.0) as http:
        for path, body in [
            (
                "/admin/organizations",
                {"id": "acme", "name": "Acme", "hq_country": "US", "claim": REPORTED},
            ),
            ("/admin/licenses", {"id": "Apache-2.0", "name": "Apache License 2.0"}),
            (
                "/admin/models",
                {
                    "id": "acme/alpha",
                    "developer": "acme",
                    "license": "Apache-2.0",
                    "review_status": "approved",
                    "claim": REPORTED,
                },
            ),
            ("/admin/tenants", {"id": tenant, "name": "Admin-made"}),
            ("/admin/deployments", deployment(dep, up.base_url, location_country="CA")),
            ("/admin/routes", {"name": route, "candidates": [dep]}),
        ]:
            assert http.post(path, json=body).status_code == 201, path
        created = http.post(
            "/admin/api-keys",
            json={"id": f"{tenant}-key", "tenant": tenant, "scopes": ["inference"]},
        )
        assert created.status_code == 201
        key = created.json()["key"]
        assert key not in http.get(f"/admin/api-keys/{tenant}-key").text  # shown once only
    raw = gw.openai(key).chat.completions.with_raw_response.create(model=route, messages=PROMPT)
    assert raw.headers["x-provenance-deployment"] == dep
    assert raw.headers["x-provenance-location"] == "CA/us-east-1"
    assert raw.headers["x-provenance-developer-country"] == "US"
    assert gw.decision(raw.headers["x-request-id"])["tenant_id"] == tenant


# --- /v1/models -------------------------------------------------------------------------------


def test_models_lists_what_the_tenant_may_use_with_provenance(gw: RunningGateway) -> None:
    listed = {m.id: m for m in gw.openai().models.list()}
    assert {"acme/alpha", "dragon/beta", "chat", "renamed"} <= set(listed)
    # a route or model whose every deployment is denied or disabled is not offered
    assert not {"denied-route", "disabled-route"} & set(listed)
    beta = listed["dragon/beta"].model_dump()
    assert beta["object"] == "model" and beta["owned_by"] == "dragon"
    assert beta["developer_countries"] == ["CN"]
    assert beta["effective_licenses"] == ["MIT"]
    assert beta["deployment_locations"] == ["CN"]
    assert beta["deployments"] == ["beta-cn"]
    chat = listed["chat"].model_dump()
    assert chat["kind"] == "route" and chat["models"] == ["acme/alpha"]
    # acme/alpha's own deployments: the denied and the disabled ones are not listed
    assert set(listed["acme/alpha"].model_dump()["deployments"]) == {"alpha-us", "renamed-us"}


def test_models_hides_a_model_the_policy_denies_to_the_tenant(gw: RunningGateway) -> None:
    client = gw.openai(gw.keys["limited"])
    listed = {m.id for m in client.models.list()}
    assert "acme/alpha" in listed and "chat" in listed
    assert "dragon/beta" not in listed
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("dragon/beta")
    assert caught.value.code == "model_not_found"


def test_retrieve_model_by_id_with_a_slash(gw: RunningGateway) -> None:
    model = gw.openai().models.retrieve("acme/alpha")
    assert model.id == "acme/alpha" and model.owned_by == "acme"
    with pytest.raises(openai.NotFoundError) as caught:
        gw.openai().models.retrieve("nobody/nothing")
    assert_envelope(
        caught.value.response,
        404,
        type="invalid_request_error",
        code="model_not_found",
        param="model",
    )


def test_models_needs_a_key(gw: RunningGateway) -> None:
    with pytest.raises(openai.AuthenticationError):
        gw.openai("pr-not-a-real-key-0123456789").models.list()


# --- errors: authentication and validation ----------------------------------------------------


def test_no_api_key_is_401(gw: RunningGateway) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        # the SDK insists on a key; omitting its Authorization header is how it sends none
        gw.openai().chat.completions.create(
            model="chat", messages=PROMPT, extra_headers={"Authorization": openai.omit}
        )
    error = assert_envelope(
        caught.value.response, 401, type="invalid_request_error", code="invalid_api_key"
    )
    assert "didn't provide an API key" in error["message"]
    with httpx.Client(base_url=gw.url) as http:
        response = http.post("/v1/chat/completions", json={"model": "chat", "messages": PROMPT})
    assert_envelope(response, 401, type="invalid_request_error", code="invalid_api_key")


def test_wrong_api_key_is_401(gw: RunningGateway, up: FakeUpstream) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        gw.openai("pr-wrong-key-000000000000000000").chat.completions.create(
            model="chat", messages=PROMPT
        )
    assert caught.value.code == "invalid_api_key"
    assert_envelope(
        caught.value.response, 401, type="invalid_request_error", code="invalid_api_key"
    )
    assert up.calls == 0


def test_key_without_inference_scope_is_403(gw: RunningGateway, up: FakeUpstream) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        gw.openai(gw.keys["no-inference"]).chat.completions.create(model="chat", messages=PROMPT)
    assert_envelope(caught.value.response, 403, type="permission_error", code="insufficient_scope")
    assert up.calls == 0


def test_unknown_model_is_404_model_not_found(gw: RunningGateway) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        gw.openai().chat.completions.create(model="no/such-model", messages=PROMPT)
    assert caught.value.code == "model_not_found"
    error = assert_envelope(
        caught.value.response,
        404,
        type="invalid_request_error",
        code="model_not_found",
        param="model",
    )
    assert "no/such-model" in error["message"]


def test_unknown_url_is_404(gw: RunningGateway) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        gw.openai().get("/no/such/endpoint", cast_to=object)
    assert_envelope(caught.value.response, 404, type="invalid_request_error", code="unknown_url")


def test_missing_messages_is_400(gw: RunningGateway, up: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        gw.openai().post("/chat/completions", body={"model": "chat"}, cast_to=object)
    assert caught.value.param == "messages"
    assert_envelope(
        caught.value.response, 400, type="invalid_request_error", code=None, param="messages"
    )
    assert up.calls == 0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "chat", "messages": "not a list"}, "messages"),
        ({"messages": PROMPT}, "model"),
        ({"model": "", "messages": PROMPT}, "model"),
        ({"model": "chat", "messages": PROMPT, "stream": "yes"}, "stream"),
    ],
)
def test_invalid_fields_are_400(gw: RunningGateway, body: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        gw.openai().post("/chat/completions", body=body, cast_to=object)
    assert_envelope(
        caught.value.response, 400, type="invalid_request_error", code=None, param=param
    )


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b""])
def test_invalid_json_is_400(gw: RunningGateway, content: bytes) -> None:
    with gw.http() as http:
        response = http.post(
            "/v1/chat/completions", content=content, headers={"content-type": "application/json"}
        )
    assert_envelope(response, 400, type="invalid_request_error", code=None)


def test_wrong_method_is_405_with_allow(gw: RunningGateway) -> None:
    with gw.http() as http:
        response = http.get("/v1/chat/completions")
        assert_envelope(response, 405, type="invalid_request_error", code="method_not_allowed")
        assert response.headers["allow"] == "POST"
        response = http.request("TRACE", "/v1/models")
        assert_envelope(response, 405, type="invalid_request_error", code="method_not_allowed")
        assert response.headers["allow"] == "GET"


def raw_request(url: str, request: bytes) -> tuple[int, dict[str, Any]]:
    """Send ``request`` as written (httpx refuses a header value ending in a space, which is
    exactly what curl sends for ``-H "Authorization: Bearer $UNSET"``)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("authorization", [b"Bearer ", b"Bearer", b"bearer    "])
def test_an_empty_bearer_is_a_missing_key_on_both_surfaces(
    gw: RunningGateway, authorization: bytes
) -> None:
    """``curl -H "Authorization: Bearer $PR_KEY"`` with the variable unset: the same 401, the
    same words (OpenAI's "You didn't provide an API key"), on /v1 and on /admin."""
    errors = []
    for method, path in ((b"GET", b"/v1/models"), (b"GET", b"/admin/version")):
        request = (
            method + b" " + path + b" HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
            b"Authorization: " + authorization + b"\r\n\r\n"
        )
        status, body = raw_request(gw.url, request)
        assert status == 401, body
        errors.append(body["error"])
    assert errors[0] == errors[1]
    assert (errors[0]["type"], errors[0]["code"]) == ("invalid_request_error", "invalid_api_key")
    assert errors[0]["message"].startswith("You didn't provide an API key.")


def test_a_wrong_key_is_worded_alike_on_both_surfaces(gw: RunningGateway) -> None:
    with gw.http("pr-not-a-registered-key-00000000000") as http:
        v1, admin = http.get("/v1/models"), http.get("/admin/version")
    assert v1.status_code == admin.status_code == 401
    assert v1.json() == admin.json()
    assert v1.json()["error"]["message"] == "Incorrect API key provided."
    assert v1.headers["www-authenticate"] == admin.headers["www-authenticate"] == "Bearer"


def test_auth_scheme_is_case_insensitive(gw: RunningGateway) -> None:
    with httpx.Client(base_url=gw.url) as http:
        response = http.post(
            "/v1/chat/completions",
            json={"model": "chat", "messages": PROMPT},
            headers={"Authorization": f"bearer {gw.keys['apps']}"},  # RFC 7235: any case
        )
    assert response.status_code == 200, response.text


def test_unknown_tenant_default_classification_fails_closed(gw: RunningGateway) -> None:
    """The registry refuses an unknown default label; should one reach the router anyway (a row
    written out of band), it counts as `restricted`, never as `public`."""
    with pytest.raises(ValidationFailed), gw.write() as w:
        w.create("tenant", {"id": uid("odd"), "default_classification": "secret"})
    assert strictest_classification([], "secret") == "restricted"
    assert strictest_classification([b"public"], "secret") == "restricted"
    assert strictest_classification([b"confidential"], "internal") == "confidential"
    assert strictest_classification([b"public"], "internal") == "internal"


def test_bad_data_classification_is_400(gw: RunningGateway, up: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        gw.openai().chat.completions.create(
            model="chat", messages=PROMPT, extra_headers={"X-Data-Classification": "top-secret"}
        )
    error = assert_envelope(
        caught.value.response,
        400,
        type="invalid_request_error",
        code="invalid_classification",
        param="X-Data-Classification",
    )
    assert "top-secret" in error["message"]
    assert up.calls == 0


# --- errors: policy and upstream ----------------------------------------------------------------


def test_policy_denial_is_403_naming_the_rule(gw: RunningGateway, up: FakeUpstream) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        gw.openai().chat.completions.create(model="denied-route", messages=PROMPT)
    assert caught.value.code == "provenance_policy_denied"
    error = assert_envelope(
        caught.value.response, 403, type="permission_error", code="provenance_policy_denied"
    )
    assert "test-deny-denied-deployments" in error["message"]
    assert caught.value.response.headers["x-provenance-policy-version"] == str(gw.policy_version)
    assert "x-provenance-deployment" not in caught.value.response.headers
    assert up.calls == 0


def test_tenant_specific_denial(gw: RunningGateway, up: FakeUpstream) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        gw.openai(gw.keys["limited"]).chat.completions.create(model="dragon/beta", messages=PROMPT)
    assert "test-limited-no-dragon" in caught.value.message
    assert up.calls == 0
    gw.openai().chat.completions.create(model="dragon/beta", messages=PROMPT)  # others may
    assert up.calls == 1


def test_only_disabled_deployments_is_503(gw: RunningGateway, up: FakeUpstream) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        gw.openai().chat.completions.create(model="disabled-route", messages=PROMPT)
    assert_envelope(caught.value.response, 503, type="api_error", code="no_backend_available")
    assert up.calls == 0


@pytest.fixture
def pair(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream]
) -> tuple[str, FakeUpstream, FakeUpstream]:
    """A fresh route over two fresh upstreams: (route name, first, second)."""
    first, second = upstreams(), upstreams()
    route, a, b = uid("pair"), uid("a"), uid("b")
    with gw.write() as w:
        w.create("deployment", deployment(a, first.base_url, timeout_s=0.5))
        w.create("deployment", deployment(b, second.base_url, timeout_s=0.5))
        w.create("route", {"name": route, "candidates": [a, b]})
    return route, first, second


def test_every_candidate_rate_limited_is_429(
    gw: RunningGateway, pair: tuple[str, FakeUpstream, FakeUpstream]
) -> None:
    route, first, second = pair
    first.script(["429"])
    second.script(["429"])
    with pytest.raises(openai.RateLimitError) as caught:
        gw.openai().chat.completions.create(model=route, messages=PROMPT)
    assert_envelope(caught.value.response, 429, type="rate_limit_error", code="rate_limit_exceeded")
    assert (first.calls, second.calls) == (1, 1)


def test_every_candidate_failing_is_502(
    gw: RunningGateway, pair: tuple[str, FakeUpstream, FakeUpstream]
) -> None:
    route, first, second = pair
    first.script(["500"])
    second.script(["503"])
    with pytest.raises(openai.InternalServerError) as caught:
        gw.openai().chat.completions.create(model=route, messages=PROMPT)
    error = assert_envelope(caught.value.response, 502, type="api_error", code="upstream_error")
    assert "http_500" in error["message"] and "http_503" in error["message"]


def test_every_candidate_timing_out_is_504(
    gw: RunningGateway, pair: tuple[str, FakeUpstream, FakeUpstream]
) -> None:
    route, first, second = pair
    first.delay_s = second.delay_s = 3.0
    with pytest.raises(openai.InternalServerError) as caught:
        gw.openai().chat.completions.create(model=route, messages=PROMPT)
    assert caught.value.status_code == 504
    assert_envelope(caught.value.response, 504, type="api_error", code="upstream_timeout")


def test_backend_auth_failure_is_502_not_the_clients_401(
    gw: RunningGateway, pair: tuple[str, FakeUpstream, FakeUpstream]
) -> None:
    route, first, second = pair
    first.script(["401"])
    with pytest.raises(openai.InternalServerError) as caught:
        gw.openai().chat.completions.create(model=route, messages=PROMPT)
    assert_envelope(caught.value.response, 502, type="api_error", code="upstream_error")
    assert second.calls == 0


def test_backend_400_reaches_the_client_as_is(
    gw: RunningGateway, pair: tuple[str, FakeUpstream, FakeUpstream]
) -> None:
    route, first, second = pair
    first.script(["400"])
    with pytest.raises(openai.BadRequestError) as caught:
        gw.openai().chat.completions.create(model=route, messages=PROMPT)
    body = caught.value.response.json()
    assert body["error"]["message"] == "fake upstream scripted 400"
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert second.calls == 0


def test_unreachable_only_backend_is_502(gw: RunningGateway) -> None:
    route, dep = uid("gone"), uid("gone")
    with gw.write() as w:
        w.create("deployment", deployment(dep, closed_port_url()))
        w.create("route", {"name": route, "candidates": [dep]})
    with pytest.raises(openai.InternalServerError) as caught:
        gw.openai().chat.completions.create(model=route, messages=PROMPT)
    error = assert_envelope(caught.value.response, 502, type="api_error", code="upstream_error")
    assert f"{dep}: connect_error" in error["message"]


def test_error_responses_carry_request_id_and_policy_version(gw: RunningGateway) -> None:
    with gw.http() as http:
        response = http.post(
            "/v1/chat/completions", json={"model": "no/such-model", "messages": PROMPT}
        )
    assert response.headers["x-request-id"].startswith("req_")
    assert response.headers["x-provenance-policy-version"] == str(gw.policy_version)
    assert orjson.loads(response.content)["error"]["code"] == "model_not_found"
