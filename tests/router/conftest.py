"""Gateway fixtures: the real app (``router.asgi.create_app``) under real uvicorn on port 0.

    gw = gateway_factory()                       # module-scoped; stopped at the module's end
    with gw.write() as w:                        # one registry write transaction; on exit,
        w.create("deployment", deployment(...))  # waits until the gateway serves that version
    client = gw.openai(gw.keys["apps"])          # the official SDK, max_retries=0
    row = gw.decision(request_id)                # the audit row, once the writer flushed it

Every gateway gets the same seed (``seed``): two organizations (US, CN), two licenses, two
approved models, tenants ``apps`` and ``limited`` with inference keys, a ``compliance`` key
without the ``inference`` scope (``no-inference``, tenant ``apps``), an organisation-wide
``compliance_org`` key (``compliance-org``, tenant ``apps``), and the test policy
``TEST_POLICY``:

- ``test-deny-denied-deployments``: any deployment whose id ends in ``-denied`` is denied to
  everyone (so a test can make a healthy backend forbidden just by its name);
- ``test-limited-no-dragon``: tenant ``limited`` may not use models ``dragon/*``.

Registry data is written with ``registry.service.write_transaction`` (the same path as the admin
API and ``apply``) and the fixture waits for the gateway's poller to load that version: a wait
on a condition, never a fixed sleep. Tests name their deployments and routes uniquely (``uid``)
so a module-scoped gateway can be shared without one test's circuit breaker or data touching
another's.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI
from sqlalchemy import Engine

from registry.db import session_scope
from registry.service import NotFoundError, Writer, list_decisions, read_one, write_transaction
from router.asgi import GatewayApp, create_app
from router.settings import Settings
from tests.fakes import FakeUpstream, closed_port_url, fake_upstream
from tests.servers import serve_app

__all__ = [
    "REPORTED",
    "TEST_POLICY",
    "RunningGateway",
    "anyio_backend",
    "assert_envelope",
    "closed_port_url",
    "deployment",
    "fake_upstream",
    "gateway_factory",
    "row_json",
    "uid",
    "upstreams",
    "wait_for",
]

PURPOSES = ("support-bot", "evaluation")  # what the seeded tenants' requests may declare
REPORTED = {
    "source": "https://example.test/facts",
    "retrieved_at": "2026-01-01",
    "confidence": "reported",
}
TEST_POLICY = """\
rules:
  - id: test-deny-denied-deployments
    description: Deployments named *-denied are off limits to everyone.
    deny: {deployment: ["*-denied"]}
  - id: test-limited-no-dragon
    description: Tenant limited may not use models developed by dragon.
    deny: {tenant: [limited], model: ["dragon/*"]}
"""
ENVELOPE_KEYS = {"message", "type", "param", "code"}
SERVER_START_TIMEOUT_S = 60.0


def wait_for(condition: Callable[[], Any], *, timeout_s: float = 10.0, what: str = "") -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what or condition}")
        time.sleep(0.01)


def uid(prefix: str) -> str:
    """A unique, slug-safe name for a test's deployment or route."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def deployment(
    dep_id: str, url: str, *, model: str = "acme/alpha", **fields: Any
) -> dict[str, Any]:
    """A deployment of ``model`` served at ``url`` (OpenAI-compatible), with known facts."""
    return {
        "id": dep_id,
        "model": model,
        "adapter": "openai",
        "endpoint_url": url,
        "hosting": "private_cloud",
        "location_country": "US",
        "location_region": "us-east-1",
        "hardware_vendor": "nvidia",
        "accelerator": "H100",
        "accelerator_count": 1,
        "timeout_s": 5.0,
        "claim": REPORTED,
        **fields,
    }


def assert_envelope(
    response: httpx.Response, status: int, *, type: str, code: str | None, param: Any = None
) -> dict[str, Any]:
    """The body is exactly the OpenAI error envelope with these values; returns the error."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == ENVELOPE_KEYS, error
    assert isinstance(error["message"], str) and error["message"]
    assert (error["type"], error["code"], error["param"]) == (type, code, param), error
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"].startswith("req_")
    return dict(error)


@dataclass
class RunningGateway:
    app: GatewayApp
    url: str  # http://127.0.0.1:PORT
    admin_key: str
    keys: dict[str, str] = field(default_factory=dict)  # name -> raw key
    policy_version: int = 0
    clients: dict[str, OpenAI] = field(default_factory=dict)

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    @property
    def engine(self) -> Engine:
        return self.app.gateway.engine

    def served_version(self) -> int:
        return self.app.gateway.table.registry_version

    @contextmanager
    def write(self, actor: str = "router-tests") -> Iterator[Writer]:
        """One registry transaction; on exit, wait until the gateway serves what it wrote."""
        with write_transaction(engine=self.engine, actor=actor) as writer:
            yield writer
        if writer.version is not None:
            version = writer.version
            wait_for(lambda: self.served_version() >= version, what=f"registry v{version}")

    def openai(self, key: str | None = None) -> OpenAI:
        """The SDK client for ``key`` (default: tenant apps), one per key, closed at the end."""
        key = key or self.keys["apps"]
        client = self.clients.get(key)
        if client is None:
            client = OpenAI(base_url=self.v1, api_key=key, max_retries=0, timeout=60.0)
            self.clients[key] = client
        return client

    def close(self) -> None:
        for client in self.clients.values():
            client.close()

    def async_openai(self, key: str | None = None, **options: Any) -> AsyncOpenAI:
        options.setdefault("timeout", 60.0)
        return AsyncOpenAI(
            base_url=self.v1, api_key=key or self.keys["apps"], max_retries=0, **options
        )

    def http(self, key: str | None = None) -> httpx.Client:
        """A raw client on the gateway root, authenticated as ``key`` (default: apps)."""
        headers = {"Authorization": f"Bearer {key or self.keys['apps']}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0)

    def decision(self, request_id: str, *, timeout_s: float = 10.0) -> dict[str, Any]:
        """The audit row of ``request_id``, once the audit writer has flushed it."""

        def find() -> dict[str, Any] | None:
            with session_scope(self.engine) as session:
                rows = list_decisions(session=session, limit=10_000)
            return next((r for r in rows if r["request_id"] == request_id), None)

        row: dict[str, Any] = wait_for(find, timeout_s=timeout_s, what=f"audit of {request_id}")
        return row

    def decisions_of(self, request_id: str) -> list[dict[str, Any]]:
        with session_scope(self.engine) as session:
            rows = list_decisions(session=session, limit=10_000)
        return [r for r in rows if r["request_id"] == request_id]


def seed(gw: RunningGateway) -> None:
    """The data every gateway starts with (see the module docstring)."""
    with gw.write(actor="seed") as w:
        w.create(
            "organization",
            {"id": "acme", "name": "Acme Corp", "hq_country": "US", "claim": REPORTED},
        )
        w.create(
            "organization",
            {"id": "dragon", "name": "Dragon AI", "hq_country": "CN", "claim": REPORTED},
        )
        for spdx, name in (("Apache-2.0", "Apache License 2.0"), ("MIT", "MIT License")):
            if _exists(gw, "license", spdx):  # the bundled local model brings Apache-2.0
                continue
            w.create(
                "license",
                {
                    "id": spdx,
                    "name": name,
                    "osi_approved": True,
                    "open_weights": True,
                    "commercial_use": "yes",
                    "claim": REPORTED,
                },
            )
        w.create(
            "model",
            {
                "id": "acme/alpha",
                "name": "Alpha",
                "developer": "acme",
                "publisher": "acme",
                "license": "Apache-2.0",
                "review_status": "approved",
                "claim": REPORTED,
            },
        )
        w.create(
            "model",
            {
                "id": "dragon/beta",
                "name": "Beta",
                "developer": "dragon",
                "publisher": "dragon",
                "license": "MIT",
                "review_status": "approved",
                "claim": REPORTED,
            },
        )
        for tenant in ("apps", "limited"):
            w.create("tenant", {"id": tenant, "name": tenant.title(), "purposes": list(PURPOSES)})
            _, gw.keys[tenant] = w.create_api_key(
                id=f"{tenant}-key", tenant=tenant, scopes=["inference"]
            )
        _, gw.keys["no-inference"] = w.create_api_key(
            id="compliance-only", tenant="apps", scopes=["compliance"]
        )
        _, gw.keys["compliance-org"] = w.create_api_key(
            id="compliance-org", tenant="apps", scopes=["compliance_org"]
        )
        policy = w.save_policy(
            name="router-tests", format="yaml", source=TEST_POLICY, activate=True
        )
        gw.policy_version = int(policy["version"])


def _exists(gw: RunningGateway, kind: str, id: str) -> bool:
    with session_scope(gw.engine) as session:
        try:
            read_one(session=session, kind=kind, id=id)
        except NotFoundError:
            return False
    return True


def _database_url(backend: str, tmp: Path, request: pytest.FixtureRequest, stack: ExitStack) -> str:
    """The gateway's database; on PostgreSQL a fresh schema, dropped by ``stack`` once the
    gateway started after this call has stopped (its poller must not see the schema go)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp / 'registry.db'}"
    from tests.conftest import postgres_url

    admin: Engine = request.getfixturevalue("postgres_admin")
    schema = f"router_{uuid.uuid4().hex[:16]}"
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    stack.callback(_drop_schema, admin, schema)
    return f"{postgres_url()}?options=-csearch_path%3D{schema}"


def _drop_schema(admin: Engine, schema: str) -> None:
    with admin.begin() as connection:
        connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="module")
def gateway_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., RunningGateway]]:
    """Start gateways (real uvicorn, lifespan on) for this module; all stop at its end.

    ``gateway_factory(backend="sqlite"|"postgresql", **settings)``: settings override the test
    defaults (no catalog, no local model, fast audit flush and snapshot poll)."""
    with ExitStack() as stack:

        def start(
            *, backend: str = "sqlite", seeded: bool = True, **overrides: Any
        ) -> RunningGateway:
            tmp = tmp_path_factory.mktemp("gateway")
            admin_key = f"pr-test-admin-{uuid.uuid4().hex}"
            values: dict[str, Any] = {
                "database_url": _database_url(backend, tmp, request, stack),
                "admin_key": admin_key,
                "local_model": False,
                "load_catalog": False,
                "audit_flush_s": 0.05,
                "snapshot_poll_s": 0.2,
                "breaker_failures": 3,
                "breaker_cooldown_s": 1.0,
                "request_deadline_s": 20.0,
                "signing_key_dir": tmp / "signing",  # never the user's data dir
                "audit_journal_dir": tmp / "audit-journal",
                **overrides,
            }
            settings = Settings(**values)
            app = create_app(settings)
            url = stack.enter_context(serve_app(app, lifespan="on", settings=settings))
            gw = RunningGateway(app=app, url=url.rstrip("/"), admin_key=admin_key)
            stack.callback(gw.close)
            gw.keys["admin"] = admin_key
            if seeded:
                seed(gw)
            return gw

        yield start


def row_json(row: dict[str, Any]) -> str:
    """An audit row as the JSON an export would hold (to search it for content)."""
    return json.dumps(row, default=str)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def upstreams() -> Iterator[Callable[..., FakeUpstream]]:
    """A factory of fresh FakeUpstreams for one test, all stopped after it."""
    with ExitStack() as stack:
        yield lambda **options: stack.enter_context(FakeUpstream(**options))
