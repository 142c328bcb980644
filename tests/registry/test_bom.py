"""The CycloneDX ML-BOM conversion (``registry.bom``) over the built-in catalog: valid against
the CycloneDX 1.6 JSON schema (cyclonedx-python-lib's copy, offline), lineage as pedigree,
declared and effective licenses, claims as properties, deterministic output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from registry.bom import BomScope, to_cyclonedx, whole_registry
from registry.catalog import load_catalog
from registry.db import make_engine, migrate, session_scope
from registry.service import load_snapshot, write_transaction
from registry.snapshot import RegistrySnapshot

DISTILL = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
LLAMA = "meta-llama/Llama-3.1-8B"
DIGEST = "sha256:" + "ab" * 32


def assert_valid(text: str) -> dict[str, Any]:
    """Valid CycloneDX 1.6 JSON (the strict validator: no unknown keys anywhere)."""
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    assert error is None, error
    document: dict[str, Any] = json.loads(text)
    assert (document["bomFormat"], document["specVersion"]) == ("CycloneDX", "1.6")
    return document


def properties(entry: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in entry.get("properties", [])}


def component(document: dict[str, Any], model_id: str) -> dict[str, Any]:
    return next(c for c in document["components"] if c["bom-ref"] == f"model:{model_id}")


@pytest.fixture(scope="module")
def snapshot() -> Iterator[RegistrySnapshot]:
    """The built-in catalog, one deployment of the distill and a published digest."""
    engine = make_engine("sqlite://")
    migrate(engine)
    load_catalog(engine)
    with write_transaction(engine=engine, actor="test") as writer:
        writer.update("model", DISTILL, {"weights_digest": DIGEST}, expected_version=None)
        writer.create(
            "deployment",
            {
                "id": "r1-eu",
                "model": DISTILL,
                "adapter": "openai",
                "endpoint_url": "http://vllm.internal:8000/v1",
                "hosting": "on_prem",
                "location_country": "DE",
                "retention_days": 0,
                "zero_data_retention": True,
                "trains_on_inputs": False,
                "claim": {"source": "https://example.test/dpa", "confidence": "verified"},
            },
        )
    with session_scope(engine) as session:
        yield load_snapshot(session=session)
    engine.dispose()


def test_the_whole_catalog_is_a_valid_ml_bom(snapshot: RegistrySnapshot) -> None:
    document = assert_valid(to_cyclonedx(snapshot, whole_registry(snapshot)))
    refs = {c["bom-ref"] for c in document["components"]}
    assert refs == {f"model:{m}" for m in snapshot.models}
    assert all(c["type"] == "machine-learning-model" for c in document["components"])
    root = properties(document["metadata"]["component"])
    assert root["provenance-router:scope"] == "registry"
    assert root["provenance-router:registry_version"] == str(snapshot.version)


def test_a_distill_carries_its_lineage_licenses_hash_and_supplier(
    snapshot: RegistrySnapshot,
) -> None:
    document = assert_valid(to_cyclonedx(snapshot, whole_registry(snapshot)))
    distill = component(document, DISTILL)
    (ancestor,) = distill["pedigree"]["ancestors"]
    assert (ancestor["group"], ancestor["name"]) == ("meta-llama", "Llama-3.1-8B")
    assert properties(ancestor)["provenance-router:relation"] == "distilled_from"
    assert ancestor["supplier"]["address"]["country"] == "US"
    licenses = {
        (lic["license"].get("id") or lic["license"]["name"], lic["license"]["acknowledgement"])
        for lic in distill["licenses"]
    }
    # Declared MIT; effective along the lineage: MIT plus Llama's inherited community license.
    assert ("MIT", "declared") in licenses
    assert ("MIT", "concluded") in licenses
    assert any(name.startswith("LicenseRef-Llama") and ack == "concluded" for name, ack in licenses)
    assert distill["hashes"] == [{"alg": "SHA-256", "content": "ab" * 32}]
    assert distill["supplier"]["address"]["country"] == "CN"
    facts = properties(distill)
    assert facts["provenance-router:developer_country"] == "CN"
    assert facts["provenance-router:developer_country:confidence"] == "reported"
    assert facts["provenance-router:lineage_developer_countries"] == "CN,US"


def test_model_cards_and_deployments_as_services(snapshot: RegistrySnapshot) -> None:
    document = assert_valid(to_cyclonedx(snapshot, whole_registry(snapshot)))
    card = component(document, DISTILL)["modelCard"]
    assert card["modelParameters"]["inputs"] == [{"format": "text"}]
    (service,) = [s for s in document["services"] if s["name"] == "r1-eu"]
    facts = properties(service)
    assert facts["provenance-router:model"] == DISTILL
    assert facts["provenance-router:location_country"] == "DE"
    assert facts["provenance-router:hosting"] == "on_prem"
    assert facts["provenance-router:retention_days"] == "0"
    assert facts["provenance-router:zero_data_retention"] == "true"
    assert facts["provenance-router:trains_on_inputs"] == "false"
    assert facts["provenance-router:hosting:confidence"] == "verified"
    assert "endpoints" not in service  # a URL may carry a credential: never exported
    assert "vllm.internal" not in json.dumps(document)
    (edge,) = [d for d in document["dependencies"] if d["ref"] == "deployment:r1-eu"]
    assert edge["dependsOn"] == [f"model:{DISTILL}"]


def test_a_scope_limits_what_is_listed(snapshot: RegistrySnapshot) -> None:
    scope = BomScope(models=(DISTILL,), deployments=("r1-eu",), tenant="acme", policy_version=3)
    document = assert_valid(to_cyclonedx(snapshot, scope))
    assert [c["bom-ref"] for c in document["components"]] == [f"model:{DISTILL}"]
    root = properties(document["metadata"]["component"])
    assert (root["provenance-router:scope"], root["provenance-router:policy_version"]) == (
        "tenant:acme",
        "3",
    )


def test_output_is_deterministic_apart_from_serial_and_timestamp(
    snapshot: RegistrySnapshot,
) -> None:
    def stable(text: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(text)
        assert document.pop("serialNumber").startswith("urn:uuid:")
        document["metadata"].pop("timestamp")
        return document

    first = to_cyclonedx(snapshot, whole_registry(snapshot))
    second = to_cyclonedx(snapshot, whole_registry(snapshot))
    assert first != second  # a fresh serial number each time
    assert stable(first) == stable(second)
    assert json.dumps(stable(first)) == json.dumps(stable(second))  # same order, too


def test_an_empty_scope_is_still_a_valid_bom(snapshot: RegistrySnapshot) -> None:
    """A tenant the policy lets use nothing: no components, no services, still valid."""
    document = assert_valid(to_cyclonedx(snapshot, BomScope((), (), tenant="nobody")))
    assert "components" not in document and "services" not in document
