"""Registry writes under contention, black box through the real gateway (uvicorn on port 0,
httpx), on SQLite and PostgreSQL: many admin requests that race for the same entity get exactly
one success and 409s in the OpenAI envelope, never a 500, and reads keep answering meanwhile.

Issue 14: each admin request held one pooled connection for authentication while its write
waited for a second, so parallel PATCHes exhausted the pool and answered 500 after the pool's
30 s checkout timeout, and ``/admin/version`` waited as long. Before the fix, 100 PATCHes of one
version answered 1x200, 4x409, 95x500 on SQLite (1x200, 6x409, 93x500 on PostgreSQL) in ~90 s,
and reads took up to 61 s (this test's client gives up after 60 s).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from registry.db import make_engine
from registry.service import write_transaction
from tests.router.conftest import RunningGateway, uid

WRITERS = 100
READ_BOUND_S = 10.0  # generous: before the fix a read waited 25-29 s behind 20 writers
ENVELOPE_KEYS = {"message", "type", "param", "code"}


@dataclass
class Burst:
    answers: list[httpx.Response | BaseException]  # a client error (a timeout) kept as such
    reads: list[tuple[httpx.Response | httpx.HTTPError, float]]  # each with how long it took

    @property
    def writes(self) -> list[httpx.Response]:
        return [a for a in self.answers if isinstance(a, httpx.Response)]

    def statuses(self) -> Counter[int | str]:
        """``{200: 1, 409: 99}``; an answer that never came counts by its exception's name."""
        return Counter(
            a.status_code if isinstance(a, httpx.Response) else type(a).__name__
            for a in self.answers
        )


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(
    request: pytest.FixtureRequest, gateway_factory: Callable[..., RunningGateway]
) -> RunningGateway:
    return gateway_factory(backend=request.param)


def admin_client(gw: RunningGateway) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=gw.url,
        headers={"Authorization": f"Bearer {gw.admin_key}"},
        timeout=60.0,
        limits=httpx.Limits(max_connections=WRITERS + 10, max_keepalive_connections=0),
    )


def burst(
    gw: RunningGateway,
    write: Callable[[httpx.AsyncClient, int], Awaitable[Any]],
    *,
    writers: int = WRITERS,
) -> Burst:
    """``writers`` writes at once; meanwhile ``GET /admin/version`` again and again until the
    last writer has its answer (at least once)."""

    async def run() -> Burst:
        async with admin_client(gw) as client:
            answers = asyncio.gather(
                *(write(client, i) for i in range(writers)), return_exceptions=True
            )
            reads: list[tuple[httpx.Response | httpx.HTTPError, float]] = []
            while not answers.done() or not reads:
                started = time.monotonic()
                try:
                    read: httpx.Response | httpx.HTTPError = await client.get("/admin/version")
                except httpx.HTTPError as error:  # kept: the writers' statuses are told first
                    read = error
                reads.append((read, time.monotonic() - started))
            return Burst(answers=list(await answers), reads=reads)

    return asyncio.run(run())


def assert_error(response: httpx.Response, status: int, *, type: str, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ENVELOPE_KEYS, body
    assert (body["error"]["type"], body["error"]["code"]) == (type, code), body
    assert body["error"]["message"]


def assert_reads_answered(result: Burst) -> None:
    for response, took in result.reads:
        assert isinstance(response, httpx.Response), (
            f"a read failed after {took:.1f} s: {response!r}"
        )
        assert response.status_code == 200, response.text
        assert took < READ_BOUND_S, f"a read took {took:.1f} s while writers waited"


def assert_one_winner(result: Burst, *, success: int) -> list[httpx.Response]:
    """Exactly one ``success``, every other answer a 409 ``version_conflict``; the losers."""
    assert result.statuses() == {success: 1, 409: WRITERS - 1}, result.statuses()
    losers = [r for r in result.writes if r.status_code == 409]
    for response in losers:
        assert_error(response, 409, type="invalid_request_error", code="version_conflict")
    return losers


def test_parallel_patches_of_one_version_one_wins_the_rest_conflict(gw: RunningGateway) -> None:
    path = "/admin/models/acme/alpha"
    with gw.http(gw.admin_key) as client:
        version = client.get(path).json()["version"]

    async def patch(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.patch(path, json={"version": version, "family": f"family-{i}"})

    result = burst(gw, patch)

    assert_one_winner(result, success=200)
    assert_reads_answered(result)
    winner = next(r.json() for r in result.writes if r.status_code == 200)
    with gw.http(gw.admin_key) as client:
        stored = client.get(path).json()
        changes = client.get("/admin/changes", params={"since_version": version}).json()["data"]
    assert (stored["family"], stored["version"]) == (winner["family"], winner["version"])
    assert [(c["entity_id"], c["version"]) for c in changes] == [("acme/alpha", stored["version"])]


def test_parallel_creates_of_one_id_one_wins(gw: RunningGateway) -> None:
    tenant = uid("contested")

    async def create(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post("/admin/tenants", json={"id": tenant, "name": f"n{i}"})

    result = burst(gw, create)

    assert all(
        "already exists" in r.json()["error"]["message"]
        for r in assert_one_winner(result, success=201)
    )
    assert_reads_answered(result)


def test_parallel_key_creations_of_one_id_one_wins(gw: RunningGateway) -> None:
    key_id = uid("key")

    async def create(client: httpx.AsyncClient, _i: int) -> httpx.Response:
        body = {"id": key_id, "tenant": "apps", "scopes": ["compliance"]}
        return await client.post("/admin/api-keys", json=body)

    result = burst(gw, create)

    assert_one_winner(result, success=201)
    assert_reads_answered(result)


def test_parallel_deletes_of_one_version_one_wins(gw: RunningGateway) -> None:
    tenant = uid("doomed")
    with gw.http(gw.admin_key) as client:
        version = client.post("/admin/tenants", json={"id": tenant}).json()["version"]

    async def delete(client: httpx.AsyncClient, _i: int) -> httpx.Response:
        return await client.delete(f"/admin/tenants/{tenant}", params={"version": version})

    result = burst(gw, delete)

    # after the winner, the tenant is gone: a loser that looks after the delete gets a 404
    statuses = result.statuses()
    assert statuses[200] == 1 and statuses[409] + statuses[404] == WRITERS - 1, statuses
    for response in result.writes:
        if response.status_code == 404:
            assert_error(response, 404, type="invalid_request_error", code="not_found")
        elif response.status_code == 409:
            assert_error(response, 409, type="invalid_request_error", code="version_conflict")
    assert_reads_answered(result)


def test_parallel_policy_saves_all_land_in_turn(gw: RunningGateway) -> None:
    """Writers that do not conflict all succeed, one after another, each its own version."""
    source = "rules:\n  - id: allow-nothing-extra\n    deny: {deployment: ['*-nothing']}\n"

    async def save(client: httpx.AsyncClient, i: int) -> httpx.Response:
        body = {"name": f"burst-{i}", "format": "yaml", "source": source}
        return await client.post("/admin/policies", json=body)

    result = burst(gw, save)

    assert result.statuses() == {201: WRITERS}, result.statuses()
    versions = sorted(r.json()["version"] for r in result.writes)
    assert versions == list(range(versions[0], versions[0] + WRITERS))
    assert_reads_answered(result)


def assert_busy(response: httpx.Response) -> None:
    assert_error(response, 503, type="api_error", code="registry_busy")
    assert response.headers["retry-after"] == "1"


def test_writers_blocked_by_another_process_answer_503_and_reads_go_on(
    gw: RunningGateway, gateway_factory: Callable[..., RunningGateway]
) -> None:
    """Another replica (here: the test's own engine on the same database) holds the registry
    write lock: the gateway's writers give up after ``registry_lock_timeout_s`` with 503
    ``registry_busy`` (not 500, not an endless wait), and reads answer meanwhile."""
    busy = gateway_factory(
        backend=gw.engine.dialect.name,
        registry_lock_timeout_s=0.3,
    )
    other_replica = make_engine(busy.app.gateway.settings.database_url)
    path = "/admin/tenants/apps"
    try:
        with busy.http(busy.admin_key) as client:
            version = client.get(path).json()["version"]
            body = {"version": version, "name": "mine"}
            with write_transaction(engine=other_replica, actor="other-replica") as writer:
                writer.update("tenant", "apps", {"name": "held"}, expected_version=None)
                result = burst(busy, lambda c, _i: c.patch(path, json=body), writers=5)
                assert client.get("/admin/version").status_code == 200
            assert result.statuses() == {503: 5}, result.statuses()
            for response in result.writes:
                assert_busy(response)
            assert_reads_answered(result)
            # the lock is free again: the next writer gets its stale-version answer at once
            assert_error(
                client.patch(path, json={"version": version, "name": "again"}),
                409,
                type="invalid_request_error",
                code="version_conflict",
            )
    finally:
        other_replica.dispose()


def test_no_free_database_connection_answers_503(
    gw: RunningGateway, gateway_factory: Callable[..., RunningGateway]
) -> None:
    """Every pooled connection taken for longer than ``database_pool_timeout_s``: reads and
    writes answer 503 ``registry_busy``; once one is free again, they are served."""
    small = gateway_factory(
        backend=gw.engine.dialect.name,
        seeded=False,  # the seed waits for the poller, which is off here
        database_pool_size=2,  # setup on PostgreSQL: the setup lock's session and the write
        database_max_overflow=0,
        database_pool_timeout_s=0.2,
        snapshot_poll_s=3600.0,  # the poller must not take a connection during the test
    )
    with small.http(small.admin_key) as client:
        with small.engine.connect(), small.engine.connect():  # the whole pool
            assert_busy(client.get("/admin/version"))
            assert_busy(client.post("/admin/tenants", json={"id": uid("t")}))
        assert client.get("/admin/version").status_code == 200
        assert client.post("/admin/tenants", json={"id": uid("t")}).status_code == 201
