"""deploy/docker-compose.yaml and its nginx.conf, read statically (no container engine runs in
CI): valid against the Compose Specification (compose-spec, bindings of the Rust
``compose_spec`` parser), two gateways on the PostgreSQL service behind the load balancer,
healthchecks that ask the gateway's readiness path, every variable a real setting, secrets
only by reference."""

from __future__ import annotations

import re
from typing import Any

import compose_spec
import pytest
import yaml

from tests.deploy.kustomize import split_image
from tests.deploy.settings_names import (
    DEPLOY,
    GATEWAY_PORT,
    PROBE_PATHS,
    SECRET_SETTINGS,
    unknown_settings,
)

COMPOSE = DEPLOY / "docker-compose.yaml"
NGINX = DEPLOY / "nginx.conf"
REFERENCE = re.compile(r"\$\{(\w+):\?[^}]+\}")  # ${NAME:?message}: required, from the env


def check_spec(text: str) -> None:
    """Raises ``ValueError`` when ``text`` is not a valid Compose file. YAML merge keys
    (``<<: *gateway``), which docker compose resolves, are resolved first by PyYAML: the
    parser would take them for misspelt extension fields."""
    compose_spec.PyCompose.from_yaml(yaml.safe_dump(yaml.safe_load(text)))


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    found: dict[str, Any] = compose["services"]
    return found


def test_the_file_follows_the_compose_specification() -> None:
    check_spec(COMPOSE.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("good", "bad"),
    [
        ("  environment:\n    DATABASE_URL", "  enviroment:\n    DATABASE_URL"),  # misspelt key
        ("{condition: service_healthy}", "{condition: healthy}"),  # unknown value
        ("interval: 5s", "interval: soon"),  # not a duration
    ],
    ids=["misspelt-key", "unknown-condition", "bad-duration"],
)
def test_the_specification_check_rejects_a_broken_file(good: str, bad: str) -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    assert good in text
    with pytest.raises(ValueError):
        check_spec(text.replace(good, bad))


def gateways(services: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in services.items() if name.startswith("gateway-")}


def test_two_gateways_one_postgres_one_load_balancer(services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "gateway-a", "gateway-b", "loadbalancer"}
    for service in gateways(services).values():
        assert service["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["loadbalancer"]["depends_on"] == {
        name: {"condition": "service_healthy"} for name in gateways(services)
    }


def test_every_service_has_a_healthcheck_and_a_pinned_image(services: dict[str, Any]) -> None:
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
        _, tag = split_image(service["image"])
        assert tag is not None and tag != "latest", name
    for service in gateways(services).values():
        check = " ".join(service["healthcheck"]["test"])
        assert f"http://127.0.0.1:{GATEWAY_PORT}{PROBE_PATHS['readiness']}'" in check


def test_gateways_name_only_settings_and_reach_the_postgres_service(
    services: dict[str, Any],
) -> None:
    postgres = services["postgres"]["environment"]
    for name, service in gateways(services).items():
        env = service["environment"]
        assert unknown_settings(set(env)) == set(), name
        url = env["DATABASE_URL"]
        assert url.startswith("postgresql+psycopg://")
        assert url.endswith(f"@postgres:5432/{postgres['POSTGRES_DB']}")
        assert f"://{postgres['POSTGRES_USER']}:" in url


def test_secrets_are_referenced_never_written(services: dict[str, Any]) -> None:
    for name, service in gateways(services).items():
        env = service["environment"]
        for setting in SECRET_SETTINGS & set(env):
            assert REFERENCE.search(env[setting]), f"{name}: {setting} holds a literal secret"
    assert REFERENCE.fullmatch(services["postgres"]["environment"]["POSTGRES_PASSWORD"])


def test_gateways_share_one_signing_key(services: dict[str, Any]) -> None:
    volumes = [service["volumes"] for service in gateways(services).values()]
    assert volumes[0] == volumes[1] == ["signing:/var/lib/provenance-router/signing"]


def test_the_load_balancer_spreads_over_every_gateway_and_relays_streams(
    services: dict[str, Any],
) -> None:
    config = NGINX.read_text(encoding="utf-8")
    upstream = set(re.findall(r"^\s*server ([\w-]+):(\d+)", config, re.MULTILINE))
    assert upstream == {(name, str(GATEWAY_PORT)) for name in gateways(services)}
    assert re.search(r"^\s*proxy_buffering off;", config, re.MULTILINE), "SSE must not buffer"
    (retry,) = re.findall(r"^\s*proxy_next_upstream (.*);", config, re.MULTILINE)
    assert "non_idempotent" not in retry, "nginx must not resend a POST to another gateway"
    mount = services["loadbalancer"]["volumes"]
    assert mount == ["./nginx.conf:/etc/nginx/nginx.conf:ro"]
