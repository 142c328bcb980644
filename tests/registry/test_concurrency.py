"""Concurrent writers, each on its own connection, lined up with a barrier: the registry serializes
them, exactly one of two edits of the same version wins, the loser gets a 409-style conflict,
and the registry version moves once per successful transaction. A writer that cannot get a
connection or the write lock in time gets ``BusyError`` (503), never a driver error."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Engine

from registry.db import make_engine, session_scope
from registry.service import (
    BusyError,
    ConflictError,
    list_changes,
    load_snapshot,
    read_one,
    registry_version,
    write_transaction,
)
from tests.conftest import Database
from tests.registry.conftest import LLAMA, seed

ROUNDS = 5
BARRIER_TIMEOUT_S = 30.0


def race(engine: Engine, jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run every job in its own thread, released together; returns each result or exception."""
    barrier = threading.Barrier(len(jobs), timeout=BARRIER_TIMEOUT_S)

    def run(job: Callable[[], Any]) -> Any:
        barrier.wait()
        try:
            return job()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(run, jobs))


def rename(engine: Engine, family: str, expected_version: int) -> Callable[[], dict[str, Any]]:
    def job() -> dict[str, Any]:
        with write_transaction(engine=engine, actor=f"writer-{family}") as writer:
            return writer.update(
                "model", LLAMA["id"], {"family": family}, expected_version=expected_version
            )

    return job


def test_two_edits_of_the_same_version_one_wins(seeded: Engine) -> None:
    for round_number in range(ROUNDS):
        with session_scope(seeded) as session:
            version = read_one(session=session, kind="model", id=LLAMA["id"])["version"]
        names = (f"left-{round_number}", f"right-{round_number}")
        outcomes = race(seeded, [rename(seeded, name, version) for name in names])

        winners = [o for o in outcomes if isinstance(o, dict)]
        losers = [o for o in outcomes if isinstance(o, ConflictError)]
        assert len(winners) == 1 and len(losers) == 1, outcomes
        with session_scope(seeded) as session:
            stored = read_one(session=session, kind="model", id=LLAMA["id"])
            assert stored["family"] == winners[0]["family"]
            assert stored["version"] == winners[0]["version"] == version + 1
            assert registry_version(session=session) == version + 1
            log = list_changes(session=session, entity_id=LLAMA["id"], since_version=version)
        assert [c["after"]["family"] for c in log] == [winners[0]["family"]]


def test_concurrent_creates_of_one_id_conflict(seeded: Engine) -> None:
    def create(name: str) -> Callable[[], dict[str, Any]]:
        def job() -> dict[str, Any]:
            with write_transaction(engine=seeded, actor=name) as writer:
                return writer.create("tenant", {"id": "contested", "name": name})

        return job

    outcomes = race(seeded, [create("left"), create("right")])
    assert sorted(type(o).__name__ for o in outcomes) == ["ConflictError", "dict"]


@pytest.mark.parametrize("writers", [8])
def test_concurrent_writers_get_consecutive_versions(seeded: Engine, writers: int) -> None:
    def create(index: int) -> Callable[[], int | None]:
        def job() -> int | None:
            with write_transaction(engine=seeded, actor=f"w{index}") as writer:
                writer.create("tenant", {"id": f"tenant-{index}"})
            return writer.version

        return job

    outcomes = race(seeded, [create(i) for i in range(writers)])
    assert sorted(outcomes) == list(range(2, writers + 2)), outcomes
    with session_scope(seeded) as session:
        assert registry_version(session=session) == writers + 1


def test_snapshots_are_consistent_while_writers_commit(seeded: Engine) -> None:
    """An organization and a tenant (different tables, read by different statements) are
    renamed together in each transaction; every snapshot must see both from the same one."""
    writes = 30
    done = threading.Event()

    def write_all() -> None:
        try:
            for i in range(writes):
                with write_transaction(engine=seeded, actor="writer") as writer:
                    writer.update("organization", "meta", {"name": f"n{i}"}, expected_version=None)
                    writer.update("tenant", "product-x", {"name": f"n{i}"}, expected_version=None)
        finally:
            done.set()

    def read_until_done() -> list[tuple[int, str, str]]:
        seen = []
        while not done.is_set():
            with session_scope(seeded) as session:
                snapshot = load_snapshot(session=session)
            seen.append(
                (snapshot.version, snapshot.orgs["meta"].name, snapshot.tenants["product-x"].name)
            )
        return seen

    outcomes = race(seeded, [write_all, read_until_done])
    assert outcomes[0] is None, outcomes[0]
    written = [(version, org, tenant) for version, org, tenant in outcomes[1] if version > 1]
    assert written, "no snapshot saw a write: the test proved nothing"
    assert all(org == tenant == f"n{version - 2}" for version, org, tenant in written), written


def test_a_writer_that_cannot_get_the_write_lock_in_time_is_busy(database: Database) -> None:
    """Another process's writer holds the lock (here: another engine, as a replica or ``apply``
    would): the second writer gives up after the lock timeout with ``BusyError`` and changes
    nothing, instead of waiting without bound or failing with a driver error."""
    holder = database.engine()
    waiter = make_engine(database.url, lock_timeout_s=0.2)
    try:
        seed(holder)
        with write_transaction(engine=holder, actor="holder") as writer:
            writer.update("tenant", "product-x", {"name": "held"}, expected_version=None)
            with pytest.raises(BusyError), write_transaction(engine=waiter, actor="w") as late:
                late.update("tenant", "product-x", {"name": "late"}, expected_version=None)
        with session_scope(waiter) as session:
            assert read_one(session=session, kind="tenant", id="product-x")["name"] == "held"
    finally:
        holder.dispose()
        waiter.dispose()


def test_no_free_connection_in_time_is_busy(database: Database) -> None:
    """Reads and writes that find every pooled connection taken give up after the pool
    timeout with ``BusyError``."""
    engine = make_engine(database.url, pool_size=1, max_overflow=0, pool_timeout_s=0.1)
    try:
        with engine.connect():  # the only connection
            with pytest.raises(BusyError), session_scope(engine) as session:
                registry_version(session=session)
            with pytest.raises(BusyError), write_transaction(engine=engine, actor="w"):
                pass
        with session_scope(engine) as session:  # free again
            assert registry_version(session=session) == 0
    finally:
        engine.dispose()
