"""``GET /admin/export/cyclonedx`` and ``provenance-router export cyclonedx``: the ML-BOM of
the registry or of what one tenant may use, through the real gateway on SQLite and PostgreSQL.

Scopes: admin and ``compliance_org`` keys export any tenant or the whole registry; a
``compliance`` key only its own tenant; an ``inference`` key nothing. No secret is ever in it:
not the secret a deployment's ``secret_ref`` names, not a credential in an endpoint URL, not a
key or key hash."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from registry.db import session_scope
from registry.models import ApiKey
from router.cli import app as cli
from tests.registry.test_bom import assert_valid, properties
from tests.router.conftest import RunningGateway, deployment, uid

SECRET_VALUE = "sk-live-export-test-0123456789abcdef"
URL_PASSWORD = "p4ssw0rd-in-url-xyz"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(
    request: pytest.FixtureRequest, gateway_factory: Callable[..., RunningGateway]
) -> RunningGateway:
    return gateway_factory(backend=request.param)


@pytest.fixture(scope="module")
def names(gw: RunningGateway) -> dict[str, str]:
    """One allowed deployment per seeded model, one policy-denied one and one disabled one."""
    found = {
        "alpha": uid("exp-alpha"),
        "beta": uid("exp-beta"),
        "denied": uid("exp") + "-denied",
        "off": uid("exp-off"),
    }
    secret_env = uid("EXPORT_KEY").upper().replace("-", "_")
    with gw.write() as w:
        url = f"http://user:{URL_PASSWORD}@127.0.0.1:9/v1"
        w.create("deployment", deployment(found["alpha"], url, secret_ref=secret_env))
        w.create("deployment", deployment(found["beta"], url, model="dragon/beta"))
        w.create("deployment", deployment(found["denied"], url))
        w.create("deployment", deployment(found["off"], url, enabled=False))
    found["secret_env"] = secret_env
    return found


def export(gw: RunningGateway, key: str, **params: str) -> Any:
    with gw.http(key) as http:
        return http.get("/admin/export/cyclonedx", params=params)


def assert_envelope(
    response: Any, status: int, *, type: str, code: str, param: str | None = None
) -> None:
    """The OpenAI error envelope with these values (admin answers carry no request id)."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (type, code, param), error


def services(document: dict[str, Any]) -> set[str]:
    return {s["name"] for s in document.get("services", [])}


def models(document: dict[str, Any]) -> set[str]:
    return {c["bom-ref"].removeprefix("model:") for c in document.get("components", [])}


def test_the_whole_registry(gw: RunningGateway, names: dict[str, str]) -> None:
    response = export(gw, gw.admin_key)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/vnd.cyclonedx+json")
    document = assert_valid(response.text)
    assert {names["alpha"], names["beta"], names["denied"], names["off"]} <= services(document)
    assert {"acme/alpha", "dragon/beta"} <= models(document)
    assert properties(document["metadata"]["component"])["provenance-router:scope"] == "registry"


def test_a_tenant_gets_what_the_policy_lets_it_use(
    gw: RunningGateway, names: dict[str, str]
) -> None:
    apps = assert_valid(export(gw, gw.admin_key, tenant="apps").text)
    assert {names["alpha"], names["beta"]} <= services(apps)
    assert names["denied"] not in services(apps)  # test-deny-denied-deployments
    assert names["off"] not in services(apps)  # disabled: baseline-disabled
    limited = assert_valid(export(gw, gw.admin_key, tenant="limited").text)
    assert names["alpha"] in services(limited)
    assert names["beta"] not in services(limited)  # test-limited-no-dragon
    assert "dragon/beta" not in models(limited)
    root = properties(limited["metadata"]["component"])
    assert root["provenance-router:scope"] == "tenant:limited"
    assert root["provenance-router:policy_version"] == str(gw.policy_version)


def test_compliance_keys_are_scoped_to_their_tenant(
    gw: RunningGateway, names: dict[str, str]
) -> None:
    own = export(gw, gw.keys["no-inference"])  # compliance, tenant apps: narrowed to apps
    assert properties(assert_valid(own.text)["metadata"]["component"])[
        "provenance-router:scope"
    ] == ("tenant:apps")
    assert_envelope(
        export(gw, gw.keys["no-inference"], tenant="limited"),
        403,
        type="permission_error",
        code="insufficient_scope",
        param="tenant",
    )
    org_wide = export(gw, gw.keys["compliance-org"], tenant="limited")
    assert names["beta"] not in services(assert_valid(org_wide.text))
    assert_envelope(
        export(gw, gw.keys["apps"]), 403, type="permission_error", code="insufficient_scope"
    )
    assert_envelope(
        export(gw, gw.admin_key, tenant="nobody"),
        404,
        type="invalid_request_error",
        code="tenant_not_found",
        param="tenant",
    )


def test_no_secret_is_exported(
    gw: RunningGateway, names: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(names["secret_env"], SECRET_VALUE)
    text = export(gw, gw.admin_key).text + export(gw, gw.admin_key, tenant="apps").text
    with session_scope(gw.engine) as session:
        hashes = list(session.execute(select(ApiKey.key_hash)).scalars())
    assert hashes
    forbidden = [SECRET_VALUE, URL_PASSWORD, names["secret_env"], *hashes, *gw.keys.values()]
    for secret in forbidden:
        assert secret not in text


def test_the_cli_exports_a_tenant_from_a_registry_file(tmp_path: Path) -> None:
    out = tmp_path / "bom.json"
    registry = str(EXAMPLES / "policy-registry.yaml")
    result = CliRunner().invoke(
        cli, ["export", "cyclonedx", "--registry", registry, "--tenant", "acme", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    document = assert_valid(out.read_text(encoding="utf-8"))
    assert "deepseek-ai/DeepSeek-R1-Distill-Llama-8B" in models(document)
    args = ["export", "cyclonedx", "--registry", registry, "--tenant", "x"]
    unknown = CliRunner().invoke(cli, args)
    # An expected failure: the command line prints it in one line (router.cli.CommandLine).
    assert isinstance(unknown.exception, LookupError)
    assert "no tenant is called 'x'" in str(unknown.exception)
