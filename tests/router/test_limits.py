"""Rate limits of keys and tenants through the real gateway and the official openai SDK:
requests per minute, tokens per minute (from the usage backends report, streams included, or
the documented estimate), concurrent requests; 429 with Retry-After and OpenAI's
``x-ratelimit-*`` headers; the refusal audited with the limit that fired; counters shared
through Redis by two gateways; Redis unreachable, open and closed (docs/keys.md)."""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from router.limiter import BYTES_PER_TOKEN
from tests.fakes import FakeUpstream
from tests.router.conftest import (
    RunningGateway,
    assert_envelope,
    closed_port_url,
    deployment,
    uid,
    wait_for,
)

MESSAGES: Any = [{"role": "user", "content": "hi"}]
REDIS_URL = "redis://127.0.0.1:6379/0"
TOKENS_PER_ANSWER = 10  # FakeUpstream's usage: 5 prompt + 5 completion tokens


@pytest.fixture(scope="module")
def gw(gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return gateway_factory()


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


def limited(
    gw: RunningGateway,
    upstream: FakeUpstream,
    limits: dict[str, Any] | None,
    *,
    tenant: str = "apps",
) -> tuple[str, str, str]:
    """A fresh route to ``upstream`` and a fresh key with ``limits``: (raw key, route, key id)."""
    route, dep, key_id = uid("route"), uid("dep"), uid("key")
    with gw.write() as w:
        w.create("deployment", deployment(dep, upstream.base_url))
        w.create("route", {"name": route, "candidates": [dep]})
        _, raw = w.create_api_key(id=key_id, tenant=tenant, scopes=["inference"], limits=limits)
    return raw, route, key_id


def chat(gw: RunningGateway, key: str, route: str, **options: Any) -> Any:
    """One chat completion through the SDK; the raw response (headers and parsed body)."""
    return gw.openai(key).chat.completions.with_raw_response.create(
        model=route, messages=MESSAGES, **options
    )


def test_requests_past_the_rpm_get_429_with_openai_headers_and_the_sdk_error(
    gw: RunningGateway, upstream: FakeUpstream
) -> None:
    key, route, key_id = limited(gw, upstream, {"rpm": 2})
    first, second = chat(gw, key, route), chat(gw, key, route)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    assert "x-ratelimit-limit-tokens" not in first.headers  # no token limit: no token headers

    with pytest.raises(openai.RateLimitError) as refused:
        chat(gw, key, route)
    response = refused.value.response
    error = assert_envelope(response, 429, type="rate_limit_error", code="rate_limit_exceeded")
    assert "requests per minute" in error["message"]
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["x-ratelimit-limit-requests"] == "2"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert upstream.calls == 2  # the refused request never reached a backend

    row = gw.decision(response.headers["x-request-id"])
    assert (row["status"], row["http_status"]) == ("denied", 429)
    assert row["error_code"] == "rate_limit_exceeded"
    assert row["context"]["limit"] == "key:rpm"
    assert row["key_id"] == key_id and row["chosen_deployment"] is None


def test_a_tenants_limit_binds_all_of_its_keys_together(
    gw: RunningGateway, upstream: FakeUpstream
) -> None:
    tenant = uid("tenant")
    with gw.write() as w:
        w.create("tenant", {"id": tenant, "limits": {"rpm": 1}})
    first, route, _ = limited(gw, upstream, None, tenant=tenant)
    with gw.write() as w:
        _, second = w.create_api_key(id=uid("key"), tenant=tenant, scopes=["inference"])
    assert chat(gw, first, route).headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as refused:
        chat(gw, second, route)
    assert "tenant " + tenant in refused.value.message
    assert gw.decision(refused.value.response.headers["x-request-id"])["context"]["limit"] == (
        "tenant:rpm"
    )


def test_tokens_per_minute_count_the_usage_the_backend_reports(
    gw: RunningGateway, upstream: FakeUpstream
) -> None:
    key, route, _ = limited(gw, upstream, {"tpm": 15})
    first = chat(gw, key, route)
    assert first.headers["x-ratelimit-limit-tokens"] == "15"
    assert first.headers["x-ratelimit-remaining-tokens"] == "15"  # checked before the answer
    second = chat(gw, key, route)  # 10 of 15 used: still admitted
    assert second.headers["x-ratelimit-remaining-tokens"] == "5"
    with pytest.raises(openai.RateLimitError) as refused:  # 20 of 15 used
        chat(gw, key, route)
    headers = refused.value.response.headers
    assert headers["x-ratelimit-remaining-tokens"] == "0"
    assert "tokens per minute" in refused.value.message
    assert gw.decision(headers["x-request-id"])["context"]["limit"] == "key:tpm"
    assert upstream.calls == 2


def tpm_used(gw: RunningGateway, key_id: str, limit: int) -> int:
    """The tokens this minute's window holds for a key (the gateway's in-process counter,
    read: a look changes nothing)."""
    counters = gw.app.gateway.limiter.counters
    return asyncio.run(counters.peek(f"key:{key_id}:tpm", limit)).used


def test_a_stream_is_charged_the_usage_it_reports(
    gw: RunningGateway, upstream: FakeUpstream
) -> None:
    key, route, key_id = limited(gw, upstream, {"tpm": 1000})
    stream = gw.openai(key).chat.completions.create(
        model=route, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None
    assert tpm_used(gw, key_id, 1000) == TOKENS_PER_ANSWER


def test_a_stream_without_usage_is_charged_the_documented_estimate(
    gw: RunningGateway, upstream: FakeUpstream
) -> None:
    key, route, key_id = limited(gw, upstream, {"tpm": 100_000})
    with gw.http(key) as http:
        body = {"model": route, "messages": MESSAGES, "stream": True}
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            received = sum(len(piece) for piece in response.iter_raw())
            sent = len(response.request.content)
    expected = math.ceil(sent / BYTES_PER_TOKEN) + math.ceil(received / BYTES_PER_TOKEN)
    assert tpm_used(gw, key_id, 100_000) == expected
    row = gw.decision(response.headers["x-request-id"])
    assert row["total_tokens"] is None  # the audit keeps what backends report, never a guess


def test_concurrent_requests_past_the_limit_are_refused_until_one_ends(
    gw: RunningGateway, upstream: FakeUpstream
) -> None:
    key, route, _ = limited(gw, upstream, {"max_concurrent": 1})
    upstream.delay_s = 3.0  # holds the lease well past the refused request, even under load
    held = threading.Thread(target=chat, args=(gw, key, route))
    held.start()
    assert upstream.arrived.wait(10)
    with pytest.raises(openai.RateLimitError) as refused:
        chat(gw, key, route)
    assert refused.value.response.headers["retry-after"] == "1"
    assert gw.decision(refused.value.response.headers["x-request-id"])["context"]["limit"] == (
        "key:max_concurrent"
    )
    held.join(30)
    upstream.delay_s = 0.0
    assert chat(gw, key, route).http_response.status_code == 200  # the lease was released


def test_the_sdks_own_retry_waits_the_retry_after_it_is_sent(
    gw: RunningGateway, upstream: FakeUpstream
) -> None:
    key, route, _ = limited(gw, upstream, {"max_concurrent": 1})
    upstream.delay_s = 4.0
    held = threading.Thread(target=chat, args=(gw, key, route))
    held.start()
    assert upstream.arrived.wait(10)
    attempts: list[float] = []
    hooks = {"request": [lambda request: attempts.append(time.monotonic())]}
    with (
        openai.OpenAI(
            base_url=gw.v1,
            api_key=key,
            max_retries=1,
            http_client=httpx.Client(event_hooks=hooks, timeout=30),
        ) as client,
        pytest.raises(openai.RateLimitError),
    ):
        client.chat.completions.create(model=route, messages=MESSAGES)
    held.join(30)
    assert len(attempts) == 2
    # Retry-After: 1 -> the SDK waits one second (its own backoff starts at 0.5 s)
    assert attempts[1] - attempts[0] >= 1.0


def test_limits_are_settable_through_the_admin_api_and_validated(gw: RunningGateway) -> None:
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {gw.admin_key}"}) as h:
        key_id = uid("key")
        created = h.post(
            "/admin/api-keys",
            json={"id": key_id, "tenant": "apps", "scopes": ["inference"], "limits": {"rpm": 5}},
        )
        assert created.status_code == 201, created.text
        assert created.json()["limits"] == {
            "rpm": 5,
            "tpm": None,
            "max_concurrent": None,
            "budget": None,
        }
        tenant = h.get("/admin/tenants/apps").json()
        bad = h.patch(
            "/admin/tenants/apps", json={"version": tenant["version"], "limits": {"rpm": 0}}
        )
        assert bad.status_code == 400, bad.text
        assert bad.json()["error"]["param"] == "limits.rpm"
        unknown = h.patch(
            "/admin/tenants/apps", json={"version": tenant["version"], "limits": {"rps": 1}}
        )
        assert unknown.status_code == 400, unknown.text
        inverted = h.patch(
            "/admin/tenants/apps",
            json={
                "version": tenant["version"],
                "limits": {"budget": {"soft_tokens": 10, "hard_tokens": 5}},
            },
        )
        assert inverted.status_code == 400, inverted.text


# -- Redis ----------------------------------------------------------------------------------


def redis_settings(**overrides: Any) -> dict[str, Any]:
    """Settings of a gateway counting in Redis, under a prefix no other test uses."""
    return {"redis_url": REDIS_URL, "redis_key_prefix": f"test-{uuid.uuid4().hex}", **overrides}


def replica(
    gateway_factory: Callable[..., RunningGateway], first: RunningGateway, **settings: Any
) -> RunningGateway:
    """A second gateway on the first one's database (as a replica behind a load balancer)."""
    return gateway_factory(
        seeded=False,
        database_url=first.app.gateway.settings.database_url,
        admin_key=first.admin_key,
        **settings,
    )


def test_two_gateways_sharing_redis_enforce_one_limit_together(
    gateway_factory: Callable[..., RunningGateway], upstream: FakeUpstream
) -> None:
    shared = redis_settings()
    first = gateway_factory(**shared)
    second = replica(gateway_factory, first, **shared)
    key, route, _ = limited(first, upstream, {"rpm": 3})
    wait_for(lambda: route in second.app.gateway.table.snapshot.routes, what="second gateway")
    assert chat(first, key, route).headers["x-ratelimit-remaining-requests"] == "2"
    assert chat(second, key, route).headers["x-ratelimit-remaining-requests"] == "1"
    assert chat(first, key, route).headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError):
        chat(second, key, route)
    with pytest.raises(openai.RateLimitError):
        chat(first, key, route)
    assert upstream.calls == 3


def test_a_request_in_flight_on_one_gateway_counts_on_the_other(
    gateway_factory: Callable[..., RunningGateway], upstream: FakeUpstream
) -> None:
    shared = redis_settings()
    first = gateway_factory(**shared)
    second = replica(gateway_factory, first, **shared)
    key, route, _ = limited(first, upstream, {"max_concurrent": 1})
    wait_for(lambda: route in second.app.gateway.table.snapshot.routes, what="second gateway")
    upstream.delay_s = 3.0  # holds the lease well past the refused request, even under load
    held = threading.Thread(target=chat, args=(first, key, route))
    held.start()
    assert upstream.arrived.wait(10)
    with pytest.raises(openai.RateLimitError):
        chat(second, key, route)
    held.join(30)
    upstream.delay_s = 0.0
    assert chat(second, key, route).http_response.status_code == 200


def test_redis_unreachable_fails_open_by_default(
    gateway_factory: Callable[..., RunningGateway], upstream: FakeUpstream
) -> None:
    down = closed_port_url().replace("http://", "redis://").removesuffix("/v1")
    gw = gateway_factory(**redis_settings(redis_url=down))
    key, route, _ = limited(gw, upstream, {"rpm": 1})
    for _ in range(3):  # past the limit, unchecked: allowed, with a warning in the log
        response = chat(gw, key, route)
        assert "x-ratelimit-limit-requests" not in response.headers
    assert upstream.calls == 3


def test_redis_unreachable_fails_closed_when_configured(
    gateway_factory: Callable[..., RunningGateway], upstream: FakeUpstream
) -> None:
    down = closed_port_url().replace("http://", "redis://").removesuffix("/v1")
    gw = gateway_factory(**redis_settings(redis_url=down, limits_redis_failure="closed"))
    key, route, _ = limited(gw, upstream, {"rpm": 1000})
    with pytest.raises(openai.InternalServerError) as refused:
        chat(gw, key, route)
    assert_envelope(refused.value.response, 503, type="api_error", code="limits_unavailable")
    assert upstream.calls == 0
    unlimited, route2, _ = limited(gw, upstream, None)  # a key without limits needs no Redis
    assert chat(gw, unlimited, route2).http_response.status_code == 200


def test_a_client_that_leaves_gives_its_concurrency_lease_back(
    gw: RunningGateway, upstream: FakeUpstream
) -> None:
    key, route, _ = limited(gw, upstream, {"max_concurrent": 1})
    upstream.delay_s = 30.0  # the backend would hold the request far longer than the client
    with pytest.raises(openai.APITimeoutError):
        gw.openai(key).with_options(timeout=0.5).chat.completions.create(
            model=route, messages=MESSAGES
        )
    assert upstream.abandoned.wait(10)  # the gateway noticed and closed the upstream
    upstream.delay_s = 0.0

    def admitted() -> bool:
        try:
            return chat(gw, key, route).http_response.status_code == 200
        except openai.RateLimitError:  # not yet: the departure is noticed within ~0.1 s
            return False

    wait_for(admitted, what="the lease of the request whose client left")


def test_the_redis_url_comes_from_either_variable_and_failure_modes_are_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pydantic import ValidationError

    from router.settings import Settings

    monkeypatch.setenv("REDIS_URL", "redis://10.0.0.1:6379/0")
    assert Settings(_env_file=None).redis_url is not None  # type: ignore[call-arg]
    monkeypatch.setenv("PROVENANCE_ROUTER_REDIS_URL", "redis://10.0.0.2:6379/0")
    url = Settings(_env_file=None).redis_url  # type: ignore[call-arg]
    assert url is not None and url.get_secret_value() == "redis://10.0.0.2:6379/0"
    assert "10.0.0.2" not in repr(url)  # it may hold a password: never printed
    with pytest.raises(ValidationError):
        Settings(_env_file=None, limits_redis_failure="maybe")  # type: ignore[call-arg]
