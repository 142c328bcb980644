"""Settings that bound the registry database's waits: validated, and handed to the engine."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.pool import QueuePool

from router.settings import Settings, registry_engine


@pytest.mark.parametrize(
    "field, value",
    [
        ("database_pool_size", 0),
        ("database_max_overflow", -1),
        ("database_pool_timeout_s", 0),
        ("registry_lock_timeout_s", 0),
    ],
)
def test_pool_and_lock_bounds_are_validated(field: str, value: float, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(database_url=f"sqlite:///{tmp_path / 'r.db'}", _env_file=None, **{field: value})


def test_the_engine_gets_the_configured_pool_and_lock_bounds(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'r.db'}",
        database_pool_size=3,
        database_max_overflow=0,
        database_pool_timeout_s=1.5,
        registry_lock_timeout_s=0.75,
        _env_file=None,
    )
    engine = registry_engine(settings)
    try:
        pool = engine.pool
        assert isinstance(pool, QueuePool)
        assert (pool.size(), pool._max_overflow, pool._timeout) == (3, 0, 1.5)
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 750
    finally:
        engine.dispose()


def test_environment_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PROVENANCE_ROUTER_DATABASE_POOL_SIZE", "7")
    monkeypatch.setenv("PROVENANCE_ROUTER_REGISTRY_LOCK_TIMEOUT_S", "2")
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'r.db'}", _env_file=None)
    assert (settings.database_pool_size, settings.registry_lock_timeout_s) == (7, 2.0)


def test_observability_reads_the_standard_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Tracing and the workers' metrics directory use the names OpenTelemetry and
    prometheus_client define (docs/observability.md), without our prefix."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t0ken")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gw-eu")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("PROVENANCE_ROUTER_METRICS_TOKEN", "scrape-token")
    settings = Settings(_env_file=None)
    assert settings.tracing_enabled
    assert settings.otlp_traces_url == "http://127.0.0.1:4318/v1/traces"
    assert settings.otel_service_name == "gw-eu"
    assert settings.prometheus_multiproc_dir == tmp_path
    assert settings.metrics_token is not None and "scrape-token" not in repr(settings)
    headers = settings.otel_exporter_otlp_headers
    assert headers is not None and "t0ken" not in repr(settings)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/traces")
    assert Settings(_env_file=None).otlp_traces_url == "http://collector:4318/traces"
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not Settings(_env_file=None).tracing_enabled
