"""No poison record (issue 15): a request whose record a database cannot store as is (NUL in
the model name, text far too long) is stored escaped or cut and flagged ``sanitized``, in the
same flush as every other record: never dropped, never holding the others back. Through the
real gateway on SQLite and PostgreSQL; the database-refusal fallback on PostgreSQL directly."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
from sqlalchemy import Engine

from registry.audit_record import AuditRecord, ChainHead, row_values, sanitize
from registry.audit_store import _store, iter_rows
from registry.models import utcnow
from tests.fakes import FakeUpstream
from tests.router.conftest import RunningGateway, deployment

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(
    request: pytest.FixtureRequest,
    gateway_factory: Callable[..., RunningGateway],
    up: FakeUpstream,
) -> RunningGateway:
    gw = gateway_factory(backend=request.param)
    with gw.write() as w:
        w.create("deployment", deployment("poison-us", up.base_url))
        w.create("route", {"name": "poison", "candidates": ["poison-us"]})
    return gw


def post(http: httpx.Client, model: str) -> httpx.Response:
    return http.post("/v1/chat/completions", json={"model": model, "messages": MESSAGES})


def test_unstorable_values_are_escaped_flagged_and_delay_nobody(gw: RunningGateway) -> None:
    with gw.http() as http:
        nul = post(http, "evil\x00model")
        huge = post(http, "m" * 100_000)
        fine = [post(http, "poison") for _ in range(3)]
    assert (nul.status_code, huge.status_code) == (404, 404)
    assert [r.status_code for r in fine] == [200, 200, 200]
    # every record of the same flush is there, the good ones unflagged
    rows = {r["request_id"]: r for r in (gw.decision(f.headers["x-request-id"]) for f in fine)}
    assert not any(r["sanitized"] for r in rows.values())
    stored_nul = gw.decision(nul.headers["x-request-id"])
    assert stored_nul["requested_model"] == "evil\\u0000model" and stored_nul["sanitized"]
    stored_huge = gw.decision(huge.headers["x-request-id"])
    assert stored_huge["sanitized"] and stored_huge["requested_model"].startswith("m" * 512)
    assert len(stored_huge["requested_model"]) < 600


def test_a_row_the_database_refuses_is_stored_in_escaped_form_in_the_same_write(
    engine: Engine,
) -> None:
    """Bypass the proactive escaping: PostgreSQL refuses a NUL; the store finds that row
    alone, stores it escaped and flagged, and stores the others as they are, in one call."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite stores NUL characters; nothing to refuse")
    records = [
        AuditRecord(request_id=f"r{i}", created_at=utcnow(), status="ok", requested_model=m)
        for i, m in enumerate(["good", "bad\x00", "good"])
    ]
    values = [row_values(r) for r in records]  # not sanitized: the database must refuse one
    stored = _store(engine, ChainHead(uuid.uuid4().hex), values, {}, None, None)
    assert stored.sanitized == 1 and stored.head.seq == 3
    rows = list(iter_rows(engine))
    assert [(r["requested_model"], r["sanitized"]) for r in rows] == [
        ("good", False),
        ("bad\\x00", True),
        ("good", False),
    ]
    assert sanitize(row_values(records[1]))["requested_model"] == "bad\\u0000"
