"""Truthful outcomes (issue 15): a client that leaves before the first byte cancels the upstream
call, stream and non-stream, and the audit row says ``client_disconnected`` (HTTP status 499,
nginx's "client closed request"), never ``ok``/200 for an answer nobody received.

Black box on SQLite and PostgreSQL: the official async SDK calls a route whose fake upstream
holds its answer back for 30 s; once the upstream has every request, the clients go away (their
calls are cancelled, which closes their connections). The fake upstream reports each connection
the gateway closed on it (an event, not a sleep): all within seconds, not after 30.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from registry.db import session_scope
from registry.service import list_decisions
from tests.fakes import FakeUpstream
from tests.router.conftest import RunningGateway, deployment, uid, wait_for

UPSTREAM_DELAY_S = 30.0
CLIENTS = 5
MESSAGES: Any = [{"role": "user", "content": "Take your time."}]


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture(autouse=True)
def _fresh_upstream(up: FakeUpstream) -> None:
    up.reset()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(
    request: pytest.FixtureRequest, gateway_factory: Callable[..., RunningGateway]
) -> RunningGateway:
    # a deadline far beyond the test's waits: only the client's leaving may end these calls
    return gateway_factory(backend=request.param, request_deadline_s=120.0)


def slow_route(gw: RunningGateway, up: FakeUpstream) -> str:
    route, dep = uid("patient"), uid("patient-dep")
    with gw.write() as w:
        w.create("deployment", deployment(dep, up.base_url, timeout_s=120.0))
        w.create("route", {"name": route, "candidates": [dep]})
    up.delay_s = UPSTREAM_DELAY_S
    return route


async def leave_before_the_answer(
    gw: RunningGateway, up: FakeUpstream, route: str, *, stream: bool
) -> None:
    """``CLIENTS`` calls that go away once the upstream holds every one of them."""
    client = gw.async_openai()
    calls = [
        asyncio.create_task(
            client.chat.completions.create(model=route, messages=MESSAGES, stream=stream)
        )
        for _ in range(CLIENTS)
    ]
    await asyncio.to_thread(wait_for, lambda: up.calls >= CLIENTS, what="every call upstream")
    for call in calls:
        call.cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    await client.close()
    assert all(isinstance(r, asyncio.CancelledError) for r in results), results


def decisions_of_route(gw: RunningGateway, route: str) -> list[dict[str, Any]]:
    with session_scope(gw.engine) as session:
        rows = list_decisions(session=session, limit=10_000)
    return [r for r in rows if r["requested_model"] == route]


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_a_client_that_leaves_before_the_first_byte_cancels_the_upstream_call(
    gw: RunningGateway, up: FakeUpstream, stream: bool
) -> None:
    route = slow_route(gw, up)

    left = time.monotonic()
    asyncio.run(leave_before_the_answer(gw, up, route, stream=stream))
    wait_for(
        lambda: up.abandoned_calls == CLIENTS,
        timeout_s=10.0,
        what="the gateway to close every upstream connection",
    )
    upstream_freed_s = time.monotonic() - left

    assert upstream_freed_s < UPSTREAM_DELAY_S / 3
    rows = wait_for(
        lambda: (r := decisions_of_route(gw, route)) and len(r) == CLIENTS and r,
        what="an audit row per client",
    )
    for row in rows:
        assert (row["status"], row["http_status"], row["error_code"]) == (
            "client_disconnected",
            499,
            "client_disconnected",
        )
        assert row["chosen_deployment"] is None
        ((attempt_deployment, outcome),) = [
            (a["deployment"], a["outcome"]) for a in row["attempts"]
        ]
        assert outcome == "cancelled"
        assert row["candidates"] and row["candidates"][0]["deployment"] == attempt_deployment


def test_the_gateway_still_serves_after_clients_left(gw: RunningGateway, up: FakeUpstream) -> None:
    route = slow_route(gw, up)
    asyncio.run(leave_before_the_answer(gw, up, route, stream=False))
    wait_for(lambda: up.abandoned_calls == CLIENTS, timeout_s=10.0, what="upstream released")
    up.delay_s = 0.0

    raw = gw.openai().chat.completions.with_raw_response.create(model=route, messages=MESSAGES)

    assert raw.parse().choices[0].message.content
    row = gw.decision(raw.headers["x-request-id"])
    assert (row["status"], row["http_status"]) == ("ok", 200)
