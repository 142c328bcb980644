"""Registry test data and helpers (the ``engine`` fixture itself is in ``tests/conftest.py``).

``seeded`` writes a small, realistic registry in one transaction (registry version 1):
Meta's Llama 3.1 8B, DeepSeek's distill of it, a deployment in Germany, a route, a tenant and
an admin key. ``registry_state`` captures everything observable (version, every entity, every
change row) so a test can assert that a rejected write changed nothing at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from sqlalchemy import Engine

from registry.db import session_scope
from registry.service import KINDS, list_changes, read_all, registry_version, write_transaction

CLAIM: dict[str, Any] = {
    "source": "https://example.org/card",
    "retrieved_at": "2026-11-25",
    "confidence": "reported",
}
RAW_ADMIN_KEY = "pr-test-admin-key-0123456789abcdefghijklmnop"

META: dict[str, Any] = {
    "id": "meta",
    "name": "Meta Platforms, Inc.",
    "hq_country": "US",
    "claim": CLAIM,
}
DEEPSEEK: dict[str, Any] = {
    "id": "deepseek",
    "name": "Hangzhou DeepSeek AI",
    "hq_country": "CN",
    "claim": CLAIM,
}
LLAMA_LICENSE: dict[str, Any] = {
    "id": "LicenseRef-llama3.1",
    "name": "Llama 3.1 Community License",
    "commercial_use": "conditional",
    "user_threshold": 700_000_000,
    "derivatives_inherit": True,
    "claim": CLAIM,
}
MIT: dict[str, Any] = {
    "id": "MIT",
    "name": "MIT License",
    "osi_approved": True,
    "commercial_use": "yes",
}
LLAMA: dict[str, Any] = {
    "id": "meta-llama/Llama-3.1-8B",
    "name": "Llama-3.1-8B",
    "developer": "meta",
    "publisher": "meta",
    "license": "LicenseRef-llama3.1",
    "release_date": "2024-07-23",
    "parameters_total": 8_000_000_000,
    "review_status": "approved",
    "claim": CLAIM,
}
DISTILL: dict[str, Any] = {
    "id": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
    "developer": "deepseek",
    "license": "MIT",
    "lineage": [{"relation": "distilled_from", "model": "meta-llama/Llama-3.1-8B"}],
    "claims": {"license": CLAIM},
}
DEPLOYMENT: dict[str, Any] = {
    "id": "distill-fra",
    "model": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
    "adapter": "openai",
    "endpoint_url": "http://127.0.0.1:9/v1",
    "secret_ref": "DISTILL_API_KEY",
    "operator": "meta",
    "hosting": "private_cloud",
    "location": {"country": "DE", "region": "eu-central"},
    "hardware": {"vendor": "nvidia", "accelerator": "H100", "count": 8},
    "data_handling": {"retention_days": 0, "zero_data_retention": True, "trains_on_inputs": False},
}
ROUTE: dict[str, Any] = {
    "name": "chat-default",
    "candidates": ["distill-fra", "meta-llama/Llama-3.1-8B"],
}
TENANT: dict[str, Any] = {
    "id": "product-x",
    "name": "Product X",
    "attributes": {"business_unit": "retail"},
}

SEED: tuple[tuple[str, Mapping[str, Any]], ...] = (
    ("organization", META),
    ("organization", DEEPSEEK),
    ("license", LLAMA_LICENSE),
    ("license", MIT),
    ("model", LLAMA),
    ("model", DISTILL),
    ("deployment", DEPLOYMENT),
    ("route", ROUTE),
    ("tenant", TENANT),
)


def seed(engine: Engine) -> None:
    with write_transaction(engine=engine, actor="seed") as writer:
        for kind, data in SEED:
            writer.create(kind, data)
        writer.create_api_key(
            id="admin", tenant="product-x", scopes=["admin"], raw_key=RAW_ADMIN_KEY
        )


@pytest.fixture
def seeded(engine: Engine) -> Engine:
    seed(engine)
    return engine


def snapshot_state(engine: Engine) -> dict[str, Any]:
    """Everything a write could have touched."""
    with session_scope(engine) as session:
        return {
            "version": registry_version(session=session),
            "entities": {kind: read_all(session=session, kind=kind) for kind in KINDS},
            "changes": list_changes(session=session, limit=10_000),
        }


@pytest.fixture
def registry_state() -> Callable[[Engine], dict[str, Any]]:
    return snapshot_state
