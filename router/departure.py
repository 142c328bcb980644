"""Noticing a client that goes away while its request waits for, or streams from, a backend.

After the request body is read, the next ASGI message can only be ``http.disconnect``; only a
task awaiting ``receive()`` hears it. A task per request costs ~10 µs of CPU (measured: create,
first step, cancel), a fifth of the gateway's whole request path, and most calls to a fast
backend are over before a client could leave. So watchers start lazily:

- every routed request registers a :class:`Departure` (a set insert) when its upstream call
  starts;
- :class:`DepartureWatch`, one task per gateway, wakes every ``tick_s`` and starts the watcher
  of each request that was already pending at the previous tick (pending for one to two ticks);
- a stream starts its watcher when relaying begins (it may run for minutes).

A started watcher, on ``http.disconnect``: before the response starts, cancels the request's
task (the pending upstream call closes its connection, so the backend stops working for nobody);
while a stream is relayed, closes the upstream stream; while a whole body is being sent, only
notes that the client left.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from adapters.base import UpstreamResponse

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

log = logging.getLogger("provenance_router")


class Departure:
    """One request's watch for its client leaving (see the module docstring)."""

    __slots__ = ("_cancelled", "_receive", "_stream", "_task", "_watch", "_watcher", "left")

    def __init__(self, receive: Receive, watch: DepartureWatch | None = None) -> None:
        self.left = False
        self._cancelled = False
        self._receive = receive
        self._stream: UpstreamResponse | None = None
        self._task: asyncio.Task[Any] | None = asyncio.current_task()
        self._watcher: asyncio.Task[None] | None = None
        self._watch = watch
        if watch is None:
            self.start()
        else:
            watch.add(self)

    def start(self) -> None:
        """Start listening for ``http.disconnect`` (idempotent)."""
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._listen())

    def responding(self) -> None:
        """The response is about to start: never cancel the request's task from now on."""
        self._task = None

    def relaying(self, stream: UpstreamResponse) -> None:
        """A stream is about to be relayed: on departure close it, not the request's task."""
        self._task, self._stream = None, stream
        self.start()

    def cancelled_us(self) -> bool:
        """True when the CancelledError the request's task caught came from this watch; the
        cancellation is then withdrawn so the task can go on to record the outcome."""
        if not self._cancelled:
            return False
        self._cancelled = False
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return True

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.discard(self)
        if self._watcher is not None:
            self._watcher.cancel()

    async def _listen(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.left = True
        if self._stream is not None:
            await self._stream.aclose()
        elif self._task is not None:
            self._cancelled = True
            self._task.cancel()


class DepartureWatch:
    """Starts the watchers of requests still pending after a tick (one task per gateway)."""

    def __init__(self, tick_s: float) -> None:
        self.tick_s = tick_s
        self._young: set[Departure] = set()  # registered since the last tick
        self._old: set[Departure] = set()  # registered before it: start these at the next

    def add(self, departure: Departure) -> None:
        self._young.add(departure)

    def discard(self, departure: Departure) -> None:
        self._young.discard(departure)
        self._old.discard(departure)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            old, self._old, self._young = self._old, self._young, set()
            for departure in old:
                try:
                    departure.start()
                except Exception:  # one request's watcher must not stop the others'
                    log.exception("could not watch a request for its client leaving")
