"""The gateway's process state: the current routing table, backend health, adapters, the audit
writer and the bundled local model. One instance per app; no module-level state.

The routing table is rebuilt off the hot path whenever the registry version moves: at once after
an admin write in this process (``reload``); for writes made elsewhere (another replica,
``provenance-router apply``) as soon as their change signal arrives (``registry.changes``: a
PostgreSQL ``NOTIFY``, SQLite's ``data_version``), heard by a thread of its own, and at the
latest at the next version poll (every ``snapshot_poll_s``), the safety net.

Each successful contact with the database that shows the snapshot current moves a deadline,
``fresh_until``, ``max_staleness_s`` ahead. Past it the snapshot is too stale to route on: the
request path compares one float (``require_fresh``) and answers 503 ``registry_unavailable``;
``/readyz`` says not ready. The next successful contact makes it fresh again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from adapters.base import Adapter
from adapters.http1 import Limits
from adapters.local_llamacpp import DEFAULT_ALIAS as LOCAL_ALIAS
from adapters.openai_compat import OpenAICompatAdapter, PhaseTimeouts, make_client
from registry.changes import ChangeSignal, can_signal, open_signal
from registry.db import session_scope
from registry.service import load_snapshot, registry_version
from registry.snapshot import RegistrySnapshot
from registry.spend import deployment_prices, spend
from router.audit import (
    AuditWriter,
    ChainedStore,
    enforce_retention,
    replay_journals,
    store_batch,
)
from router.audit_journal import Journal
from router.counters import Counters, LocalCounters, RedisCounters, Spend
from router.departure import DepartureWatch
from router.errors import RegistryUnavailable
from router.exposure import record_version_facts
from router.health import BackendHealth
from router.keys import KeyUsage
from router.limiter import Limiter, SubjectKind
from router.metrics import GatewayMetrics, GatewayState
from router.policy import PolicyEngine
from router.receipts import BatchSigner
from router.settings import Settings, resolve_secret
from router.signing import Signer, load_or_create_signer
from router.table import RoutingTable, build_table
from router.telemetry import Telemetry

if TYPE_CHECKING:
    from adapters.local_llamacpp import LocalModelServer
    from router.tracing import RecordTracer

log = logging.getLogger("provenance_router")

SIGNAL_WAIT_S = 0.25  # the change watcher looks at its stop flag this often
RECONNECT_MIN_S = 0.1  # the change watcher's backoff after losing its signal, doubling ...
RECONNECT_MAX_S = 5.0  # ... up to this


def upstream_limits(settings: Settings) -> Limits:
    """The fast path's HTTP client caps, from the settings."""
    return Limits(
        connections=settings.upstream_max_connections,
        per_origin=settings.upstream_max_connections_per_origin,
        max_header_bytes=settings.upstream_max_header_bytes,
        max_headers=settings.upstream_max_headers,
        max_body_bytes=settings.upstream_max_body_bytes,
    )


def limit_counters(settings: Settings) -> Counters:
    """In this process, or shared through Redis when ``redis_url`` is set."""
    if settings.redis_url is None:
        return LocalCounters()
    return RedisCounters(
        settings.redis_url.get_secret_value(),
        prefix=settings.redis_key_prefix,
        lease_ttl_s=settings.limits_lease_ttl_s,
        timeout_s=settings.redis_timeout_s,
    )


def request_ids() -> Iterator[str]:
    """Unique request ids: a random per-process prefix and a counter (``uuid4`` per request
    cost 2 % of the gateway's CPU; ids need to be unique, not unguessable)."""
    prefix = f"req_{uuid.uuid4().hex[:16]}"
    return (f"{prefix}{n:012x}" for n in itertools.count(1))


def _tracer(settings: Settings) -> RecordTracer | None:
    """The span exporter when tracing is on; the OpenTelemetry SDK (~5 MB, ~0.1 s) is imported
    only then."""
    if not settings.tracing_enabled:
        return None
    from router.tracing import record_tracer

    return record_tracer(settings)


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
        self.telemetry = Telemetry(
            GatewayMetrics(settings.prometheus_multiproc_dir) if settings.metrics_enabled else None,
            _tracer(settings),
            lambda: self._table,
        )
        self.tracing = self.telemetry.tracer is not None  # the request path keeps traceparent
        observed = self.telemetry.metrics is not None or self.tracing
        self.audit = AuditWriter(
            store_batch(self.audit_store),
            flush_s=settings.audit_flush_s,
            batch_max=settings.audit_batch_max,
            observer=self.telemetry if observed else None,
        )
        self.departures = DepartureWatch(settings.disconnect_check_s)
        self.key_usage = KeyUsage(engine, flush_s=settings.key_last_used_flush_s)
        metrics = self.telemetry.metrics
        self.limiter = Limiter(
            limit_counters(settings),
            fail_closed=settings.limits_redis_failure == "closed",
            spend_source=self._spend_since,
            on_soft_budget=(lambda kind: metrics.budget_soft.labels(kind).inc())
            if metrics is not None
            else None,
        )
        self.signer: Signer | None = None
        self.receipts: BatchSigner | None = None  # signs /v1 responses' receipts, in batches
        self.rng = random.Random()
        self.request_ids = request_ids()
        self.local_urls: dict[str, str] = {}
        self._table: RoutingTable | None = None
        self._reload_lock = threading.Lock()
        self.fresh_until = 0.0  # monotonic; see the module docstring
        self.database_ok_at: float | None = None  # monotonic time of the last good contact
        self.database_reachable = False  # the last contact succeeded
        self._watcher: threading.Thread | None = None
        self._stop_watching = threading.Event()
        self._reconnect_s = RECONNECT_MIN_S
        self._adapters: dict[str, Adapter] = {}
        self._local: LocalModelServer | None = None
        self._poller: asyncio.Task[None] | None = None
        self._departures: asyncio.Task[None] | None = None
        self._retention: asyncio.Task[None] | None = None
        self._gauges: asyncio.Task[None] | None = None

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
        self.receipts = BatchSigner(self.signer)
        await self._start_audit()
        self.key_usage.start()
        loop = asyncio.get_running_loop()
        self._poller = loop.create_task(self._poll(), name="registry-poll")
        self._start_watcher()
        self._departures = loop.create_task(self.departures.run(), name="departure-watch")
        if self.settings.audit_retention_days is not None:
            self._retention = loop.create_task(self._enforce_retention(), name="audit-retention")
        if self.telemetry.metrics is not None:
            self._gauges = loop.create_task(self._refresh_gauges(), name="metrics-gauges")

    async def stop(self) -> None:
        self._stop_watching.set()
        if self._watcher is not None:
            await asyncio.to_thread(self._watcher.join)
        for task in (self._poller, self._departures, self._retention, self._gauges):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.audit.stop()
        await self.key_usage.stop()
        await self.limiter.close()
        await asyncio.to_thread(self.telemetry.shutdown)
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

    async def _refresh_gauges(self) -> None:
        """Every ``metrics_refresh_s``: this process's gauges, so that a scrape served by
        another worker sees them (serve --workers)."""
        metrics = self.telemetry.metrics
        assert metrics is not None
        while True:
            metrics.refresh(self.state())
            await asyncio.sleep(self.settings.metrics_refresh_s)

    def state(self) -> GatewayState:
        """What the gauges show now."""
        table = self._table
        deployments = table.snapshot.deployments if table is not None else {}
        fresh_until = self.fresh_until
        return GatewayState(
            circuits={d: self.health.is_open(d) for d in deployments},
            audit_queue=self.audit.pending,
            registry_version=table.registry_version if table is not None else None,
            policy_version=table.policy_version if table is not None else None,
            snapshot_age_s=(  # since the last confirmation, which set the deadline
                time.monotonic() - (fresh_until - self.settings.max_staleness_s)
                if fresh_until > 0.0
                else None
            ),
        )

    def _spend_since(self, kind: SubjectKind, subject_id: str, since: datetime) -> Spend:
        """What the audit log holds of a key's or tenant's spend since ``since`` (blocking:
        the limiter calls it in a thread, once per budget counter)."""
        key_id, tenant_id = (subject_id, None) if kind == "key" else (None, subject_id)
        prices = deployment_prices(self.table.snapshot)
        rows = spend(
            engine=self.engine,
            group_by=kind,
            since=since,
            prices=prices,
            key_id=key_id,
            tenant_id=tenant_id,
        )
        return Spend(rows[0].total_tokens, rows[0].micro_usd) if rows else Spend()

    def _start_local_model(self) -> None:
        from adapters.local_llamacpp import LocalModelServer

        self._local = LocalModelServer(alias=LOCAL_ALIAS, gguf=self.settings.local_model_gguf)
        self.local_urls[LOCAL_ALIAS] = self._local.start()

    # --- registry snapshot -----------------------------------------------------------------

    def reload(self) -> None:
        """Load the registry and policy and swap in a new routing table (blocking; call from a
        worker thread). An invalid stored policy keeps the previous table: never fail open
        (nor is it confirmed fresh, so it goes stale in ``max_staleness_s``). The new version's
        exposure facts are written after the lock is released: a reload waiting behind this
        one does not wait for that write too."""
        loaded: tuple[RegistrySnapshot, PolicyEngine] | None = None
        with self._reload_lock:
            with self._contact(), session_scope(self.engine) as session:
                snapshot = load_snapshot(session=session)
            current = self._table
            if current is None or snapshot.version > current.registry_version:
                engine = PolicyEngine.build(snapshot, snapshot.policy)
                self._table = build_table(
                    snapshot, engine, local_urls=self.local_urls, secret=resolve_secret
                )
                loaded = (snapshot, engine)
            self._confirm_fresh()
        if loaded is not None:
            self._record_exposure_facts(*loaded)

    def refresh(self) -> None:
        """Reload when the stored version moved past the served one, else confirm the snapshot
        fresh (blocking: one small query, plus a reload when needed)."""
        with self._contact(), session_scope(self.engine) as session:
            version = registry_version(session=session)
        if self._table is None or version > self._table.registry_version:
            self.reload()
        else:
            self._confirm_fresh()

    def require_fresh(self) -> None:
        """On the request path: one comparison, and a 503 once the snapshot is too stale."""
        if time.monotonic() > self.fresh_until:
            raise RegistryUnavailable(
                "The gateway has not reached its registry database for more than "
                f"{self.settings.max_staleness_s:g} s and will not route on an outdated "
                "registry and policy. Retry later."
            )

    def _record_exposure_facts(self, snapshot: RegistrySnapshot, engine: PolicyEngine) -> None:
        """The facts this version's traffic will be attributed to in the exposure report
        (``router.exposure``). A failure never stops serving: the report records the current
        version itself before reading, and shows what stays unrecorded as unknown."""
        try:
            record_version_facts(self.engine, snapshot, engine)
        except Exception:
            log.exception("exposure facts of registry version %s not recorded", snapshot.version)

    def _confirm_fresh(self) -> None:
        self.fresh_until = time.monotonic() + self.settings.max_staleness_s

    @contextlib.contextmanager
    def _contact(self) -> Iterator[None]:
        """Record whether a round trip to the database succeeded (for ``/readyz``)."""
        try:
            yield
        except Exception:
            self.database_reachable = False
            raise
        self.database_reachable, self.database_ok_at = True, time.monotonic()

    async def _poll(self) -> None:
        """The safety net under the change signal: a version check every ``snapshot_poll_s``,
        which also keeps the snapshot confirmed fresh while nothing changes."""
        failing = False
        while True:
            await asyncio.sleep(self.settings.snapshot_poll_s)
            try:
                await asyncio.to_thread(self.refresh)
                failing = False
            except Exception:
                if not failing:  # once per outage, not once per poll
                    log.exception(
                        "registry check failed; serving version %s until it is %g s stale",
                        self._table.registry_version if self._table else None,
                        self.settings.max_staleness_s,
                    )
                failing = True

    # --- change signal (a thread: it blocks on its connection, not on the event loop) -------

    def _start_watcher(self) -> None:
        if not can_signal(self.engine):
            return
        self._watcher = threading.Thread(
            target=self._watch, name="registry-change-watcher", daemon=True
        )
        self._watcher.start()

    def _watch(self) -> None:
        """Refresh on every change signal; when the signal is lost, reconnect with backoff
        (the version poll covers the gap)."""
        while not self._stop_watching.is_set():
            try:
                with self._contact():
                    signal = open_signal(self.engine, check_s=self.settings.change_check_s)
                try:
                    self._follow(signal)
                finally:
                    signal.close()
            except Exception as error:
                self.database_reachable = False
                log.warning("registry change signal lost (%s); reconnecting", type(error).__name__)
            if self._stop_watching.wait(self._reconnect_s):
                return
            self._reconnect_s = min(self._reconnect_s * 2, RECONNECT_MAX_S)

    def _follow(self, signal: ChangeSignal) -> None:
        self.refresh()  # what changed while nobody listened
        self._reconnect_s = RECONNECT_MIN_S
        while not self._stop_watching.is_set():
            if not signal.wait(SIGNAL_WAIT_S):
                continue
            if signal.definite:  # a NOTIFY: no need to compare versions first
                self.reload()
            else:
                self.refresh()

    # --- per request -----------------------------------------------------------------------

    def adapter(self, kind: str) -> Adapter:
        adapter = self._adapters.get(kind)
        if adapter is None and kind == "litellm":
            from adapters.litellm_adapter import LiteLLMAdapter

            adapter = self._adapters["litellm"] = LiteLLMAdapter()
        if adapter is None:
            raise RuntimeError(f"no adapter for backend kind {kind!r}")
        return adapter
