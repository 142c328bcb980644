"""The counters behind limits and budgets, in one process or shared through Redis.

    Counters (protocol)
    ├── LocalCounters   the embedded default: this process only (dicts)
    └── RedisCounters   every gateway pointed at one Redis (``redis_url``): redis-py's asyncio
                        client (Redis 7 or later), one round trip per batch of operations

Three kinds of counter, each named by the caller (``router.limiter`` builds the names):

- **rates**: a fixed one-minute window per name, opened by its first hit (the fixed-window
  algorithm of the ``limits`` library, whose storages measured too slow for the request path:
  docs/benchmarks.md, "Limits on the request path"): requests per minute counted as they
  arrive, tokens per minute counted once a response's usage is known.
- **leases**: requests in flight per name. In Redis each is a member of a sorted set scored by
  its expiry (``lease_ttl_s``): a gateway that dies holding leases does not hold them forever.
- **spend**: tokens and micro-dollars per name (the name includes the budget period), seeded
  from the audit log with "set if absent", so a restart or a new replica does not reset it.

Every Redis failure surfaces as :class:`CountersUnavailable`; the limiter decides whether that
fails open or closed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline

WINDOW_S = 60  # rates are per minute


class CountersUnavailable(Exception):
    """The shared counters (Redis) did not answer."""


@dataclass(frozen=True, slots=True)
class Window:
    """One rate window after a hit or a look: ``used`` of ``limit`` (at most), resetting in
    ``reset_s``; ``over``: the hit went past the limit."""

    limit: int
    used: int
    reset_s: float
    over: bool = False

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


@dataclass(frozen=True, slots=True)
class Spend:
    tokens: int = 0
    micro_usd: int = 0  # cost in millionths of a US dollar (integers add up exactly)

    @property
    def cost_usd(self) -> float:
        return self.micro_usd / 1_000_000


class Counters(Protocol):
    async def hit(self, name: str, limit: int, cost: int = 1) -> Window: ...

    async def peek(self, name: str, limit: int) -> Window: ...

    async def acquire(self, name: str, limit: int, lease: str) -> bool: ...

    async def release(self, name: str, lease: str) -> None: ...

    async def spend(self, name: str) -> Spend: ...

    async def add_spend(self, name: str, spend: Spend, expire_at: float) -> None: ...

    async def seed_spend(self, name: str, spend: Spend, expire_at: float) -> None: ...

    # Batches, one round trip each in Redis: what one request needs at each of its steps.

    async def look(
        self, spends: Sequence[str], windows: Sequence[tuple[str, int]]
    ) -> tuple[list[Spend], list[Window]]: ...

    async def hit_all(self, hits: Sequence[tuple[str, int]]) -> list[Window]: ...

    async def charge(
        self, windows: Sequence[tuple[str, int]], spends: Sequence[tuple[str, float]], spend: Spend
    ) -> None: ...

    async def release_all(self, names: Sequence[str], lease: str) -> None: ...

    async def close(self) -> None: ...


class _Batches:
    """The batch operations as loops over the single ones (in process: nothing to save)."""

    async def look(
        self: Counters, spends: Sequence[str], windows: Sequence[tuple[str, int]]
    ) -> tuple[list[Spend], list[Window]]:
        return [await self.spend(n) for n in spends], [await self.peek(*w) for w in windows]

    async def hit_all(self: Counters, hits: Sequence[tuple[str, int]]) -> list[Window]:
        return [await self.hit(name, limit) for name, limit in hits]

    async def charge(
        self: Counters,
        windows: Sequence[tuple[str, int]],
        spends: Sequence[tuple[str, float]],
        spend: Spend,
    ) -> None:
        for name, limit in windows:
            await self.hit(name, limit, spend.tokens)
        for name, expire_at in spends:
            await self.add_spend(name, spend, expire_at)

    async def release_all(self: Counters, names: Sequence[str], lease: str) -> None:
        for name in names:
            await self.release(name, lease)


@dataclass(slots=True)
class _Window:
    opened: float  # monotonic time of the window's first hit
    used: int = 0


class LocalCounters(_Batches):
    """This process's counters (the embedded default; ``serve --workers N`` counts per worker)."""

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}
        self._inflight: dict[str, int] = {}
        self._spend: dict[str, Spend] = {}

    async def hit(self, name: str, limit: int, cost: int = 1) -> Window:
        window = self._current(name, time.monotonic())
        window.used += cost
        return self._window(window, limit, over=window.used > limit)

    async def peek(self, name: str, limit: int) -> Window:
        return self._window(self._current(name, time.monotonic()), limit)

    def _current(self, name: str, now: float) -> _Window:
        window = self._windows.get(name)
        if window is None or now - window.opened >= WINDOW_S:
            window = self._windows[name] = _Window(now)
        return window

    @staticmethod
    def _window(window: _Window, limit: int, *, over: bool = False) -> Window:
        reset_s = window.opened + WINDOW_S - time.monotonic()
        return Window(limit, min(window.used, limit), reset_s, over)

    async def acquire(self, name: str, limit: int, lease: str) -> bool:
        held = self._inflight.get(name, 0)
        if held >= limit:
            return False
        self._inflight[name] = held + 1
        return True

    async def release(self, name: str, lease: str) -> None:
        held = self._inflight.get(name, 0) - 1
        if held > 0:
            self._inflight[name] = held
        else:
            self._inflight.pop(name, None)

    async def spend(self, name: str) -> Spend:
        return self._spend.get(name, Spend())

    async def add_spend(self, name: str, spend: Spend, expire_at: float) -> None:
        old = self._spend.get(name, Spend())
        self._spend[name] = Spend(old.tokens + spend.tokens, old.micro_usd + spend.micro_usd)

    async def seed_spend(self, name: str, spend: Spend, expire_at: float) -> None:
        self._spend.setdefault(name, spend)

    async def close(self) -> None:
        return None


WINDOW_MS = WINDOW_S * 1000

# A lease: drop expired members, refuse at the limit, else add this one until now + ttl. The
# time is Redis's own (TIME), so gateways with skewed clocks agree on what has expired.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
return 1
"""


class RedisCounters:
    """Counters shared by every gateway using one Redis; keys start with ``prefix``."""

    def __init__(self, url: str, *, prefix: str, lease_ttl_s: float, timeout_s: float) -> None:
        from redis.asyncio import ConnectionPool, Redis

        pool = ConnectionPool.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._pool = pool
        self._redis: Redis = Redis(connection_pool=pool)
        self._prefix = prefix
        self._lease_ttl_s = lease_ttl_s
        self._acquire = self._redis.register_script(ACQUIRE)

    # A fixed window is a key counting up, given its expiry by its first hit (PEXPIRE NX: Redis
    # 7 or later). Plain commands, so that a request's operations share one pipeline.

    def _queue_hit(self, pipe: Pipeline, name: str, cost: int) -> None:
        key = self._rate_key(name)
        pipe.incrby(key, cost)
        pipe.pexpire(key, WINDOW_MS, nx=True)
        pipe.pttl(key)

    def _queue_peek(self, pipe: Pipeline, name: str) -> None:
        key = self._rate_key(name)
        pipe.get(key)
        pipe.pttl(key)

    async def hit(self, name: str, limit: int, cost: int = 1) -> Window:
        return (await self.hit_all([(name, limit)], cost))[0]

    async def peek(self, name: str, limit: int) -> Window:
        return (await self.look([], [(name, limit)]))[1][0]

    async def acquire(self, name: str, limit: int, lease: str) -> bool:
        with _unavailable():
            keys = [f"{self._prefix}:inflight:{name}"]
            return bool(await self._acquire(keys=keys, args=[limit, self._lease_ttl_s, lease]))

    async def release(self, name: str, lease: str) -> None:
        with _unavailable():
            await self._redis.zrem(f"{self._prefix}:inflight:{name}", lease)

    async def spend(self, name: str) -> Spend:
        with _unavailable():
            values: list[Any] = await self._redis.hmget(self._spend_key(name), ["t", "c"])
        return Spend(int(values[0] or 0), int(values[1] or 0))

    async def add_spend(self, name: str, spend: Spend, expire_at: float) -> None:
        key = self._spend_key(name)
        with _unavailable():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hincrby(key, "t", spend.tokens)
                pipe.hincrby(key, "c", spend.micro_usd)
                pipe.expireat(key, int(expire_at) + 1)
                await pipe.execute()

    async def seed_spend(self, name: str, spend: Spend, expire_at: float) -> None:
        """Set the spend unless some gateway already keeps it (then Redis's count stands)."""
        key = self._spend_key(name)
        with _unavailable():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hsetnx(key, "t", spend.tokens)
                pipe.hsetnx(key, "c", spend.micro_usd)
                pipe.expireat(key, int(expire_at) + 1)
                await pipe.execute()

    async def look(
        self, spends: Sequence[str], windows: Sequence[tuple[str, int]]
    ) -> tuple[list[Spend], list[Window]]:
        if not spends and not windows:
            return [], []
        with _unavailable():
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in spends:
                    pipe.hmget(self._spend_key(name), ["t", "c"])
                for name, _ in windows:
                    self._queue_peek(pipe, name)
                answers: list[Any] = await pipe.execute()
        found = [Spend(int(t or 0), int(c or 0)) for t, c in answers[: len(spends)]]
        rest = answers[len(spends) :]
        return found, [
            _peeked(limit, rest[2 * i], rest[2 * i + 1]) for i, (_, limit) in enumerate(windows)
        ]

    async def hit_all(self, hits: Sequence[tuple[str, int]], cost: int = 1) -> list[Window]:
        with _unavailable():
            async with self._redis.pipeline(transaction=False) as pipe:
                for name, _ in hits:
                    self._queue_hit(pipe, name, cost)
                answers: list[Any] = await pipe.execute()
        return [
            _hit(limit, answers[3 * i], answers[3 * i + 2]) for i, (_, limit) in enumerate(hits)
        ]

    async def charge(
        self, windows: Sequence[tuple[str, int]], spends: Sequence[tuple[str, float]], spend: Spend
    ) -> None:
        with _unavailable():
            async with self._redis.pipeline(transaction=False) as pipe:
                for name, _ in windows:
                    self._queue_hit(pipe, name, spend.tokens)
                for name, expire_at in spends:
                    key = self._spend_key(name)
                    pipe.hincrby(key, "t", spend.tokens)
                    pipe.hincrby(key, "c", spend.micro_usd)
                    pipe.expireat(key, int(expire_at) + 1)
                await pipe.execute()

    async def release_all(self, names: Sequence[str], lease: str) -> None:
        if len(names) == 1:
            return await self.release(names[0], lease)
        with _unavailable():
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.zrem(f"{self._prefix}:inflight:{name}", lease)
                await pipe.execute()

    async def close(self) -> None:
        await self._redis.aclose()
        await self._pool.aclose()  # a pool passed in is not closed with its clients

    def _rate_key(self, name: str) -> str:
        return f"{self._prefix}:rate:{name}"

    def _spend_key(self, name: str) -> str:
        return f"{self._prefix}:spend:{name}"


def _hit(limit: int, used: Any, ttl_ms: Any) -> Window:
    return Window(limit, min(int(used), limit), int(ttl_ms) / 1000, int(used) > limit)


def _peeked(limit: int, used: Any, ttl_ms: Any) -> Window:
    reset_s = int(ttl_ms) / 1000 if int(ttl_ms) > 0 else WINDOW_S  # no window yet: a full one
    return Window(limit, min(int(used or 0), limit), reset_s)


@contextmanager
def _unavailable() -> Iterator[None]:
    from redis.exceptions import RedisError

    try:
        yield
    except (RedisError, OSError) as error:
        raise CountersUnavailable(f"{type(error).__name__}: {error}") from error
