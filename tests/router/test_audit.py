"""The audit log of routing decisions.

Black-box (SQLite and PostgreSQL): every routed request — success, stream, denial, error —
leaves one RoutingDecision whose request id is the response's ``x-request-id``, with the
candidates' verdicts and rule ids, attempts, versions, status, latency and token usage, and never
the prompt or completion text. Unit: ``AuditWriter`` batches, keeps rows across a failed write
and flushes on stop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import openai
import pytest

from registry.db import session_scope
from registry.service import list_decisions
from router.asgi import create_app
from router.audit import AuditWriter
from router.settings import Settings
from tests.fakes import FakeUpstream
from tests.router.conftest import RunningGateway, deployment, row_json
from tests.servers import serve_app

SECRET_PROMPT = "the launch code is swordfish-7731"
REPLY = "Confidential answer: zebra-omega-42."
MESSAGES = [{"role": "user", "content": SECRET_PROMPT}]


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream(reply=REPLY) as upstream:
        yield upstream


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(
    request: pytest.FixtureRequest,
    gateway_factory: Callable[..., RunningGateway],
    up: FakeUpstream,
) -> RunningGateway:
    gw = gateway_factory(backend=request.param)
    with gw.write() as w:
        w.create("deployment", deployment("audit-denied", up.base_url))
        w.create("deployment", deployment("audit-us", up.base_url))
        w.create("route", {"name": "audited", "candidates": ["audit-denied", "audit-us"]})
        w.create("route", {"name": "all-denied", "candidates": ["audit-denied"]})
    return gw


@pytest.fixture(autouse=True)
def _fresh_upstream(up: FakeUpstream) -> None:
    up.reset()


def assert_no_content(row: dict[str, Any]) -> None:
    text = row_json(row)
    assert SECRET_PROMPT not in text and "swordfish" not in text
    assert REPLY not in text and "zebra-omega" not in text


def test_success_row(gw: RunningGateway) -> None:
    raw = gw.openai().chat.completions.with_raw_response.create(model="audited", messages=MESSAGES)
    assert raw.parse().choices[0].message.content == REPLY
    row = gw.decision(raw.headers["x-request-id"])
    assert row["tenant_id"] == "apps" and row["key_id"] == "apps-key"
    assert (row["requested_model"], row["route"], row["action"]) == ("audited", "audited", "infer")
    assert row["candidates"] == [
        {
            "deployment": "audit-denied",
            "allowed": False,
            "rule_ids": ["test-deny-denied-deployments"],
            "reasons": row["candidates"][0]["reasons"],
        },
        {
            "deployment": "audit-us",
            "allowed": True,
            "rule_ids": ["baseline-approved"],
            "reasons": row["candidates"][1]["reasons"],
        },
    ]
    assert all(c["reasons"] for c in row["candidates"])
    assert row["chosen_deployment"] == "audit-us"
    assert [(a["deployment"], a["outcome"]) for a in row["attempts"]] == [("audit-us", "ok")]
    assert (
        row["policy_version"]
        == gw.policy_version
        == int(raw.headers["x-provenance-policy-version"])
    )
    assert row["registry_version"] == gw.served_version()
    assert (row["status"], row["http_status"], row["error_code"]) == ("ok", 200, None)
    assert row["latency_ms"] > 0
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (5, 3, 8)
    assert row["context"]["classification"] == "internal"
    assert_no_content(row)


def test_stream_row_has_usage_when_the_backend_reports_it(gw: RunningGateway) -> None:
    with gw.openai().chat.completions.with_streaming_response.create(
        model="audited", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ) as response:
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 8
    row = gw.decision(request_id)
    assert (row["status"], row["chosen_deployment"]) == ("ok", "audit-us")
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (5, 3, 8)
    assert_no_content(row)


def test_no_usage_reported_means_no_tokens(gw: RunningGateway) -> None:
    with gw.openai().chat.completions.with_streaming_response.create(
        model="audited", messages=MESSAGES, stream=True
    ) as response:
        request_id = response.headers["x-request-id"]
        list(response.parse())
    row = gw.decision(request_id)
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (
        None,
        None,
        None,
    )


def test_denial_row(gw: RunningGateway, up: FakeUpstream) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        gw.openai().chat.completions.create(model="all-denied", messages=MESSAGES)
    row = gw.decision(caught.value.response.headers["x-request-id"])
    assert (row["status"], row["http_status"], row["error_code"]) == (
        "denied",
        403,
        "provenance_policy_denied",
    )
    assert row["candidates"][0]["deployment"] == "audit-denied"
    assert row["candidates"][0]["allowed"] is False
    assert row["candidates"][0]["rule_ids"] == ["test-deny-denied-deployments"]
    assert row["chosen_deployment"] is None and row["attempts"] == []
    assert row["policy_version"] == gw.policy_version
    assert up.calls == 0
    assert_no_content(row)


def test_upstream_error_row(gw: RunningGateway, up: FakeUpstream) -> None:
    up.script(["500"])
    with pytest.raises(openai.InternalServerError) as caught:
        gw.openai().chat.completions.create(model="audited", messages=MESSAGES)
    row = gw.decision(caught.value.response.headers["x-request-id"])
    assert (row["status"], row["http_status"], row["error_code"]) == (
        "error",
        502,
        "upstream_error",
    )
    assert [(a["deployment"], a["outcome"]) for a in row["attempts"]] == [("audit-us", "http_500")]
    assert row["chosen_deployment"] is None
    assert_no_content(row)


def test_unknown_model_row(gw: RunningGateway) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        gw.openai().embeddings.create(model="nobody/nothing", input=SECRET_PROMPT)
    row = gw.decision(caught.value.response.headers["x-request-id"])
    assert (row["status"], row["http_status"], row["error_code"]) == (
        "error",
        404,
        "model_not_found",
    )
    assert (row["requested_model"], row["action"], row["route"]) == (
        "nobody/nothing",
        "embed",
        None,
    )
    assert_no_content(row)


def test_context_can_only_tighten(gw: RunningGateway) -> None:
    client = gw.openai()
    seen = {}
    for label in ("public", "restricted"):
        raw = client.chat.completions.with_raw_response.create(
            model="audited",
            messages=MESSAGES,
            extra_headers={"X-Data-Classification": label, "X-Purpose": "support-bot"},
        )
        seen[label] = gw.decision(raw.headers["x-request-id"])["context"]
    assert seen["public"]["classification"] == "internal"  # the tenant default wins
    assert seen["restricted"]["classification"] == "restricted"
    assert seen["restricted"]["purpose"] == "support-bot"


def test_one_row_per_request_and_admin_api_serves_them(gw: RunningGateway) -> None:
    client = gw.openai(gw.keys["limited"])
    ids = [
        client.chat.completions.with_raw_response.create(
            model="audited", messages=MESSAGES
        ).headers["x-request-id"]
        for _ in range(3)
    ]
    for request_id in ids:
        gw.decision(request_id)
        assert len(gw.decisions_of(request_id)) == 1
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {gw.admin_key}"}) as http:
        response = http.get("/admin/decisions", params={"tenant_id": "limited", "limit": 1000})
    assert response.status_code == 200
    listed = response.json()["data"]
    assert set(ids) <= {d["request_id"] for d in listed}
    assert {d["tenant_id"] for d in listed} == {"limited"}
    assert SECRET_PROMPT not in response.text and REPLY not in response.text


def test_shutdown_flushes_buffered_rows(tmp_path: Any, up: FakeUpstream) -> None:
    """A gateway stopped right after a request still writes its decision (flush on stop)."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    admin_key = "pr-test-admin-flush-on-stop-0123456789"
    settings = Settings(
        database_url=url,
        admin_key=admin_key,
        local_model=False,
        load_catalog=False,
        audit_flush_s=3600,
        snapshot_poll_s=0.2,
        signing_key_dir=tmp_path / "signing",
    )
    app = create_app(settings)
    with serve_app(app, lifespan="on") as base_url:
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {admin_key}"}) as h:
            response = h.post(
                "/v1/chat/completions", json={"model": "nobody/nothing", "messages": MESSAGES}
            )
        assert response.status_code == 404
        request_id = response.headers["x-request-id"]
        with session_scope(app.gateway.engine) as session:
            assert list_decisions(session=session) == []  # still buffered
    with session_scope(app.gateway.engine) as session:
        rows = list_decisions(session=session)
    assert [r["request_id"] for r in rows] == [request_id]


# --- AuditWriter (unit) ---------------------------------------------------------------------


class Sink:
    """A write function that records batches and fails while ``failing`` is set."""

    def __init__(self) -> None:
        self.batches: list[list[Row]] = []
        self.failing = False
        self.attempts = 0
        self.lock = threading.Lock()

    def __call__(self, rows: Sequence[Row], closing: bool = False) -> None:
        with self.lock:
            self.attempts += 1
            if self.failing:
                raise OSError("database unavailable")
            if rows:
                self.batches.append(list(rows))

    def rows(self) -> list[Row]:
        return [row for batch in self.batches for row in batch]


Row = dict[str, Any]  # the writer does not look inside what it is given


def rows(*ids: int) -> list[Row]:
    return [{"request_id": f"r{i}", "status": "ok"} for i in ids]


async def wait_async(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


def test_writer_batches_when_batch_max_rows_wait() -> None:
    sink = Sink()

    async def scenario() -> None:
        writer = AuditWriter(sink, flush_s=3600, batch_max=3)
        writer.start()
        for row in rows(1, 2):
            writer.record(row)
        await asyncio.sleep(0.05)
        assert sink.batches == []  # below batch_max and long before flush_s: nothing written
        writer.record(rows(3)[0])
        await wait_async(lambda: len(sink.batches) == 1)
        assert sink.batches == [rows(1, 2, 3)]  # one bulk write
        writer.record(rows(4)[0])
        await writer.stop()

    asyncio.run(scenario())
    assert sink.batches == [rows(1, 2, 3), rows(4)]


def test_writer_flushes_on_its_interval() -> None:
    sink = Sink()

    async def scenario() -> None:
        writer = AuditWriter(sink, flush_s=0.02, batch_max=1000)
        writer.start()
        writer.record(rows(1)[0])
        await wait_async(lambda: sink.rows() == rows(1))
        writer.record(rows(2)[0])
        writer.record(rows(3)[0])
        await wait_async(lambda: sink.rows() == rows(1, 2, 3))
        await writer.stop()

    asyncio.run(scenario())
    assert sink.batches == [rows(1), rows(2, 3)]


def test_failed_write_keeps_rows_for_the_next_flush() -> None:
    sink = Sink()

    async def scenario() -> None:
        writer = AuditWriter(sink, flush_s=3600, batch_max=1000)
        for row in rows(1, 2):
            writer.record(row)
        sink.failing = True
        assert await writer.flush() == 0
        writer.record(rows(3)[0])
        assert await writer.flush() == 0
        assert sink.attempts == 2 and sink.batches == []
        sink.failing = False
        assert await writer.flush() == 3
        assert await writer.flush() == 0  # nothing written twice

    asyncio.run(scenario())
    assert sink.batches == [rows(1, 2, 3)]  # in order, none lost


def test_stop_flushes_what_is_buffered() -> None:
    sink = Sink()

    async def scenario() -> None:
        writer = AuditWriter(sink, flush_s=3600, batch_max=1000)
        writer.start()
        for row in rows(1, 2, 3):
            writer.record(row)
        await writer.stop()

    asyncio.run(scenario())
    assert sink.rows() == rows(1, 2, 3)


def test_stop_without_start_still_flushes() -> None:
    sink = Sink()

    async def scenario() -> None:
        writer = AuditWriter(sink, flush_s=3600, batch_max=1000)
        writer.record(rows(1)[0])
        await writer.stop()

    asyncio.run(scenario())
    assert sink.rows() == rows(1)


def test_background_flush_retries_after_a_failure() -> None:
    sink = Sink()
    sink.failing = True

    async def scenario() -> None:
        writer = AuditWriter(sink, flush_s=0.01, batch_max=1000)
        writer.start()
        writer.record(rows(1)[0])
        await wait_async(lambda: sink.attempts >= 2)  # the writer keeps trying
        sink.failing = False
        await wait_async(lambda: sink.rows() == rows(1))
        await writer.stop()

    asyncio.run(scenario())
    assert sink.rows() == rows(1)


class SlowSink(Sink):
    """A sink whose writes block until released, and that counts writes running at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()
        self.running = 0
        self.most_at_once = 0

    def __call__(self, rows: Sequence[Row], closing: bool = False) -> None:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        self.entered.set()
        try:
            self.release.wait(5)
            super().__call__(rows)
        finally:
            with self.lock:
                self.running -= 1


def test_stop_lets_the_running_flush_finish_and_never_flushes_twice_at_once() -> None:
    """Issue 15: stop() cancelled the writer mid-flush; the cancelled flush went on in its
    thread while stop() started a second one beside it."""
    sink = SlowSink()

    async def scenario() -> None:
        writer = AuditWriter(sink, flush_s=0.01, batch_max=1000)
        writer.start()
        writer.record(rows(1)[0])
        await asyncio.to_thread(sink.entered.wait, 5)  # the background flush is writing r1
        writer.record(rows(2)[0])
        stopping = asyncio.create_task(writer.stop())
        await asyncio.sleep(0.05)  # give a wrong stop() the time to start a second flush
        sink.release.set()
        await stopping

    asyncio.run(scenario())
    assert sink.most_at_once == 1
    assert sink.rows() == rows(1, 2)


def test_a_write_failing_at_stop_is_logged_with_the_count_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = Sink()
    sink.failing = True

    async def scenario() -> None:
        writer = AuditWriter(sink, flush_s=3600, batch_max=1000)
        writer.start()
        for row in rows(1, 2, 3):
            writer.record(row)
        await writer.stop()

    asyncio.run(scenario())
    assert "3 audit records" in caplog.text


def test_the_request_path_imports_no_persistence_code() -> None:
    """Data flows one way: serving and the routing table hand plain records to the writer;
    they import nothing that stores them (issue 15)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    banned = ("registry.service", "registry.reads", "registry.audit_store", "registry.db")
    for module in ("router/openai/serving.py", "router/table.py"):
        tree = ast.parse((root / module).read_text())
        imported = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        } | {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        assert not {name for name in imported if name.startswith((*banned, "sqlalchemy"))}, module


def test_a_journal_line_gives_back_the_record() -> None:
    from registry.audit_record import AuditRecord, Evaluation, decode, encode
    from registry.models import utcnow

    verdict = [{"deployment": "d", "allowed": True, "rule_ids": ["r"], "reasons": ["ok"]}]
    record = AuditRecord(
        "req_1",
        utcnow(),
        "ok",
        tenant_id="t\x00",
        context={"classification": "internal", "purpose": None, "caller_region": None},
        evaluation=Evaluation.of(verdict),
        attempts=(("d", "ok", 1.25),),
        latency_ms=2.5,
    )
    again = decode(encode(record))
    assert again._replace(evaluation=None) == record._replace(evaluation=None)
    assert again.evaluation is not None and record.evaluation is not None
    assert again.evaluation.id == record.evaluation.id
