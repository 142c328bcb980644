"""The real bundled model (SmolLM2-135M-Instruct via xllamacpp) behind the gateway, through the
official SDK: deterministic chat at temperature 0 (sync and async), streaming, completions,
embeddings, and two local model servers under different deployments where policy and priority
decide which one serves — and the headers and audit row say so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from adapters.local_llamacpp import LocalModelServer
from router.bootstrap import LOCAL_DEPLOYMENT, LOCAL_MODEL, LOCAL_ROUTE
from tests.router.conftest import REPORTED, TEST_POLICY, RunningGateway

pytestmark = pytest.mark.slow

PROMPT = [{"role": "user", "content": "Name three colors."}]
EU_POLICY = (
    TEST_POLICY
    + """\
  - id: eu-only-no-fr
    description: Tenant eu-only keeps prompts out of France.
    deny: {tenant: [eu-only], location_country: [FR]}
"""
)


@pytest.fixture(scope="module")
def second_server() -> Iterator[LocalModelServer]:
    with LocalModelServer(alias="smollm2-b") as server:
        yield server


@pytest.fixture(scope="module")
def gw(
    gateway_factory: Callable[..., RunningGateway], second_server: LocalModelServer
) -> RunningGateway:
    gw = gateway_factory(local_model=True, site_country="DE", site_region="eu-central")
    with gw.write() as w:
        w.create(
            "deployment",
            {
                "id": "local-fr",
                "model": LOCAL_MODEL,
                "adapter": "openai",
                "endpoint_url": second_server.base_url,
                "upstream_model": "smollm2-b",
                "hosting": "on_prem",
                "location_country": "FR",
                "location_region": "paris",
                "hardware_vendor": "cpu",
                "accelerator": "cpu",
                "claim": REPORTED,
            },
        )
        w.create("route", {"name": "smol-pair", "candidates": ["local-fr", LOCAL_DEPLOYMENT]})
        w.create("tenant", {"id": "eu-only", "name": "EU only"})
        _, gw.keys["eu-only"] = w.create_api_key(
            id="eu-key", tenant="eu-only", scopes=["inference"]
        )
        policy = w.save_policy(name="eu", format="yaml", source=EU_POLICY, activate=True)
        gw.policy_version = int(policy["version"])
    return gw


def answer(gw: RunningGateway, model: str = LOCAL_ROUTE) -> str:
    completion = gw.openai().chat.completions.create(**request(model))
    content = completion.choices[0].message.content
    assert content
    return content


def request(model: str = LOCAL_ROUTE) -> dict[str, Any]:
    """The same greedy request every time (the machine may be busy: keep it short)."""
    return {"model": model, "messages": PROMPT, "temperature": 0, "max_tokens": 8, "seed": 1}


@pytest.fixture(scope="module")
def reference(gw: RunningGateway) -> str:
    """The answer to ``request()``, computed once for the module."""
    return answer(gw)


def test_chat_is_deterministic_at_temperature_zero(gw: RunningGateway, reference: str) -> None:
    assert answer(gw) == reference


@pytest.mark.anyio
async def test_async_sdk_gives_the_same_answer(gw: RunningGateway, reference: str) -> None:
    client = gw.async_openai()
    completion = await client.chat.completions.create(**request())
    await client.close()
    assert completion.choices[0].message.content == reference


def test_stream_relays_the_same_answer(gw: RunningGateway, reference: str) -> None:
    with gw.openai().chat.completions.with_streaming_response.create(
        **request(), stream=True
    ) as response:
        assert response.headers["x-provenance-deployment"] == LOCAL_DEPLOYMENT
        chunks = list(response.parse())
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 1  # really streamed, not one blob
    assert "".join(pieces) == reference


def test_local_provenance_headers_and_audit(gw: RunningGateway) -> None:
    raw = gw.openai().chat.completions.with_raw_response.create(
        model=LOCAL_ROUTE, messages=PROMPT, temperature=0, max_tokens=4
    )
    headers = raw.headers
    assert headers["x-provenance-model"] == LOCAL_MODEL
    assert headers["x-provenance-deployment"] == LOCAL_DEPLOYMENT
    assert headers["x-provenance-developer-country"] == "US"
    assert headers["x-provenance-license"] == "Apache-2.0"
    assert headers["x-provenance-location"] == "DE/eu-central"
    assert headers["x-provenance-hardware"] == "cpu/cpu"
    usage = raw.parse().usage
    row = gw.decision(headers["x-request-id"])
    assert row["chosen_deployment"] == LOCAL_DEPLOYMENT and row["status"] == "ok"
    assert usage is not None and row["total_tokens"] == usage.total_tokens > 0


def test_completions(gw: RunningGateway) -> None:
    completion = gw.openai().completions.create(
        model=LOCAL_ROUTE, prompt="The capital of France is", temperature=0, max_tokens=6
    )
    assert completion.choices[0].text.strip()
    assert completion.usage is not None and completion.usage.completion_tokens > 0


def test_embeddings_are_576_dimensional(gw: RunningGateway) -> None:
    raw = gw.openai().embeddings.with_raw_response.create(
        model=LOCAL_ROUTE, input=["hello world", "bonjour le monde"]
    )
    result = raw.parse()
    assert [len(e.embedding) for e in result.data] == [576, 576]
    assert result.data[0].embedding != result.data[1].embedding
    assert raw.headers["x-provenance-deployment"] == LOCAL_DEPLOYMENT


def test_models_lists_the_local_model_with_provenance(gw: RunningGateway) -> None:
    listed = {m.id: m.model_dump() for m in gw.openai().models.list()}
    assert listed[LOCAL_ROUTE]["models"] == [LOCAL_MODEL]
    assert listed[LOCAL_ROUTE]["developer_countries"] == ["US"]
    assert set(listed["smol-pair"]["deployment_locations"]) == {"DE", "FR"}
    eu = {m.id: m.model_dump() for m in gw.openai(gw.keys["eu-only"]).models.list()}
    assert eu["smol-pair"]["deployment_locations"] == ["DE"]


def test_priority_picks_the_first_of_two_local_servers(gw: RunningGateway, reference: str) -> None:
    raw = gw.openai().chat.completions.with_raw_response.create(**request("smol-pair"))
    assert raw.headers["x-provenance-deployment"] == "local-fr"
    assert raw.headers["x-provenance-location"] == "FR/paris"
    assert raw.parse().choices[0].message.content == reference  # same weights, same answer
    row = gw.decision(raw.headers["x-request-id"])
    assert row["chosen_deployment"] == "local-fr"
    assert [c["allowed"] for c in row["candidates"]] == [True, True]


def test_policy_moves_a_tenant_to_the_other_local_server(gw: RunningGateway) -> None:
    raw = gw.openai(gw.keys["eu-only"]).chat.completions.with_raw_response.create(
        model="smol-pair", messages=PROMPT, temperature=0, max_tokens=4
    )
    assert raw.headers["x-provenance-deployment"] == LOCAL_DEPLOYMENT
    assert raw.headers["x-provenance-location"] == "DE/eu-central"
    assert raw.headers["x-provenance-policy-version"] == str(gw.policy_version)
    row = gw.decision(raw.headers["x-request-id"])
    assert row["tenant_id"] == "eu-only" and row["chosen_deployment"] == LOCAL_DEPLOYMENT
    verdicts = {c["deployment"]: (c["allowed"], c["rule_ids"]) for c in row["candidates"]}
    assert verdicts["local-fr"] == (False, ["eu-only-no-fr"])
    assert verdicts[LOCAL_DEPLOYMENT][0] is True
    assert [a["deployment"] for a in row["attempts"]] == [LOCAL_DEPLOYMENT]
