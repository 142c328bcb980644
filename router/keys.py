"""What every request's API key must pass, on ``/v1`` (from the snapshot) and on ``/admin``
(from the database) alike, and the record of when each key was last used.

A key's expiry and a rotated key's grace period end at a time, not at a registry change: no
snapshot reload happens at that moment, so :func:`usable_key` compares the key's
``valid_until`` with the clock at each request (one float comparison).

Last use is kept in memory (:class:`KeyUsage`: one dict assignment per request) and written in
batches off the event loop every ``key_last_used_flush_s`` and at shutdown
(``registry.key_use``). Its granularity is that interval: ``last_used_at`` is the time of the
latest request seen before a flush, stored up to one interval late; a process killed with
``kill -9`` loses at most its last interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from sqlalchemy import Engine

from registry.key_use import record_key_use
from registry.snapshot import KeySnap
from router.errors import INCORRECT_API_KEY, AuthenticationFailed

log = logging.getLogger("provenance_router")


def usable_key(key: KeySnap | None, now: float) -> KeySnap:
    """``key`` if it may authenticate a request at UNIX time ``now``; else 401
    ``invalid_api_key`` (unknown or revoked, expired, or a rotated key past its grace)."""
    if key is None or not key.enabled:
        raise AuthenticationFailed(INCORRECT_API_KEY)
    if key.valid_until is not None and now >= key.valid_until:
        raise AuthenticationFailed(_ended(key))
    return key


def _ended(key: KeySnap) -> str:
    assert key.valid_until is not None
    at = datetime.fromtimestamp(key.valid_until, UTC).isoformat(timespec="seconds")
    if key.rotated:
        return (
            f"This API key was replaced by a rotation and its grace period ended at {at}. "
            "Use the new key."
        )
    return f"This API key expired at {at}."


class KeyUsage:
    """The last use of each key since the last flush (see the module docstring)."""

    def __init__(self, engine: Engine, *, flush_s: float) -> None:
        self._engine = engine
        self._flush_s = flush_s
        self._pending: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def touch(self, key_id: str, now: float | None = None) -> None:
        """Note a use of ``key_id`` (on the request path: no I/O)."""
        self._pending[key_id] = time.time() if now is None else now

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="key-last-used")

    async def stop(self) -> None:
        """Stop the periodic flush and write what is pending."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()

    async def flush(self) -> None:
        """Write the pending uses in one transaction, in a worker thread. On failure they are
        kept (a newer use of the same key wins) and tried again at the next flush."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            await asyncio.to_thread(record_key_use, engine=self._engine, last_used=pending)
        except Exception:
            log.exception("could not store the last use of %d API keys; will retry", len(pending))
            for key_id, moment in pending.items():
                self._pending[key_id] = max(moment, self._pending.get(key_id, moment))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_s)
            await self.flush()
