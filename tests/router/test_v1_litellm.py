"""A LiteLLM deployment through the real gateway: ``adapter: litellm`` with a non-default LiteLLM
provider route (``hosted_vllm/...``) pointing at a FakeUpstream, called with the openai SDK.

The gateway imports LiteLLM lazily on the first LiteLLM request, so these tests also cover that
first call; the policy must keep a denied LiteLLM deployment from ever being called, as it does
for the OpenAI-compatible fast path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import openai
import pytest
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from tests.adapters.test_litellm_adapter import LITELLM_OWN_WARNING_FILTERS
from tests.fakes import FakeUpstream
from tests.router.conftest import RunningGateway, deployment, uid

pytestmark = [pytest.mark.filterwarnings(rule) for rule in LITELLM_OWN_WARNING_FILTERS]

PROMPT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Which route served me?"}]
SERVED_NAME = "served-by-vllm"


@pytest.fixture(scope="module")
def gw(gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return gateway_factory()


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream(reply="Answer relayed by LiteLLM.", stream_chunks=4) as upstream:
        yield upstream


@pytest.fixture(autouse=True)
def _fresh_upstream(up: FakeUpstream) -> None:
    up.reset()


def litellm_route(gw: RunningGateway, *urls_and_suffixes: tuple[str, str]) -> tuple[str, list[str]]:
    """A new route over new LiteLLM deployments ``(endpoint url, id suffix)``, in that order."""
    route = uid("litellm-route")
    ids = [uid("litellm") + suffix for _, suffix in urls_and_suffixes]
    with gw.write() as w:
        for dep_id, (url, _) in zip(ids, urls_and_suffixes, strict=True):
            w.create(
                "deployment",
                deployment(
                    dep_id, url, adapter="litellm", upstream_model=f"hosted_vllm/{SERVED_NAME}"
                ),
            )
        w.create("route", {"name": route, "candidates": ids})
    return route, ids


def test_non_stream_answer_through_litellm(gw: RunningGateway, up: FakeUpstream) -> None:
    route, (dep_id,) = litellm_route(gw, (up.base_url, ""))

    raw = gw.openai().chat.completions.with_raw_response.create(model=route, messages=PROMPT)
    answer = raw.parse()

    assert answer.choices[0].message.content == up.reply
    assert raw.headers["x-provenance-deployment"] == dep_id
    assert raw.headers["x-provenance-model"] == "acme/alpha"
    assert raw.headers["x-provenance-policy-version"] == str(gw.policy_version)
    assert up.calls == 1
    received = up.requests[0]
    assert received.path == "/v1/chat/completions"
    assert received.json["model"] == SERVED_NAME  # the provider prefix was LiteLLM's, not sent
    row = gw.decision(raw.headers["x-request-id"])
    assert (row["status"], row["http_status"], row["chosen_deployment"]) == ("ok", 200, dep_id)
    assert row["attempts"][0]["deployment"] == dep_id
    assert [a["outcome"] for a in row["attempts"]] == ["ok"]


def test_stream_answer_through_litellm(gw: RunningGateway, up: FakeUpstream) -> None:
    route, (dep_id,) = litellm_route(gw, (up.base_url, ""))

    with gw.openai().chat.completions.with_streaming_response.create(
        model=route, messages=PROMPT, stream=True
    ) as response:
        headers = response.headers
        chunks: list[ChatCompletionChunk] = list(response.parse())

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == up.reply
    assert headers["x-provenance-deployment"] == dep_id
    assert headers["content-type"].startswith("text/event-stream")
    assert up.calls == 1 and up.requests[0].json["stream"] is True
    row = gw.decision(headers["x-request-id"])
    assert (row["status"], row["chosen_deployment"]) == ("ok", dep_id)


def test_denied_litellm_deployment_is_never_called(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream]
) -> None:
    forbidden, allowed = upstreams(), upstreams()
    # test-deny-denied-deployments forbids every deployment whose id ends in -denied
    route, (denied_id, allowed_id) = litellm_route(
        gw, (forbidden.base_url, "-denied"), (allowed.base_url, "")
    )

    raw = gw.openai().chat.completions.with_raw_response.create(model=route, messages=PROMPT)

    assert raw.headers["x-provenance-deployment"] == allowed_id
    assert (forbidden.calls, allowed.calls) == (0, 1)
    row = gw.decision(raw.headers["x-request-id"])
    assert row["candidates"][0]["deployment"] == denied_id
    assert row["candidates"][0]["allowed"] is False
    assert [a["deployment"] for a in row["attempts"]] == [allowed_id]


def test_only_a_denied_litellm_deployment_gets_403(
    gw: RunningGateway, upstreams: Callable[..., FakeUpstream]
) -> None:
    forbidden = upstreams()
    route, _ = litellm_route(gw, (forbidden.base_url, "-denied"))

    with pytest.raises(openai.PermissionDeniedError) as caught:
        gw.openai().chat.completions.create(model=route, messages=PROMPT, stream=True)

    assert caught.value.code == "provenance_policy_denied"
    assert "test-deny-denied-deployments" in caught.value.message
    assert forbidden.calls == 0
    row = gw.decision(caught.value.response.headers["x-request-id"])
    assert (row["status"], row["http_status"], row["attempts"]) == ("denied", 403, [])
