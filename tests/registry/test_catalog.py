"""The built-in catalog: what it holds, how it loads, and the lineage answers it gives.

Database tests run on SQLite and PostgreSQL (``engine`` fixture, ``tests/conftest.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from registry.catalog import catalog_text, load_catalog
from registry.db import make_engine, migrate, session_scope
from registry.gitops import apply, export
from registry.gitops_schema import parse_document
from registry.lineage import effective_provenance, training_hardware_vendors
from registry.service import KINDS, load_snapshot, read_all, registry_version
from registry.snapshot import RegistrySnapshot

# Every organization, license and model of shared/reference/models.md.
REFERENCE_ORGS = {
    "deepseek", "alibaba-qwen", "moonshot", "zhipu", "minimax", "meta", "google", "microsoft",
    "openai", "ibm", "ai2", "huggingface", "mistral", "tii", "cohere",
}  # fmt: skip
REFERENCE_LICENSES = {
    "MIT", "Apache-2.0", "CC-BY-NC-4.0", "LicenseRef-Llama-3.1-Community",
    "LicenseRef-Llama-3.2-Community", "LicenseRef-Gemma-Terms", "LicenseRef-Qwen",
    "LicenseRef-Kimi-Modified-MIT", "LicenseRef-TII-Falcon-2.0", "LicenseRef-Mistral-Research",
    "LicenseRef-DeepSeek-Model",
}  # fmt: skip
REFERENCE_MODELS = {
    "deepseek-ai/DeepSeek-R1": ("deepseek", "MIT"),
    "deepseek-ai/DeepSeek-R1-Distill-Llama-8B": ("deepseek", "MIT"),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": ("deepseek", "MIT"),
    "deepseek-ai/DeepSeek-V3": ("deepseek", "LicenseRef-DeepSeek-Model"),
    "deepseek-ai/DeepSeek-V4-Pro": ("deepseek", "MIT"),
    "deepseek-ai/DeepSeek-V4-Flash": ("deepseek", "MIT"),
    "Qwen/Qwen2.5-7B-Instruct": ("alibaba-qwen", "Apache-2.0"),
    "Qwen/Qwen3-8B": ("alibaba-qwen", "Apache-2.0"),
    "moonshotai/Kimi-K2-Instruct": ("moonshot", "LicenseRef-Kimi-Modified-MIT"),
    "zai-org/GLM-4.5": ("zhipu", "MIT"),
    "meta-llama/Llama-3.1-8B-Instruct": ("meta", "LicenseRef-Llama-3.1-Community"),
    "meta-llama/Llama-3.2-11B-Vision-Instruct": ("meta", "LicenseRef-Llama-3.2-Community"),
    "google/gemma-3-270m": ("google", "LicenseRef-Gemma-Terms"),
    "microsoft/Phi-4": ("microsoft", "MIT"),
    "openai/gpt-oss-20b": ("openai", "Apache-2.0"),
    "ibm-granite/granite-3.3-8b-instruct": ("ibm", "Apache-2.0"),
    "allenai/OLMo-2-1124-7B-Instruct": ("ai2", "Apache-2.0"),
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("huggingface", "Apache-2.0"),
    "mistralai/Mistral-7B-Instruct-v0.3": ("mistral", "Apache-2.0"),
    "tiiuae/Falcon3-7B-Instruct": ("tii", "LicenseRef-TII-Falcon-2.0"),
    "CohereForAI/c4ai-command-r-v01": ("cohere", "CC-BY-NC-4.0"),
    # bases the lineage cases need
    "meta-llama/Llama-3.1-8B": ("meta", "LicenseRef-Llama-3.1-Community"),
    "Qwen/Qwen2.5-Math-7B": ("alibaba-qwen", "Apache-2.0"),
}
BUNDLED_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
DISTILL_LLAMA = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
DISTILL_QWEN = "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"


def snapshot_of(engine: Engine) -> RegistrySnapshot:
    with session_scope(engine) as session:
        return load_snapshot(session=session)


def entities(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    skip = {"version", "created_at", "updated_at"}
    with session_scope(engine) as session:
        return {
            kind: [
                {k: v for k, v in row.items() if k not in skip}
                for row in read_all(session=session, kind=kind)
            ]
            for kind in KINDS
        }


@pytest.fixture
def catalog(engine: Engine) -> RegistrySnapshot:
    assert load_catalog(engine) == 1
    return snapshot_of(engine)


@pytest.fixture
def fresh_sqlite(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


# --------------------------------------------------------------------------- the file itself


def _claims_of_catalog() -> Iterator[tuple[str, dict[str, Any]]]:
    document = parse_document(catalog_text())
    for kind in ("organization", "license", "model"):
        for entry in document.of(kind):
            yield f"{kind} {entry.id}", entry.values["claim"]
            for fact, claim in (entry.values.get("claims") or {}).items():
                yield f"{kind} {entry.id} {fact}", claim


# A press report the reference names without a URL is cited by publication and date.
DATED_PUBLICATION = re.compile(r"[A-Z][A-Za-z]+[^\n]*, \d{4}-\d{2}-\d{2}\b.*")
# The catalog was gathered on 2026-11-25; the DeepSeek V4 entries were added on 2026-12-02.
RETRIEVED = {date(2026, 11, 25), date(2026, 12, 2)}


def test_every_fact_is_reported_with_a_source_never_verified() -> None:
    claims = list(_claims_of_catalog())

    assert len(claims) > 60
    for where, claim in claims:
        source = str(claim["source"])
        assert source.startswith("https://") or DATED_PUBLICATION.fullmatch(source), where
        assert claim["retrieved_at"] in RETRIEVED, where
        assert claim["confidence"] == "reported", where


def test_catalog_has_no_deployments_routes_tenants_or_keys() -> None:
    document = parse_document(catalog_text())

    assert document.sections == {"organization", "license", "model"}


# --------------------------------------------------------------------------- loading


def test_catalog_loads_into_an_empty_registry_once(engine: Engine) -> None:
    assert load_catalog(engine) == 1
    assert load_catalog(engine) is None

    with session_scope(engine) as session:
        assert registry_version(session=session) == 1


def test_catalog_is_not_loaded_into_a_registry_that_has_organizations(engine: Engine) -> None:
    apply(engine, "apiVersion: provenance-router/v1\norganizations: [{id: acme, name: A}]\n")

    assert load_catalog(engine) is None
    assert entities(engine)["model"] == []


def test_catalog_never_overwrites_later_edits(engine: Engine) -> None:
    load_catalog(engine)
    approve = (
        "apiVersion: provenance-router/v1\nmodels: [{id: Qwen/Qwen3-8B, review_status: approved}]\n"
    )
    apply(engine, approve)

    assert load_catalog(engine) is None
    assert snapshot_of(engine).models["Qwen/Qwen3-8B"].review_status == "approved"


def test_catalog_holds_the_reference(catalog: RegistrySnapshot) -> None:
    assert set(catalog.orgs) >= REFERENCE_ORGS
    assert set(catalog.licenses) >= REFERENCE_LICENSES
    for model_id, (developer, license_id) in REFERENCE_MODELS.items():
        model = catalog.models[model_id]
        assert (model.developer_id, model.license_id) == (developer, license_id), model_id
    assert not catalog.deployments and not catalog.routes


def test_only_the_bundled_model_is_approved(catalog: RegistrySnapshot) -> None:
    approved = {m.id for m in catalog.models.values() if m.review_status == "approved"}

    assert approved == {BUNDLED_MODEL}
    assert {m.review_status for m in catalog.models.values()} == {"approved", "under_review"}


def test_every_catalog_model_has_complete_provenance(catalog: RegistrySnapshot) -> None:
    for model_id in catalog.models:
        result = effective_provenance(catalog.models, catalog.orgs, catalog.licenses, model_id)
        assert result.complete, model_id


# --------------------------------------------------------------------------- lineage answers


def test_distill_of_llama_carries_the_llama_license(catalog: RegistrySnapshot) -> None:
    result = effective_provenance(catalog.models, catalog.orgs, catalog.licenses, DISTILL_LLAMA)

    assert catalog.models[DISTILL_LLAMA].license_id == "MIT"  # what the card says
    assert result.licenses == {"MIT", "LicenseRef-Llama-3.1-Community"}
    assert result.ancestors == ("meta-llama/Llama-3.1-8B",)
    assert result.developer_countries == {"CN", "US"}


def test_distill_of_qwen_is_derived_from_china(catalog: RegistrySnapshot) -> None:
    result = effective_provenance(catalog.models, catalog.orgs, catalog.licenses, DISTILL_QWEN)

    assert "CN" in result.developer_countries
    assert result.ancestors == ("Qwen/Qwen2.5-Math-7B", "Qwen/Qwen2.5-7B")
    assert result.licenses == {"MIT"}  # Apache-2.0 does not pass to derivatives
    assert result.complete


def test_missing_parent_makes_provenance_incomplete(catalog: RegistrySnapshot) -> None:
    models = {k: v for k, v in catalog.models.items() if k != "meta-llama/Llama-3.1-8B"}

    result = effective_provenance(models, catalog.orgs, catalog.licenses, DISTILL_LLAMA)

    assert not result.complete
    assert "LicenseRef-Llama-3.1-Community" not in result.licenses


def test_instruct_models_are_finetunes_of_their_base(catalog: RegistrySnapshot) -> None:
    parents = {
        edge.parent_id
        for model in catalog.models.values()
        for edge in model.parents
        if edge.relation == "finetune_of"
    }
    assert {"meta-llama/Llama-3.1-8B", "Qwen/Qwen2.5-7B", "HuggingFaceTB/SmolLM2-135M"} <= parents
    instruct = catalog.models["meta-llama/Llama-3.1-8B-Instruct"]
    assert [(e.relation, e.parent_id) for e in instruct.parents] == [
        ("finetune_of", "meta-llama/Llama-3.1-8B")
    ]


# --------------------------------------------------------------------------- license terms


def test_license_terms(catalog: RegistrySnapshot) -> None:
    llama31 = catalog.licenses["LicenseRef-Llama-3.1-Community"]
    llama32 = catalog.licenses["LicenseRef-Llama-3.2-Community"]

    assert (llama31.user_threshold, llama31.commercial_use) == (700_000_000, "conditional")
    assert llama32.geographic_restrictions == {"EU"}
    inheriting = {lic.id for lic in catalog.licenses.values() if lic.derivatives_inherit}
    assert {
        "LicenseRef-Llama-3.1-Community",
        "LicenseRef-Llama-3.2-Community",
        "LicenseRef-Gemma-Terms",
        "LicenseRef-Qwen",
        "LicenseRef-TII-Falcon-2.0",
    } <= inheriting
    assert not {"MIT", "Apache-2.0"} & inheriting
    assert catalog.licenses["CC-BY-NC-4.0"].commercial_use == "no"
    assert catalog.licenses["Apache-2.0"].osi_approved is True


def test_zhipu_is_listed_on_the_us_entity_list_as_reported(catalog: RegistrySnapshot) -> None:
    zhipu = catalog.orgs["zhipu"]

    assert [listing.list for listing in zhipu.listings] == ["us-entity-list"]
    assert zhipu.jurisdiction_tags == frozenset()  # one canonical form: listings, not tags
    assert zhipu.confidence("listings") == "reported"
    assert zhipu.claims["listings"].source != zhipu.claim.source


def test_training_hardware_only_where_reported(catalog: RegistrySnapshot) -> None:
    v3 = catalog.models["deepseek-ai/DeepSeek-V3"]
    assert [(p.vendor, p.accelerator) for p in v3.training_hardware or ()] == [("nvidia", "h800")]
    assert v3.confidence("training_hardware") == "reported"
    assert v3.claims["training_hardware"].source == "https://arxiv.org/abs/2412.19437"
    assert catalog.models["Qwen/Qwen3-8B"].training_hardware is None
    assert catalog.models["Qwen/Qwen3-8B"].confidence("training_hardware") == "unknown"
    assert training_hardware_vendors(catalog.models, "deepseek-ai/DeepSeek-V3") == {"nvidia"}


def test_deepseek_v4_family_as_reported(catalog: RegistrySnapshot) -> None:
    """Sizes, license, date and context from the card; Huawei Ascend only for V4-Flash, where
    the reports name it, with no share or accelerator model (none is stated)."""
    pro = catalog.models["deepseek-ai/DeepSeek-V4-Pro"]
    flash = catalog.models["deepseek-ai/DeepSeek-V4-Flash"]
    assert (pro.license_id, pro.developer_id, pro.family) == ("MIT", "deepseek", "deepseek-v4")
    assert (flash.license_id, flash.developer_id) == ("MIT", "deepseek")
    assert flash.training_hardware is not None
    assert [(p.vendor, p.accelerator, p.share) for p in flash.training_hardware] == [
        ("huawei", None, None)
    ]
    assert flash.claims["training_hardware"].confidence == "reported"
    assert "Reuters" in (flash.claims["training_hardware"].source or "")
    assert pro.training_hardware is None  # not stated for Pro: unknown, never guessed
    assert all(m.claim.confidence == "reported" for m in (pro, flash))
    assert flash.claim.source == "https://huggingface.co/deepseek-ai/DeepSeek-V4-Flash"


# --------------------------------------------------------------------------- catalog under a file


USER_FILE = """\
apiVersion: provenance-router/v1
organizations:
  - {id: acme-bank, name: Acme Bank AG, hq_country: DE}
models:
  - id: Qwen/Qwen2.5-7B-Instruct
    review_status: approved
"""


def test_first_apply_merges_the_catalog_under_the_file(engine: Engine) -> None:
    first = apply(engine, USER_FILE, bootstrap=catalog_text())

    assert first.version == 1  # catalog and file in one atomic write
    snapshot = snapshot_of(engine)
    assert REFERENCE_ORGS | {"acme-bank"} <= set(snapshot.orgs)
    qwen = snapshot.models["Qwen/Qwen2.5-7B-Instruct"]
    assert (qwen.review_status, qwen.license_id) == ("approved", "Apache-2.0")
    assert apply(engine, USER_FILE, bootstrap=catalog_text()).changes == ()


def test_catalog_is_not_merged_into_a_registry_that_has_organizations(engine: Engine) -> None:
    apply(engine, "apiVersion: provenance-router/v1\norganizations: [{id: x, name: X}]\n")

    result = apply(
        engine, USER_FILE.replace("Qwen/Qwen2.5-7B-Instruct", "x/m"), bootstrap=catalog_text()
    )

    assert {f"{c.kind}:{c.id}" for c in result.creates} == {"organization:acme-bank", "model:x/m"}


def test_merged_prune_equals_catalog_then_pruning_apply(
    engine: Engine, fresh_sqlite: Engine
) -> None:
    only_bundled = (
        f"apiVersion: provenance-router/v1\nmodels: [{{id: {BUNDLED_MODEL}, lineage: []}}]\n"
    )
    apply(engine, only_bundled, prune=True, bootstrap=catalog_text())

    load_catalog(fresh_sqlite)
    apply(fresh_sqlite, only_bundled, prune=True)

    assert entities(engine) == entities(fresh_sqlite)
    assert [m["id"] for m in entities(engine)["model"]] == [BUNDLED_MODEL]


def test_catalog_export_round_trip(
    catalog: RegistrySnapshot, engine: Engine, fresh_sqlite: Engine
) -> None:
    text = export(engine)

    assert apply(engine, text).changes == ()
    apply(fresh_sqlite, text)
    assert entities(fresh_sqlite) == entities(engine)
