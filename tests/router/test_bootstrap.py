"""First start on an empty database, by several replicas at once (SQLite and PostgreSQL): they
take turns, so the schema, the catalog, the default tenant, the admin key and the policy are
each created exactly once and every replica starts.

Without the setup lock, SQLite failed about one run in three here ("database is locked": two
deferred transactions that both read, then both want to write); PostgreSQL held already (the
migrations take their own advisory lock, registry writes lock the version row)."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

from registry.catalog import catalog_text
from registry.db import make_engine, session_scope, setup_lock
from registry.gitops_schema import parse_document
from registry.service import list_policies, read_all
from router.bootstrap import bootstrap
from router.settings import Settings
from tests.conftest import Database

REPLICAS = 3


def _replica(url: str, barrier: Any, results: Any) -> None:
    """One gateway process's first start (runs in a child process)."""
    engine = make_engine(url)
    try:
        barrier.wait()
        key = bootstrap(engine, Settings(database_url=url, local_model=False, admin_key=None))
        results.put(("ok", key))
    except BaseException as exc:
        results.put(("error", repr(exc)))
    finally:
        engine.dispose()


def test_replicas_starting_together_set_up_once(blank_database: Database) -> None:
    context = multiprocessing.get_context("spawn")  # separate processes, as replicas are
    barrier, results = context.Barrier(REPLICAS), context.Queue()
    processes = [
        context.Process(target=_replica, args=(blank_database.url, barrier, results))
        for _ in range(REPLICAS)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(30)

    assert [status for status, _ in outcomes] == ["ok"] * REPLICAS, outcomes
    assert sum(key is not None for _, key in outcomes) == 1  # one admin key, shown once
    engine = blank_database.engine()
    try:
        with session_scope(engine) as session:
            catalog = parse_document(catalog_text())
            organizations = read_all(session=session, kind="organization")
            assert len(organizations) == len(catalog.of("organization"))
            assert [t["id"] for t in read_all(session=session, kind="tenant")] == ["default"]
            assert len(read_all(session=session, kind="api_key")) == 1
            assert len(list_policies(session=session)) == 1
    finally:
        engine.dispose()


def test_setup_lock_lets_one_holder_in_at_a_time(blank_database: Database) -> None:
    barrier = threading.Barrier(2)
    events: list[str] = []

    def holder(name: str, delay_s: float) -> None:
        engine = blank_database.engine()
        try:
            barrier.wait()
            time.sleep(delay_s)  # the first one in is the one that did not wait
            with setup_lock(engine):
                events.append(f"{name} in")
                time.sleep(0.2)
                events.append(f"{name} out")
        finally:
            engine.dispose()

    threads = [
        threading.Thread(target=holder, args=("a", 0.0)),
        threading.Thread(target=holder, args=("b", 0.05)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert events == ["a in", "a out", "b in", "b out"]


def test_a_changed_configured_admin_key_replaces_the_previous_one(
    blank_database: Database, caplog: Any
) -> None:
    """Issue 22: changing PROVENANCE_ROUTER_ADMIN_KEY between restarts crashed start-up with
    ``ConflictError: api_key 'admin-configured' already exists``. The new value now replaces the
    old one's hash (the old value stops working, and the log says so); the key keeps its id."""
    from registry.keys import hash_key
    from registry.service import find_key

    first, second = "pr-first-configured-key-0123456789", "pr-second-configured-key-0123456789"
    engine = make_engine(blank_database.url)
    try:
        for configured in (first, second):
            settings = Settings(
                database_url=blank_database.url, local_model=False, admin_key=configured
            )
            with caplog.at_level("WARNING", logger="provenance_router"):
                assert bootstrap(engine, settings) is None
        with session_scope(engine) as session:
            new = find_key(session=session, key_hash=hash_key(second))
            old = find_key(session=session, key_hash=hash_key(first))
            keys = read_all(session=session, kind="api_key")
    finally:
        engine.dispose()
    assert new is not None and new["id"] == "admin-configured" and old is None
    assert [k["id"] for k in keys] == ["admin-configured"]
    assert "configured admin key changed" in caplog.text
    assert first not in caplog.text and second not in caplog.text  # no secret in the log
