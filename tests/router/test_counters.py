"""The limit counters (router.counters), in process and in the real Redis on 127.0.0.1:6379
(each test under a key prefix of its own), and the limiter's pure helpers (router.limiter)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from registry.snapshot import DeploymentSnap
from router.counters import (
    Counters,
    CountersUnavailable,
    LocalCounters,
    RedisCounters,
    Spend,
    Window,
)
from router.limiter import duration, micro_usd, period_bounds, rate_headers, usage_of
from tests.fakes import closed_port_url

REDIS_URL = "redis://127.0.0.1:6379/0"
pytestmark = pytest.mark.anyio


def redis_counters(*, lease_ttl_s: float = 60.0, url: str = REDIS_URL) -> RedisCounters:
    return RedisCounters(
        url, prefix=f"test-{uuid.uuid4().hex}", lease_ttl_s=lease_ttl_s, timeout_s=0.5
    )


@pytest.fixture(params=["local", "redis"])
async def counters(request: pytest.FixtureRequest) -> AsyncIterator[Counters]:
    made: Counters = LocalCounters() if request.param == "local" else redis_counters()
    yield made
    await made.close()


async def test_a_window_counts_hits_and_says_when_one_goes_past(counters: Counters) -> None:
    first = await counters.hit("k:rpm", 2)
    assert (first.used, first.remaining, first.over) == (1, 1, False)
    assert 0 < first.reset_s <= 60
    assert (await counters.hit("k:rpm", 2)).over is False
    third = await counters.hit("k:rpm", 2)
    assert (third.used, third.remaining, third.over) == (2, 0, True)
    assert (await counters.peek("other:rpm", 2)).used == 0  # names are apart


async def test_a_hit_may_cost_more_than_one(counters: Counters) -> None:
    await counters.hit("k:tpm", 100, 30)
    assert (await counters.peek("k:tpm", 100)).remaining == 70


async def test_leases_stop_at_the_limit_and_free_on_release(counters: Counters) -> None:
    assert await counters.acquire("k:inflight", 2, "a")
    assert await counters.acquire("k:inflight", 2, "b")
    assert not await counters.acquire("k:inflight", 2, "c")
    await counters.release("k:inflight", "a")
    assert await counters.acquire("k:inflight", 2, "c")


async def test_spend_adds_up_and_a_seed_never_overwrites_it(counters: Counters) -> None:
    end = time.time() + 3600
    await counters.seed_spend("k:spend:2026-12", Spend(100, 5), end)
    await counters.add_spend("k:spend:2026-12", Spend(10, 1), end)
    await counters.seed_spend("k:spend:2026-12", Spend(999, 999), end)  # already kept
    assert await counters.spend("k:spend:2026-12") == Spend(110, 6)
    assert await counters.spend("k:spend:2026-11") == Spend()


async def test_a_redis_lease_of_a_dead_gateway_expires() -> None:
    counters = redis_counters(lease_ttl_s=0.2)
    try:
        assert await counters.acquire("k:inflight", 1, "dead-gateways-request")
        assert not await counters.acquire("k:inflight", 1, "next")
        deadline = time.monotonic() + 10
        while not await counters.acquire("k:inflight", 1, "next"):  # its TTL runs out
            assert time.monotonic() < deadline, "the lease never expired"
    finally:
        await counters.close()


async def test_an_unreachable_redis_is_one_clear_error() -> None:
    down = closed_port_url().replace("http://", "redis://").removesuffix("/v1")
    counters = redis_counters(url=down)
    try:
        for call in (
            counters.hit("k:rpm", 1),
            counters.acquire("k:inflight", 1, "a"),
            counters.spend("k:spend"),
        ):
            with pytest.raises(CountersUnavailable):
                await call
    finally:
        await counters.close()


def test_durations_are_written_as_openai_writes_them() -> None:
    assert [duration(s) for s in (0.02, 0.9991, 1, 1.2, 59.5, 60, 360, 3723)] == [
        "20ms",
        "1000ms",
        "1s",
        "2s",
        "1m0s",
        "1m0s",
        "6m0s",
        "1h2m3s",
    ]


def test_headers_name_the_tightest_window() -> None:
    headers = dict(rate_headers(Window(60, 59, 1.0), Window(1000, 250, 30.0)))
    assert headers == {
        b"x-ratelimit-limit-requests": b"60",
        b"x-ratelimit-remaining-requests": b"1",
        b"x-ratelimit-reset-requests": b"1s",
        b"x-ratelimit-limit-tokens": b"1000",
        b"x-ratelimit-remaining-tokens": b"750",
        b"x-ratelimit-reset-tokens": b"30s",
    }


def test_usage_is_what_the_backend_reported_else_the_estimate() -> None:
    reported = usage_of({"prompt_tokens": 7, "completion_tokens": 3}, 4000, 4000)
    assert (reported.total, reported.estimated) == (10, False)
    total_only = usage_of({"total_tokens": 12}, 0, 0)  # embeddings-style: all prompt
    assert (total_only.prompt_tokens, total_only.completion_tokens) == (12, 0)
    estimated = usage_of({}, 401, 8)
    assert (estimated.prompt_tokens, estimated.completion_tokens) == (101, 2)
    assert estimated.estimated


def test_cost_is_the_price_per_million_tokens_in_micro_dollars() -> None:
    priced = DeploymentSnap(
        id="d", model_id="a/b", input_cost_per_mtok_usd=3.0, output_cost_per_mtok_usd=15.0
    )
    assert micro_usd(usage_of({"prompt_tokens": 1000, "completion_tokens": 100}, 0, 0), priced) == (
        3000 + 1500
    )
    assert (
        micro_usd(usage_of({"prompt_tokens": 1000}, 0, 0), DeploymentSnap(id="d", model_id="a/b"))
        == 0
    )


def test_periods_are_utc_calendar_days_and_months() -> None:
    now = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert period_bounds("day", now) == (
        "2026-12-31",
        datetime(2026, 12, 31, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert period_bounds("month", now) == (
        "2026-12",
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )


async def test_the_batches_do_what_the_single_operations_do(counters: Counters) -> None:
    end = time.time() + 3600
    await counters.seed_spend("k:spend", Spend(7, 1), end)
    spent, windows = await counters.look(["k:spend", "t:spend"], [("k:tpm", 50), ("t:tpm", 9)])
    assert spent == [Spend(7, 1), Spend()]
    assert [(w.limit, w.used) for w in windows] == [(50, 0), (9, 0)]

    hits = await counters.hit_all([("k:rpm", 1), ("t:rpm", 5)])
    assert [(w.used, w.over) for w in hits] == [(1, False), (1, False)]
    assert (await counters.hit_all([("k:rpm", 1), ("t:rpm", 5)]))[0].over

    await counters.charge([("k:tpm", 50), ("t:tpm", 9)], [("k:spend", end)], Spend(12, 3))
    spent, windows = await counters.look(["k:spend"], [("k:tpm", 50), ("t:tpm", 9)])
    assert spent == [Spend(19, 4)]
    assert [(w.used, w.remaining) for w in windows] == [(12, 38), (9, 0)]

    assert await counters.acquire("k:inflight", 1, "r1")
    assert await counters.acquire("t:inflight", 1, "r1")
    await counters.release_all(["k:inflight", "t:inflight"], "r1")
    assert await counters.acquire("k:inflight", 1, "r2")
    assert await counters.acquire("t:inflight", 1, "r2")
