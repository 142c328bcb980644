"""API key lifecycle through the real server and the official SDK (issue 22), on SQLite and
PostgreSQL: expiry (checked against the clock, without a snapshot reload), rotation with a
grace period, revocation (at once, on every replica), per-key allow-lists (403 before routing,
narrowing the tenant's policy, never widening it) and the batched last-used time.

Times are short (a few seconds) and every wait is on a condition with a deadline."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import openai
import pytest

from registry.db import session_scope
from registry.service import read_one
from router.asgi import create_app
from router.settings import Settings
from tests.conftest import Database
from tests.fakes import FakeUpstream
from tests.router.conftest import RunningGateway, assert_envelope, deployment, wait_for
from tests.servers import serve_app

PROMPT: list[Any] = [{"role": "user", "content": "hi"}]
FLUSH_S = 0.2  # the test gateways' key_last_used_flush_s
SIGNAL_BOUND_S = 2.0  # a revocation reaches another replica by its change signal within this


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
    gw = gateway_factory(backend=request.param, key_last_used_flush_s=FLUSH_S)
    with gw.write() as w:
        w.create("deployment", deployment("alpha-us", up.base_url))
        w.create("deployment", deployment("beta-cn", up.base_url, model="dragon/beta"))
        w.create("route", {"name": "chat", "candidates": ["alpha-us"]})
        w.create("route", {"name": "mixed", "candidates": ["beta-cn", "alpha-us"]})
        w.create("route", {"name": "beta-route", "candidates": ["beta-cn"]})
    return gw


def new_key(gw: RunningGateway, tenant: str = "apps", **fields: Any) -> tuple[str, str]:
    """A fresh key (id, raw key) through the admin API."""
    key_id = f"k-{uuid.uuid4().hex[:8]}"
    with gw.http(gw.admin_key) as admin:
        response = admin.post(
            "/admin/api-keys",
            json={"id": key_id, "tenant": tenant, "scopes": ["inference"], **fields},
        )
    assert response.status_code == 201, response.text
    body = response.json()
    assert not {"key_hash", "previous_key_hash", "raw_key"} & set(body)
    wait_for(lambda: gw.served_version() >= body["version"], what="the key in the snapshot")
    return key_id, str(body["key"])


def chat(gw: RunningGateway, key: str, model: str = "chat") -> Any:
    return gw.openai(key).chat.completions.with_raw_response.create(model=model, messages=PROMPT)


def refused(gw: RunningGateway, key: str) -> openai.AuthenticationError | None:
    try:
        chat(gw, key)
    except openai.AuthenticationError as error:
        return error
    return None


def assert_invalid_key(error: openai.AuthenticationError, words: str) -> None:
    assert error.code == "invalid_api_key" and words in error.message
    assert_envelope(error.response, 401, type="invalid_request_error", code="invalid_api_key")


# --- expiry -------------------------------------------------------------------------------------


def test_a_key_stops_at_its_expiry_without_a_registry_change(gw: RunningGateway) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=3)
    _, key = new_key(gw, expires_at=expires.isoformat())
    served = gw.served_version()
    assert chat(gw, key).status_code == 200
    error = wait_for(lambda: refused(gw, key), timeout_s=15, what="the key to expire")
    assert time.time() >= expires.timestamp()
    assert_invalid_key(error, "expired")
    assert gw.served_version() == served  # the clock decided, not a reload


def test_an_expired_admin_key_is_refused_by_the_admin_api(gw: RunningGateway) -> None:
    with gw.http(gw.admin_key) as admin:
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        body = {"id": f"k-{uuid.uuid4().hex[:8]}", "tenant": "apps", "scopes": ["admin"]}
        created = admin.post("/admin/api-keys", json={**body, "expires_at": past}).json()
    with gw.http(created["key"]) as expired:
        response = expired.get("/admin/tenants")
    assert response.status_code == 401  # the admin API's envelope carries no request id
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
    assert "expired" in error["message"]


# --- rotation -----------------------------------------------------------------------------------


def test_a_rotated_key_works_during_the_grace_period_and_not_after(gw: RunningGateway) -> None:
    key_id, old = new_key(gw)
    with gw.http(gw.admin_key) as admin:
        response = admin.post(f"/admin/api-keys/{key_id}/rotate", json={"grace_s": 3})
    assert response.status_code == 200, response.text
    rotated = response.json()
    new, until = rotated["key"], datetime.fromisoformat(rotated["previous_valid_until"])
    assert rotated["id"] == key_id and new != old and "key_hash" not in rotated
    wait_for(lambda: gw.served_version() >= rotated["version"], what="the rotation")
    during = chat(gw, old)
    assert time.time() < until.timestamp(), "too slow to observe the grace period"
    after_new = chat(gw, new)
    for response in (during, after_new):  # one key: its id (limits, budgets, audit) stays
        assert gw.decision(response.headers["x-request-id"])["key_id"] == key_id
    error = wait_for(lambda: refused(gw, old), timeout_s=15, what="the grace period to end")
    assert time.time() >= until.timestamp()
    assert_invalid_key(error, "rotation")
    assert chat(gw, new).status_code == 200


def test_rotation_of_an_unknown_key_is_404(gw: RunningGateway) -> None:
    with gw.http(gw.admin_key) as admin:
        response = admin.post("/admin/api-keys/no-such-key/rotate", json={"grace_s": 0})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


# --- revocation ---------------------------------------------------------------------------------


def test_a_revoked_key_fails_at_once(gw: RunningGateway) -> None:
    key_id, key = new_key(gw)
    assert chat(gw, key).status_code == 200
    with gw.http(gw.admin_key) as admin:
        version = admin.get(f"/admin/api-keys/{key_id}").json()["version"]
        response = admin.patch(
            f"/admin/api-keys/{key_id}", json={"version": version, "enabled": False}
        )
    assert response.status_code == 200 and response.json()["enabled"] is False
    error = refused(gw, key)  # no wait: the write reloaded this gateway before answering
    assert error is not None
    assert_invalid_key(error, "Incorrect API key")


def test_a_revoked_key_fails_promptly_on_another_replica(
    gw: RunningGateway, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Replica B shares A's database, with a version poll too slow to help: only the change
    signal (PostgreSQL NOTIFY, SQLite data_version) can bring the revocation in time."""
    tmp = tmp_path_factory.mktemp("replica-b")
    settings = gw.app.gateway.settings.model_copy(
        update={
            "snapshot_poll_s": 60.0,
            "signing_key_dir": tmp / "signing",
            "audit_journal_dir": tmp / "journal",
        }
    )
    key_id, key = new_key(gw)
    app_b = create_app(settings)
    with serve_app(app_b, lifespan="on", settings=settings) as url_b:
        b = openai.OpenAI(base_url=f"{url_b}/v1", api_key=key, max_retries=0, timeout=30)
        try:
            assert b.chat.completions.create(model="chat", messages=PROMPT).choices
            with gw.http(gw.admin_key) as admin:
                version = admin.get(f"/admin/api-keys/{key_id}").json()["version"]
                patch = {"version": version, "enabled": False}
                assert admin.patch(f"/admin/api-keys/{key_id}", json=patch).status_code == 200
            revoked_at = time.monotonic()

            def b_refuses() -> bool:
                try:
                    b.chat.completions.create(model="chat", messages=PROMPT)
                except openai.AuthenticationError:
                    return True
                return False

            wait_for(b_refuses, timeout_s=SIGNAL_BOUND_S, what="replica B to refuse the key")
            assert time.monotonic() - revoked_at < SIGNAL_BOUND_S
        finally:
            b.close()


# --- allow-lists --------------------------------------------------------------------------------


def not_allowed(call: Callable[[], Any]) -> openai.PermissionDeniedError:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        call()
    error = caught.value
    assert_envelope(
        error.response,
        403,
        type="permission_error",
        code="model_not_allowed_for_key",
        param="model",
    )
    return error


def test_a_key_limited_to_routes(gw: RunningGateway, up: FakeUpstream) -> None:
    _, key = new_key(gw, allowed_routes=["chat"])
    assert chat(gw, key).headers["x-provenance-deployment"] == "alpha-us"
    calls = up.calls
    for model in ("mixed", "acme/alpha", "no-such-model"):  # a route, a model id, unknown
        error = not_allowed(lambda model=model: chat(gw, key, model))
        assert "routes chat" in error.message
    assert up.calls == calls  # refused before routing: no backend was called
    assert [m.id for m in gw.openai(key).models.list()] == ["chat"]


def test_a_key_limited_to_models_is_served_only_by_them(gw: RunningGateway) -> None:
    _, key = new_key(gw, allowed_models=["acme/alpha"])
    mixed = chat(gw, key, "mixed")  # beta-cn comes first in the route: skipped for this key
    assert mixed.headers["x-provenance-deployment"] == "alpha-us"
    row = gw.decision(mixed.headers["x-request-id"])
    assert [c["deployment"] for c in row["candidates"]] == ["alpha-us"]
    assert chat(gw, key, "acme/alpha").status_code == 200
    not_allowed(lambda: chat(gw, key, "beta-route"))
    not_allowed(lambda: chat(gw, key, "dragon/beta"))
    listed = {m.id: m for m in gw.openai(key).models.list()}
    assert set(listed) == {"chat", "mixed", "acme/alpha"}
    assert listed["mixed"].model_extra is not None
    assert listed["mixed"].model_extra["deployments"] == ["alpha-us"]
    everything = {m.id for m in gw.openai().models.list()}  # the tenant's own listing
    assert {"beta-route", "dragon/beta"} <= everything


def test_an_allow_list_never_widens_the_tenant_policy(gw: RunningGateway) -> None:
    """Tenant ``limited`` may not use dragon's models (the test policy): a key listing one
    still gets the policy's denial, and does not see it listed."""
    _, key = new_key(gw, tenant="limited", allowed_models=["dragon/beta"])
    with pytest.raises(openai.PermissionDeniedError) as caught:
        chat(gw, key, "dragon/beta")
    assert caught.value.code == "provenance_policy_denied"
    assert [m.id for m in gw.openai(key).models.list()] == []


# --- last use -----------------------------------------------------------------------------------


def test_last_use_is_recorded_in_batches_without_a_reload(gw: RunningGateway) -> None:
    key_id, key = new_key(gw, owner="tests", description="last use")
    served = gw.served_version()
    before = time.time()
    assert chat(gw, key).status_code == 200

    def last_used() -> str | None:
        with session_scope(gw.engine) as session:
            value = read_one(session=session, kind="api_key", id=key_id)["last_used_at"]
        return None if value is None else str(value)

    stored = wait_for(last_used, timeout_s=10, what="the last use to be flushed")
    assert datetime.fromisoformat(stored).timestamp() >= before - 1
    assert gw.served_version() == served  # the write is no registry change


def test_last_use_is_flushed_at_shutdown(database: Database, tmp_path: Any) -> None:
    admin_key = f"pr-test-admin-{uuid.uuid4().hex}"
    settings = Settings(
        database_url=database.url,
        admin_key=admin_key,
        local_model=False,
        load_catalog=False,
        key_last_used_flush_s=3600.0,  # only the shutdown flush can write it
        signing_key_dir=tmp_path / "signing",
        audit_journal_dir=tmp_path / "journal",
    )
    app = create_app(settings)
    with serve_app(app, lifespan="on", settings=settings) as url:
        headers = {"Authorization": f"Bearer {admin_key}"}
        # an admin API request counts as a use too (the /v1 path: the test above)
        assert httpx.get(f"{url}/admin/tenants", headers=headers).status_code == 200
        with session_scope(app.gateway.engine) as session:
            key = read_one(session=session, kind="api_key", id="admin-configured")
        assert key["last_used_at"] is None
    engine = database.engine()
    try:
        with session_scope(engine) as session:
            key = read_one(session=session, kind="api_key", id="admin-configured")
    finally:
        engine.dispose()
    assert key["last_used_at"] is not None
