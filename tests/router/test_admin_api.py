"""The admin API, black box: a real uvicorn server on 127.0.0.1 (port 0) driven with httpx, on
SQLite and PostgreSQL. Every error is checked in the OpenAI envelope."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from registry.service import insert_decisions, write_transaction
from router.admin import build_admin_app
from router.errors import INCORRECT_API_KEY, MISSING_API_KEY
from router.settings import Settings
from tests.servers import serve_app

ADMIN_KEY = "pr-admin-0123456789abcdefghijklmnopqrstuv"
INFERENCE_KEY = "pr-inference-0123456789abcdefghijklmnopq"
COMPLIANCE_KEY = "pr-compliance-0123456789abcdefghijklmnop"
ORG_COMPLIANCE_KEY = "pr-compliance-org-0123456789abcdefghijk"
DISABLED_KEY = "pr-disabled-0123456789abcdefghijklmnopqrs"


@dataclass
class Admin:
    base_url: str
    hook_calls: list[int] = field(default_factory=list)

    def client(self, key: str | None = ADMIN_KEY) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30.0)


def prepare(engine: Engine) -> None:
    with write_transaction(engine=engine, actor="test-setup") as writer:
        writer.create("tenant", {"id": "ops"})
        writer.create_api_key(id="admin", tenant="ops", scopes=["admin"], raw_key=ADMIN_KEY)
        writer.create_api_key(id="app", tenant="ops", scopes=["inference"], raw_key=INFERENCE_KEY)
        writer.create_api_key(
            id="auditor", tenant="ops", scopes=["compliance"], raw_key=COMPLIANCE_KEY
        )
        writer.create_api_key(
            id="org-auditor", tenant="ops", scopes=["compliance_org"], raw_key=ORG_COMPLIANCE_KEY
        )
        writer.create_api_key(id="old", tenant="ops", scopes=["admin"], raw_key=DISABLED_KEY)
        writer.update("api_key", "old", {"enabled": False}, expected_version=None)
        writer.create("organization", {"id": "meta", "name": "Meta", "hq_country": "US"})


@pytest.fixture
def admin(engine: Engine, db_url: str) -> Iterator[Admin]:
    prepare(engine)
    calls: list[int] = []
    settings = Settings(database_url=db_url, _env_file=None)
    app = build_admin_app(engine, settings, on_change=lambda: calls.append(1))
    with serve_app(app) as base_url:
        yield Admin(base_url=base_url, hook_calls=calls)


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


def test_a_key_is_required(admin: Admin) -> None:
    for key in (None, "pr-not-a-registered-key-0000000000000000", DISABLED_KEY):
        with admin.client(key) as client:
            error = error_of(client.get("/admin/organizations"), 401)
        assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
        assert error["message"] == (MISSING_API_KEY if key is None else INCORRECT_API_KEY)
    with admin.client(None) as client:
        for authorization in ("Basic abc", "Bearer"):  # "Bearer ": test_v1_api (raw socket)
            response = client.get("/admin/organizations", headers={"Authorization": authorization})
            assert error_of(response, 401)["message"] == MISSING_API_KEY
            assert response.headers["www-authenticate"] == "Bearer"


def test_scopes_decide_what_a_key_may_do(admin: Admin) -> None:
    with admin.client(INFERENCE_KEY) as client:
        error = error_of(client.get("/admin/organizations"), 403)
        assert (error["type"], error["code"]) == ("permission_error", "insufficient_scope")
        error_of(client.get("/admin/changes"), 403)
    with admin.client(COMPLIANCE_KEY) as client:
        assert client.get("/admin/changes").status_code == 200
        assert client.get("/admin/decisions").status_code == 200
        assert client.get("/admin/version").status_code == 200
        error_of(client.get("/admin/organizations"), 403)
        error_of(client.post("/admin/tenants", json={"id": "sneaky"}), 403)


def test_create_read_patch_delete_with_versions(admin: Admin) -> None:
    with admin.client() as client:
        created = client.post("/admin/models", json={"id": "meta/llama-x", "developer": "meta"})
        assert created.status_code == 201, created.text
        model = created.json()
        assert model["id"] == "meta/llama-x" and model["version"] == 2

        assert client.get("/admin/models/meta/llama-x").json() == model
        listed = client.get("/admin/models").json()
        assert listed["object"] == "list" and [m["id"] for m in listed["data"]] == ["meta/llama-x"]

        patched = client.patch("/admin/models/meta/llama-x", json={"version": 2, "family": "llama"})
        assert patched.status_code == 200, patched.text
        assert (patched.json()["family"], patched.json()["version"]) == ("llama", 3)

        stale = client.patch("/admin/models/meta/llama-x", json={"version": 2, "family": "other"})
        error = error_of(stale, 409)
        assert (error["type"], error["code"]) == ("invalid_request_error", "version_conflict")
        assert client.get("/admin/models/meta/llama-x").json()["family"] == "llama"

        error_of(client.delete("/admin/models/meta/llama-x", params={"version": 2}), 409)
        deleted = client.delete("/admin/models/meta/llama-x", params={"version": 3})
        assert deleted.json() == {"id": "meta/llama-x", "object": "model", "deleted": True}
        error_of(client.get("/admin/models/meta/llama-x"), 404)

        duplicate = client.post("/admin/organizations", json={"id": "meta", "name": "Again"})
        assert "already exists" in error_of(duplicate, 409)["message"]
        referenced = client.post("/admin/routes", json={"name": "r", "candidates": ["ghost"]})
        assert error_of(referenced, 400)["param"] == "candidates"


def test_api_key_is_shown_once(admin: Admin) -> None:
    with admin.client() as client:
        created = client.post(
            "/admin/api-keys", json={"id": "auditor-2", "tenant": "ops", "scopes": ["compliance"]}
        )
        assert created.status_code == 201, created.text
        raw = created.json()["key"]
        assert raw.startswith("pr-") and created.json()["prefix"] == raw[:10]

        read_back = client.get("/admin/api-keys/auditor-2").json()
        listed = client.get("/admin/api-keys").text
        changes = client.get("/admin/changes", params={"entity_id": "auditor-2"}).text
    assert "key" not in read_back and "key_hash" not in read_back
    assert read_back["prefix"] == raw[:10]
    for text in (str(read_back), listed, changes):
        assert raw not in text
    with admin.client(raw) as client:  # the new key works, with its own scope
        assert client.get("/admin/changes").status_code == 200
        error_of(client.get("/admin/api-keys"), 403)


def test_validation_errors_name_the_field(admin: Admin) -> None:
    with admin.client() as client:
        bad_country = client.post(
            "/admin/organizations", json={"id": "x", "name": "X", "hq_country": "XX"}
        )
        error = error_of(bad_country, 400)
        assert (error["type"], error["param"]) == ("invalid_request_error", "hq_country")
        assert error["message"].startswith("hq_country:") and "ISO 3166-1" in error["message"]

        no_version = client.patch("/admin/organizations/meta", json={"name": "M"})
        error = error_of(no_version, 400)
        assert error["param"] == "version" and "version" in error["message"]

        assert error_of(client.get("/admin/changes", params={"limit": 0}), 400)["param"] == "limit"
        bad_json = client.post(
            "/admin/tenants", content=b"{not json", headers={"content-type": "application/json"}
        )
        error_of(bad_json, 400)
        missing_scopes = client.post("/admin/api-keys", json={"id": "k", "tenant": "ops"})
        assert error_of(missing_scopes, 400)["param"] == "scopes"
        bad_license = client.post("/admin/licenses", json={"id": "Not-SPDX", "name": "x"})
        assert error_of(bad_license, 400)["param"] == "id"


def test_unknown_paths_and_methods_use_the_envelope(admin: Admin) -> None:
    with admin.client() as client:
        assert error_of(client.get("/admin/nothing-here"), 404)["code"] == "not_found"
        put = client.put("/admin/models")
        assert error_of(put, 405)["code"] == "method_not_allowed"
        # every method of the path (one route per method), not only the first route's
        assert put.headers["allow"] == "GET, POST"
        trace = client.request("TRACE", "/admin/models/meta/llama")
        assert error_of(trace, 405)["code"] == "method_not_allowed"
        assert trace.headers["allow"] == "DELETE, GET, PATCH"
        assert (
            error_of(client.get("/admin/tenants/ghost"), 404)["message"]
            == "tenant 'ghost' not found"
        )


def test_the_change_hook_runs_after_committed_changes_only(admin: Admin) -> None:
    with admin.client() as client:
        client.post("/admin/tenants", json={"id": "team"})
        assert len(admin.hook_calls) == 1
        client.post("/admin/tenants", json={"id": "team"})  # conflict: nothing committed
        client.patch("/admin/tenants/team", json={"version": 2})  # no change
        assert len(admin.hook_calls) == 1
        client.patch("/admin/tenants/team", json={"version": 2, "name": "Team"})
        assert len(admin.hook_calls) == 2


def test_audit_endpoints(admin: Admin, engine: Engine) -> None:
    insert_decisions(
        engine=engine,
        rows=[
            {"request_id": "r1", "tenant_id": "ops", "status": "ok"},
            {"request_id": "r2", "tenant_id": "other", "status": "denied"},
        ],
    )
    with admin.client(COMPLIANCE_KEY) as client:
        assert client.get("/admin/version").json() == {"version": 1}
        changes = client.get(
            "/admin/changes", params={"kind": "api_key", "actor": "test-setup"}
        ).json()
        assert {c["entity_id"] for c in changes["data"]} == {
            "admin",
            "app",
            "auditor",
            "org-auditor",
            "old",
        }
        assert client.get("/admin/changes", params={"since_version": 1}).json()["data"] == []
        decisions = client.get("/admin/decisions", params={"tenant_id": "ops"}).json()["data"]
        assert [d["request_id"] for d in decisions] == ["r1"]
        own = client.get("/admin/decisions", params={"limit": 5}).json()["data"]
        assert [d["request_id"] for d in own] == ["r1"]  # its own tenant only
        other = client.get("/admin/decisions", params={"tenant_id": "other"})
        assert error_of(other, 403)["code"] == "insufficient_scope"
    with admin.client(ORG_COMPLIANCE_KEY) as client:
        denied = client.get("/admin/decisions", params={"status": "denied", "limit": 5}).json()
        assert [d["request_id"] for d in denied["data"]] == ["r2"]
