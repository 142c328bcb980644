"""Issue 20: ``/metrics`` scraped after real requests through the gateway (openai SDK), on
SQLite and PostgreSQL: the counters match the requests sent (allowed, denied by policy,
failed upstream, unknown model), labels stay bounded (an unknown model is ``other``, its
name never appears), the breaker and snapshot gauges tell the truth, and a token guards the
scrape when one is set."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import FakeUpstream
from tests.router.conftest import (
    RunningGateway,
    deployment,
    uid,
    wait_for,
)

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, token: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=10.0)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` that has these labels (others free)."""
    wanted = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and wanted <= lbls)


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(
    request: pytest.FixtureRequest, gateway_factory: Callable[..., RunningGateway]
) -> RunningGateway:
    return gateway_factory(backend=request.param, breaker_failures=3, max_attempts=3)


def test_counters_match_the_requests_sent(
    gw: RunningGateway, up: FakeUpstream, upstreams: Callable[..., FakeUpstream]
) -> None:
    failing = upstreams()
    failing.script(["503"] * 3)
    ok_dep, denied_dep, bad_dep = uid("ok"), uid("m") + "-denied", uid("bad")
    ok_route, denied_route, bad_route = uid("r-ok"), uid("r-denied"), uid("r-bad")
    with gw.write() as w:
        for dep, url, route in (
            (ok_dep, up.base_url, ok_route),
            (denied_dep, up.base_url, denied_route),
            (bad_dep, failing.base_url, bad_route),
        ):
            w.create("deployment", deployment(dep, url))
            w.create("route", {"name": route, "candidates": [dep]})
    before = scrape(gw.url)
    client = gw.openai()
    input_tokens = 0
    for _ in range(5):
        input_tokens += client.chat.completions.create(
            model=ok_route, messages=MESSAGES
        ).usage.prompt_tokens  # type: ignore[union-attr]
    for _ in range(2):
        with pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.create(model=denied_route, messages=MESSAGES)
    bad_statuses = set()
    for _ in range(3):
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(model=bad_route, messages=MESSAGES)
        bad_statuses.add(str(failed.value.status_code))
    secret_model = f"tenant-secret-{uid('x')}"
    for _ in range(2):
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model=secret_model, input="hi")
    (bad_code,) = bad_statuses

    requests = "provenance_router_requests_total"
    ok = {"operation": "chat", "model": ok_route, "deployment": ok_dep, "status": "ok"}
    wanted = {
        (requests, frozenset({**ok, "code": "200"}.items())): 5,
        (
            requests,
            frozenset(
                {
                    "operation": "chat",
                    "model": denied_route,
                    "deployment": "none",
                    "status": "denied",
                    "code": "403",
                }.items()
            ),
        ): 2,
        (
            requests,
            frozenset(
                {
                    "operation": "chat",
                    "model": bad_route,
                    "deployment": "none",
                    "status": "error",
                    "code": bad_code,
                }.items()
            ),
        ): 3,
    }

    def counted() -> Samples | None:
        after = scrape(gw.url)
        done = all(after.get(key) == count for key, count in wanted.items())
        # records are counted as their batch is handed to the writer, its write time after it
        written = value(after, "provenance_router_audit_write_seconds_count") > 0
        return after if done and written else None

    after = wait_for(counted, what="the requests in /metrics")
    delta = {
        key: after.get(key, 0.0) - before.get(key, 0.0)
        for key in after.keys() | before.keys()
        if key[0] in (requests, "provenance_router_policy_decisions_total")
    }
    other = {"operation": "embeddings", "model": "other", "deployment": "none"}
    assert total(delta, requests, **other, status="error", code="404") == 2
    assert (
        value(
            delta,
            "provenance_router_policy_decisions_total",
            rule="test-deny-denied-deployments",
            verdict="deny",
        )
        == 2
    )
    assert value(after, "provenance_router_request_duration_seconds_count", **ok) == 5
    assert value(after, "provenance_router_tokens_total", model=ok_route, deployment=ok_dep,
                 direction="input") == input_tokens  # fmt: skip
    errors = "provenance_router_upstream_errors_total"
    assert value(after, errors, deployment=bad_dep, kind="http_503") == 3
    assert value(after, "provenance_router_circuit_open", deployment=bad_dep) == 1
    assert value(after, "provenance_router_circuit_open", deployment=ok_dep) == 0
    assert value(after, "provenance_router_snapshot_registry_version") == gw.served_version()
    assert value(after, "provenance_router_snapshot_policy_version") == gw.policy_version
    text = httpx.get(f"{gw.url}/metrics", timeout=10.0).text
    assert secret_model not in text
    assert gw.keys["apps"] not in text


def test_a_token_guards_the_scrape(gateway_factory: Callable[..., RunningGateway]) -> None:
    token = f"scrape-{uid('t')}"
    gw = gateway_factory(metrics_token=token, seeded=False)
    missing = httpx.get(f"{gw.url}/metrics")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = httpx.get(f"{gw.url}/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert value(scrape(gw.url, token), "provenance_router_snapshot_registry_version") >= 1


def test_metrics_can_be_switched_off(gateway_factory: Callable[..., RunningGateway]) -> None:
    gw = gateway_factory(metrics_enabled=False, seeded=False)
    assert httpx.get(f"{gw.url}/metrics").status_code == 404
