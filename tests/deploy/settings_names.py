"""What the deploy files may name: the environment variables ``router.settings.Settings``
reads, derived from the class itself so a renamed or removed setting breaks the manifests'
tests instead of being silently ignored by the gateway (pydantic-settings drops unknown
variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices

from router.settings import Settings

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
PROBE_PATHS = {"liveness": "/healthz", "readiness": "/readyz"}
GATEWAY_PORT = 8000
# Settings whose values are secrets: never written into a deploy file, only referenced.
SECRET_SETTINGS = {"DATABASE_URL", "PROVENANCE_ROUTER_DATABASE_URL", "PROVENANCE_ROUTER_ADMIN_KEY"}


def setting_names() -> set[str]:
    """Every environment variable name a setting is read from."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str))
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


def unknown_settings(names: set[str]) -> set[str]:
    """Of ``names``, those the gateway does not read."""
    return names - setting_names()
