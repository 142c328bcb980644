"""The gateway's process state: the current routing table, backend health, adapters, the audit
writer and the bundled local model. One instance per app; no module-level state.

The routing table is rebuilt off the hot path whenever the registry version moves: at once after
an admin write in this process (``reload``), and within ``snapshot_poll_s`` for writes made
elsewhere (another replica, ``provenance-router apply``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import threading
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from adapters.base import Adapter
from adapters.http1 import Limits
from adapters.openai_compat import OpenAICompatAdapter, PhaseTimeouts, make_client
from registry.db import session_scope
from registry.service import load_snapshot, registry_version
from registry.snapshot import RegistrySnapshot
from router.audit import (
    AuditWriter,
    ChainedStore,
    enforce_retention,
    replay_journals,
    store_batch,
)
from router.audit_journal import Journal
from router.departure import DepartureWatch
from router.exposure import record_version_facts
from router.health import BackendHealth
from router.policy import PolicyEngine
from router.settings import Settings, resolve_secret
from router.signing import Signer, load_or_create_signer
from router.table import RoutingTable, build_table

if TYPE_CHECKING:
    from adapters.local_llamacpp import LocalModelServer

log = logging.getLogger("provenance_router")

LOCAL_ALIAS = "smollm2"


def upstream_limits(settings: Settings) -> Limits:
    """The fast path's HTTP client caps, from the settings."""
    return Limits(
        connections=settings.upstream_max_connections,
        per_origin=settings.upstream_max_connections_per_origin,
        max_header_bytes=settings.upstream_max_header_bytes,
        max_headers=settings.upstream_max_headers,
        max_body_bytes=settings.upstream_max_body_bytes,
    )


def request_ids() -> Iterator[str]:
    """Unique request ids: a random per-process prefix and a counter (``uuid4`` per request
    cost 2 % of the gateway's CPU; ids need to be unique, not unguessable)."""
    prefix = f"req_{uuid.uuid4().hex[:16]}"
    return (f"{prefix}{n:012x}" for n in itertools.count(1))


class Gateway:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.health = BackendHealth(
            failures=settings.breaker_failures, cooldown_s=settings.breaker_cooldown_s
        )
        self.audit_store = ChainedStore(
            engine,
            chain_id=uuid.uuid4().hex,
            checkpoint_every=settings.audit_checkpoint_every,
            checkpoint_s=settings.audit_checkpoint_s,
        )
        self.audit = AuditWriter(
            store_batch(self.audit_store),
            flush_s=settings.audit_flush_s,
            batch_max=settings.audit_batch_max,
        )
        self.departures = DepartureWatch(settings.disconnect_check_s)
        self.signer: Signer | None = None
        self.rng = random.Random()
        self.request_ids = request_ids()
        self.local_urls: dict[str, str] = {}
        self._table: RoutingTable | None = None
        self._reload_lock = threading.Lock()
        self._adapters: dict[str, Adapter] = {}
        self._local: LocalModelServer | None = None
        self._poller: asyncio.Task[None] | None = None
        self._departures: asyncio.Task[None] | None = None
        self._retention: asyncio.Task[None] | None = None

    @property
    def table(self) -> RoutingTable:
        if self._table is None:
            raise RuntimeError("the gateway has not loaded the registry yet")
        return self._table

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self.settings.local_model and LOCAL_ALIAS not in self.local_urls:
            await asyncio.to_thread(self._start_local_model)
        await asyncio.to_thread(self.reload)
        compat = OpenAICompatAdapter(
            make_client(
                limits=upstream_limits(self.settings), idle_s=self.settings.upstream_idle_s
            ),
            PhaseTimeouts(
                connect_s=self.settings.upstream_connect_timeout_s,
                write_s=self.settings.upstream_write_timeout_s,
                pool_s=self.settings.upstream_pool_timeout_s,
            ),
        )
        self._adapters = {"openai": compat, "local": compat}
        self.signer = await asyncio.to_thread(load_or_create_signer, self.settings.signing_key_dir)
        await self._start_audit()
        loop = asyncio.get_running_loop()
        self._poller = loop.create_task(self._poll(), name="registry-poll")
        self._departures = loop.create_task(self.departures.run(), name="departure-watch")
        if self.settings.audit_retention_days is not None:
            self._retention = loop.create_task(self._enforce_retention(), name="audit-retention")

    async def stop(self) -> None:
        for task in (self._poller, self._departures, self._retention):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.audit.stop()
        for adapter in {id(a): a for a in self._adapters.values()}.values():
            await adapter.close()  # the OpenAI-compatible adapter closes the shared session
        if self._local is not None:
            await asyncio.to_thread(self._local.stop)

    async def _start_audit(self) -> None:
        """Sign with the gateway's key; in strict mode, first store what a dead process
        journaled, then journal this process's records."""
        self.audit_store.signer = self.signer
        journal_dir = self.settings.audit_journal_dir
        await asyncio.to_thread(replay_journals, journal_dir, self.engine, self.audit_store.sign)
        if self.settings.audit_durability == "strict":
            chain_id = self.audit_store.head.chain_id
            self.audit.journal = await asyncio.to_thread(Journal, journal_dir, chain_id)
        self.audit.start()

    async def _enforce_retention(self) -> None:
        """Every ``audit_prune_interval_s`` (first at start): prune records older than
        ``audit_retention_days``, archived first when ``audit_archive_dir`` is set."""
        settings = self.settings
        assert settings.audit_retention_days is not None
        while True:
            try:
                rows, archive = await asyncio.to_thread(
                    enforce_retention,
                    self.engine,
                    days=settings.audit_retention_days,
                    archive_dir=settings.audit_archive_dir,
                    sign=self.audit_store.sign,
                )
                if rows:
                    log.warning("audit retention: pruned %d records (archive: %s)", rows, archive)
            except Exception:
                log.exception("audit retention: prune failed; will try again")
            await asyncio.sleep(settings.audit_prune_interval_s)

    def _start_local_model(self) -> None:
        from adapters.local_llamacpp import LocalModelServer

        self._local = LocalModelServer(alias=LOCAL_ALIAS)
        self.local_urls[LOCAL_ALIAS] = self._local.start()

    # --- registry snapshot -----------------------------------------------------------------

    def reload(self) -> None:
        """Load the registry and policy and swap in a new routing table (blocking; call from a
        worker thread). An invalid stored policy keeps the previous table: never fail open."""
        with self._reload_lock:
            with session_scope(self.engine) as session:
                snapshot = load_snapshot(session=session)
            current = self._table
            if current is not None and snapshot.version <= current.registry_version:
                return
            engine = PolicyEngine.build(snapshot, snapshot.policy)
            self._table = build_table(
                snapshot, engine, local_urls=self.local_urls, secret=resolve_secret
            )
            self._record_exposure_facts(snapshot, engine)

    def _record_exposure_facts(self, snapshot: RegistrySnapshot, engine: PolicyEngine) -> None:
        """The facts this version's traffic will be attributed to in the exposure report
        (``router.exposure``). A failure never stops serving: the report records the current
        version itself before reading, and shows what stays unrecorded as unknown."""
        try:
            record_version_facts(self.engine, snapshot, engine)
        except Exception:
            log.exception("exposure facts of registry version %s not recorded", snapshot.version)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.snapshot_poll_s)
            try:
                version = await asyncio.to_thread(self._stored_version)
                if self._table is None or version > self._table.registry_version:
                    await asyncio.to_thread(self.reload)
            except Exception:
                log.exception(
                    "registry reload failed; still serving version %s",
                    self._table.registry_version if self._table else None,
                )

    def _stored_version(self) -> int:
        with session_scope(self.engine) as session:
            return registry_version(session=session)

    # --- per request -----------------------------------------------------------------------

    def adapter(self, kind: str) -> Adapter:
        adapter = self._adapters.get(kind)
        if adapter is None and kind == "litellm":
            from adapters.litellm_adapter import LiteLLMAdapter

            adapter = self._adapters["litellm"] = LiteLLMAdapter()
        if adapter is None:
            raise RuntimeError(f"no adapter for backend kind {kind!r}")
        return adapter
