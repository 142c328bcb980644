"""The counters behind limits and budgets, in one process or shared through Redis.

    Counters (protocol)
    ├── LocalCounters   the embedded default: this process only (``limits``' MemoryStorage)
    └── RedisCounters   every gateway pointed at one Redis (``redis_url``): ``limits``'
                        RedisStorage on redis-py's asyncio client, plus Lua for leases

Three kinds of counter, each named by the caller (``router.limiter`` builds the names):

- **rates**: a fixed one-minute window per name (``limits``' FixedWindowRateLimiter): requests
  per minute counted as they arrive, tokens per minute counted once a response's usage is known.
- **leases**: requests in flight per name. In Redis each is a member of a sorted set scored by
  its expiry (``lease_ttl_s``): a gateway that dies holding leases does not hold them forever.
- **spend**: tokens and micro-dollars per name (the name includes the budget period), seeded
  from the audit log with "set if absent", so a restart or a new replica does not reset it.

Every Redis failure surfaces as :class:`CountersUnavailable`; the limiter decides whether that
fails open or closed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError

if TYPE_CHECKING:
    from redis.asyncio import Redis

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

    async def close(self) -> None: ...


class _Rates:
    """Fixed one-minute windows over a ``limits`` storage."""

    def __init__(self, storage: Storage) -> None:
        self._limiter = FixedWindowRateLimiter(storage)
        self._items: dict[int, RateLimitItem] = {}

    def _item(self, limit: int) -> RateLimitItem:
        item = self._items.get(limit)
        if item is None:
            item = self._items[limit] = RateLimitItemPerMinute(limit)
        return item

    async def hit(self, name: str, limit: int, cost: int) -> Window:
        allowed = await self._limiter.hit(self._item(limit), name, cost=cost)  # counts anyway
        window = await self.peek(name, limit)
        return window if allowed else replace(window, over=True)

    async def peek(self, name: str, limit: int) -> Window:
        stats = await self._limiter.get_window_stats(self._item(limit), name)
        reset_s = max(0.0, stats.reset_time - time.time())
        return Window(limit, limit - stats.remaining, reset_s or WINDOW_S)


class LocalCounters:
    """This process's counters (the embedded default; ``serve --workers N`` counts per worker)."""

    def __init__(self) -> None:
        self._rates = _Rates(MemoryStorage())
        self._inflight: dict[str, int] = {}
        self._spend: dict[str, Spend] = {}

    async def hit(self, name: str, limit: int, cost: int = 1) -> Window:
        return await self._rates.hit(name, limit, cost)

    async def peek(self, name: str, limit: int) -> Window:
        return await self._rates.peek(name, limit)

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
        storage = RedisStorage(
            url,
            implementation="redispy",
            key_prefix=f"{prefix}:rate",
            wrap_exceptions=True,
            connection_pool=pool,  # type: ignore[arg-type]  # documented: a pool is accepted
        )
        self._rates = _Rates(storage)
        self._prefix = prefix
        self._lease_ttl_s = lease_ttl_s
        self._acquire = self._redis.register_script(ACQUIRE)

    async def hit(self, name: str, limit: int, cost: int = 1) -> Window:
        with _unavailable():
            return await self._rates.hit(name, limit, cost)

    async def peek(self, name: str, limit: int) -> Window:
        with _unavailable():
            return await self._rates.peek(name, limit)

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

    async def close(self) -> None:
        await self._redis.aclose()
        await self._pool.aclose()  # a pool passed in is not closed with its clients

    def _spend_key(self, name: str) -> str:
        return f"{self._prefix}:spend:{name}"


@contextmanager
def _unavailable() -> Iterator[None]:
    from redis.exceptions import RedisError

    try:
        yield
    except (RedisError, StorageError, OSError) as error:
        raise CountersUnavailable(f"{type(error).__name__}: {error}") from error
