"""``registry.importers`` on files: the bundled SmolLM2 GGUF (real), a truncated copy of it,
Hugging Face snapshot folders and LiteLLM configs (``import_fixtures/``), on SQLite and
PostgreSQL with the built-in catalog loaded, as ``serve`` loads it.

What each test pins: the diff before any write, ``under_review`` entries whose every fact has
a claim naming the artifact and the field, catalog matches with their rule, idempotency (a
second import writes nothing), and all-or-nothing (bad input or a refused value: nothing
changed, one error naming the file)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from adapters.local_llamacpp import find_bundled_gguf
from registry.catalog import load_catalog
from registry.db import session_scope
from registry.importers import ImportFailed, ImportResult, import_source
from registry.importers.gguf_file import DigestCache, sha256_of
from registry.lineage import effective_provenance
from registry.service import (
    ConflictError,
    list_changes,
    load_snapshot,
    read_one,
    write_transaction,
)

FIXTURES = Path(__file__).parent / "import_fixtures"
SMOLLM = "HuggingFaceTB/SmolLM2-135M-Instruct"
LITERAL_KEY = "sk-ant-FAKE-literal-key-never-stored-0123456789"


@pytest.fixture
def catalog(engine: Engine) -> Engine:
    load_catalog(engine)
    return engine


@pytest.fixture(scope="module")
def smollm_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled GGUF, hashed once for the module (the cache under test is per test)."""
    return find_bundled_gguf()


def run(
    engine: Engine,
    source: str,
    location: str | Path,
    *,
    apply: bool = False,
    cache: Path | None = None,
) -> ImportResult:
    return import_source(
        engine,
        source=source,
        location=str(location),
        apply=apply,
        actor="test-import",
        timeout_s=5.0,
        digest_cache=cache,
    )


def model(engine: Engine, id: str) -> dict[str, Any]:
    with session_scope(engine) as session:
        return read_one(session=session, kind="model", id=id)


def entry(result: ImportResult, kind: str, id: str) -> dict[str, Any]:
    found = [e for e in result.to_dict()["entries"] if (e["kind"], e["id"]) == (kind, id)]
    assert len(found) == 1, result.to_dict()["entries"]
    return found[0]


# --- GGUF ------------------------------------------------------------------------------------


def test_gguf_dry_run_shows_the_header_facts_and_the_catalog_match(
    catalog: Engine, smollm_gguf: Path, tmp_path: Path, registry_state: Callable[[Engine], Any]
) -> None:
    before = registry_state(catalog)

    result = run(catalog, "gguf", smollm_gguf, cache=tmp_path / "digests.json")

    assert registry_state(catalog) == before  # a dry run writes nothing
    key = "HuggingFaceTB/SmolLM2-135M-Instruct.Q4_1"
    shown = entry(result, "model", key)
    assert shown["op"] == "create"
    assert shown["fields"] | {"weights_digest": None} == {
        "review_status": "under_review",
        "name": "Smollm2 135M 8k Lc100K Mix1 Ep2",
        "family": "smollm2",
        "context_length": 8192,
        "parameters_total": 135_000_000,
        "license": "Apache-2.0",  # general.license apache-2.0, in SPDX spelling
        "developer": "huggingface",  # general.organization HuggingFaceTB: the catalog's publisher
        "lineage": [{"relation": "quantized_from", "model": SMOLLM}],
        "weights_digest": None,
    }
    assert shown["fields"]["weights_digest"] == f"sha256:{sha256_of(smollm_gguf)}"
    assert shown["sources"]["license"] == f"gguf:{smollm_gguf}#general.license"
    assert shown["sources"]["parameters_total"] == f"gguf:{smollm_gguf}#general.size_label"
    assert shown["sources"]["weights_digest"] == f"gguf:{smollm_gguf}#sha256"
    (match,) = result.plan.matches
    assert match == {
        "artifact": f"gguf:{smollm_gguf}",
        "name": SMOLLM,
        "model": SMOLLM,
        "rule": "exact_id",
        "confidence": "high",
        "relation": "quantized_from",
        "applied": True,
    }
    assert result.plan.observed[key] == {"quantization": "Q4_1"}


def test_gguf_apply_is_under_review_with_reported_claims_and_idempotent(
    catalog: Engine, smollm_gguf: Path, tmp_path: Path, registry_state: Callable[[Engine], Any]
) -> None:
    applied = run(catalog, "gguf", smollm_gguf, apply=True, cache=tmp_path / "d.json")

    assert applied.applied and applied.version is not None
    stored = model(catalog, "HuggingFaceTB/SmolLM2-135M-Instruct.Q4_1")
    assert stored["review_status"] == "under_review"
    assert stored["lineage"] == [{"relation": "quantized_from", "model": SMOLLM}]
    for fact in ("name", "license", "developer", "weights_digest", "lineage", "context_length"):
        claim = stored["claims"][fact]
        assert claim["confidence"] == "reported"
        assert claim["source"].startswith(f"gguf:{smollm_gguf}")
    assert stored["claim"]["confidence"] == "unknown"  # nothing else about it was read
    snapshot_before = registry_state(catalog)

    again = run(catalog, "gguf", smollm_gguf, apply=True, cache=tmp_path / "d.json")

    assert again.version is None  # nothing written: no new registry version
    assert [e["op"] for e in again.to_dict()["entries"]] == ["unchanged"]
    assert registry_state(catalog) == snapshot_before


def test_gguf_lineage_brings_the_effective_license_and_country(
    catalog: Engine, smollm_gguf: Path, tmp_path: Path
) -> None:
    run(catalog, "gguf", smollm_gguf, apply=True, cache=tmp_path / "d.json")
    with session_scope(catalog) as session:
        snapshot = load_snapshot(session=session)

    effective = effective_provenance(
        snapshot.models,
        snapshot.orgs,
        snapshot.licenses,
        "HuggingFaceTB/SmolLM2-135M-Instruct.Q4_1",
    )

    assert SMOLLM in effective.ancestors
    assert effective.developer_countries == {"US"}


def test_gguf_digest_is_cached_by_path_size_and_mtime(smollm_gguf: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(b"first contents")
    cache_file = tmp_path / "cache.json"
    first = DigestCache(cache_file)
    digest = first.digest(copy)
    first.save()
    stored = json.loads(cache_file.read_text())
    assert stored[str(copy)]["sha256"] == digest == sha256_of(copy)

    # a cached entry is trusted while size and mtime match: prove it is read, not recomputed
    stored[str(copy)]["sha256"] = "0" * 64
    cache_file.write_text(json.dumps(stored))
    assert DigestCache(cache_file).digest(copy) == "0" * 64

    copy.write_bytes(b"other contents, other size")  # changed: hashed again
    assert DigestCache(cache_file).digest(copy) == sha256_of(copy)


def test_truncated_gguf_is_one_error_naming_the_file_and_imports_nothing(
    catalog: Engine, smollm_gguf: Path, tmp_path: Path, registry_state: Callable[[Engine], Any]
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(smollm_gguf, folder / "a-good.gguf")
    truncated = folder / "b-truncated.gguf"
    with smollm_gguf.open("rb") as source:
        truncated.write_bytes(source.read(smollm_gguf.stat().st_size // 2))
    before = registry_state(catalog)

    with pytest.raises(ImportFailed) as raised:
        run(catalog, "gguf", folder, apply=True, cache=tmp_path / "d.json")

    assert str(truncated) in raised.value.message
    assert "GGUF" in raised.value.message and "nothing was imported" in raised.value.message
    assert registry_state(catalog) == before  # the good file next to it was not imported either


def write_gguf(path: Path, **header: Any) -> Path:
    """A small, complete GGUF file (one tensor) with the given ``general.*`` header."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch="llama")
    if "organization" in header:
        writer.add_organization(header["organization"])
    if "license" in header:
        writer.add_license(header["license"])
    for index, base in enumerate(header.get("bases", [])):
        writer.add_base_model_count(len(header["bases"]))
        writer.add_base_model_name(index, base["name"])
        if "repo_url" in base:
            writer.add_base_model_repo_url(index, base["repo_url"])
    writer.add_context_length(4096)
    writer.add_file_type(15)  # MOSTLY_Q4_K_M
    writer.add_tensor("token_embd.weight", np.zeros((8,), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_header_base_model_becomes_quantized_from(catalog: Engine, tmp_path: Path) -> None:
    path = write_gguf(
        tmp_path / "acme-chat-Q4_K_M.gguf",
        organization="Unknown Org",
        license="llama3.1",
        bases=[
            {
                "name": "Llama 3.1 8B Instruct",
                "repo_url": "https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct",
            }
        ],
    )

    result = run(catalog, "gguf", path, apply=True, cache=tmp_path / "d.json")

    stored = model(catalog, "Unknown-Org/acme-chat-Q4_K_M")
    assert stored["lineage"] == [
        {"relation": "quantized_from", "model": "meta-llama/Llama-3.1-8B-Instruct"}
    ]
    assert stored["claims"]["lineage"]["source"] == f"gguf:{path}#general.base_model.0.repo_url"
    assert stored["license"] == "LicenseRef-Llama-3.1-Community"
    assert stored["developer"] is None  # an organization the registry does not know
    assert any("'Unknown Org'" in u and "developer left unset" in u for u in result.plan.unresolved)
    assert result.plan.observed["Unknown-Org/acme-chat-Q4_K_M"] == {"quantization": "Q4_K_M"}


def test_gguf_ambiguous_name_is_listed_and_not_linked(catalog: Engine, tmp_path: Path) -> None:
    with write_transaction(engine=catalog, actor="test") as writer:  # a second Llama-3.1-8B
        writer.create("model", {"id": "acme/Llama-3.1-8B"})
    path = write_gguf(tmp_path / "Llama-3.1-8B.Q4_K_M.gguf")  # no organization in the header

    result = run(catalog, "gguf", path, apply=True, cache=tmp_path / "d.json")

    assert result.plan.ambiguous == [
        {
            "artifact": f"gguf:{path}",
            "name": "Llama-3.1-8B",
            "candidates": ["acme/Llama-3.1-8B", "meta-llama/Llama-3.1-8B"],
            "rule": "normalised_name",
        }
    ]
    assert result.plan.matches == []
    assert model(catalog, "gguf/Llama-3.1-8B.Q4_K_M")["lineage"] == []


def test_a_missing_path_is_an_error_naming_it(catalog: Engine, tmp_path: Path) -> None:
    with pytest.raises(ImportFailed, match=r"absent\.gguf"):
        run(catalog, "gguf", tmp_path / "absent.gguf")


# --- Hugging Face snapshots ------------------------------------------------------------------


def test_hf_snapshot_card_and_config_make_a_finetune_with_its_license(catalog: Engine) -> None:
    folder = FIXTURES / "hf/models--acme--Llama-3.1-8B-Acme-Instruct/snapshots/0123abc"

    result = run(catalog, "hf", folder, apply=True)

    stored = model(catalog, "acme/Llama-3.1-8B-Acme-Instruct")
    assert stored["revision"] == "0123abc"
    assert stored["license"] == "LicenseRef-Llama-3.1-Community"  # card: license: llama3.1
    assert stored["lineage"] == [
        {"relation": "finetune_of", "model": "meta-llama/Llama-3.1-8B-Instruct"}
    ]
    assert stored["context_length"] == 131072 and stored["family"] == "llama"
    assert stored["claims"]["license"]["source"] == f"hf:{folder / 'README.md'}#license"
    assert stored["claims"]["lineage"]["source"] == f"hf:{folder / 'README.md'}#base_model"
    assert stored["claims"]["context_length"]["source"] == (
        f"hf:{folder / 'config.json'}#max_position_embeddings"
    )
    assert result.plan.unresolved == []


def test_hf_adapter_without_relation_is_adapter_of_and_license_name_resolves(
    catalog: Engine,
) -> None:
    run(catalog, "hf", FIXTURES / "hf/sql-adapter", apply=True)

    stored = model(catalog, "hf/sql-adapter")
    assert stored["lineage"] == [{"relation": "adapter_of", "model": "Qwen/Qwen2.5-7B-Instruct"}]
    assert stored["license"] == "LicenseRef-Qwen"  # license: other + license_name: qwen


def test_hf_unknown_base_becomes_a_stub_so_provenance_fails_closed(catalog: Engine) -> None:
    result = run(catalog, "hf", FIXTURES / "hf/mystery-finetune", apply=True)

    stub = model(catalog, "unknown-lab/Mystery-7B")
    assert stub["review_status"] == "under_review" and stub["developer"] is None
    assert entry(result, "model", "unknown-lab/Mystery-7B")["op"] == "create"
    with session_scope(catalog) as session:
        snapshot = load_snapshot(session=session)
    effective = effective_provenance(
        snapshot.models, snapshot.orgs, snapshot.licenses, "someone/Mystery-7B-Chat"
    )
    assert effective.ancestors == ("unknown-lab/Mystery-7B",)
    assert not effective.complete  # unknown ancestor: rules that depend on it fail closed


def test_hf_snapshot_of_a_catalog_model_writes_nothing(
    catalog: Engine, tmp_path: Path, registry_state: Callable[[Engine], Any]
) -> None:
    folder = tmp_path / "models--Qwen--Qwen2.5-7B-Instruct/snapshots/abc"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "qwen2"}')
    before = registry_state(catalog)

    result = run(catalog, "hf", folder, apply=True)

    assert result.version is None and registry_state(catalog) == before
    assert result.plan.matches[0]["model"] == "Qwen/Qwen2.5-7B-Instruct"
    assert result.plan.matches[0]["relation"] == "same"


def test_hf_malformed_front_matter_is_one_error_naming_the_card(catalog: Engine) -> None:
    with pytest.raises(ImportFailed, match=r"broken-card/README\.md: malformed YAML"):
        run(catalog, "hf", FIXTURES / "hf/broken-card")


# --- LiteLLM ---------------------------------------------------------------------------------


def test_litellm_config_becomes_deployments_and_routes_with_secret_references(
    catalog: Engine,
) -> None:
    config = FIXTURES / "litellm/config.yaml"

    result = run(catalog, "litellm", config, apply=True)

    with session_scope(catalog) as session:
        gpt = read_one(session=session, kind="deployment", id="litellm-gpt-4o")
        qwen = read_one(session=session, kind="deployment", id="litellm-local-qwen")
        ollama = read_one(session=session, kind="deployment", id="litellm-local-qwen-2")
        claude = read_one(session=session, kind="deployment", id="litellm-claude")
        routes = {
            name: read_one(session=session, kind="route", id=name)
            for name in ("gpt-4o", "local-qwen", "claude")
        }
    assert (gpt["adapter"], gpt["upstream_model"], gpt["secret_ref"]) == (
        "litellm",
        "openai/gpt-4o",
        "OPENAI_API_KEY",
    )
    assert gpt["review_status"] == "under_review"
    assert gpt["claims"]["secret_ref"]["source"] == (
        f"litellm:{config}#model_list[0].litellm_params.api_key"
    )
    # the OpenAI fast path for a vLLM endpoint; its model is the catalog's, by exact id
    assert (qwen["adapter"], qwen["endpoint_url"], qwen["upstream_model"]) == (
        "openai",
        "http://10.0.0.5:8000/v1",
        "Qwen/Qwen2.5-7B-Instruct",
    )
    assert qwen["model"] == "Qwen/Qwen2.5-7B-Instruct" and qwen["priority"] == 1
    # qwen2.5:7b only normalises like the *base* Qwen2.5-7B: suggested, not applied
    assert ollama["model"] == "litellm/qwen2.5-7b"
    suggestion = next(m for m in result.plan.matches if m["name"] == "qwen2.5:7b")
    assert (suggestion["rule"], suggestion["applied"]) == ("normalised_name", False)
    assert claude["secret_ref"] is None and claude["timeout_s"] == 30.0
    assert routes["gpt-4o"]["candidates"] == ["litellm-gpt-4o", "litellm-claude"]  # fallback
    assert routes["local-qwen"]["candidates"] == ["litellm-local-qwen", "litellm-local-qwen-2"]
    assert {r["strategy"] for r in routes.values()} == {"weighted"}  # simple-shuffle


def test_litellm_literal_key_is_never_stored_and_the_diff_warns(catalog: Engine) -> None:
    result = run(catalog, "litellm", FIXTURES / "litellm/config.yaml", apply=True)

    diff = json.dumps(result.to_dict())
    assert LITERAL_KEY not in diff
    assert any("literal API key" in w and "NOT imported" in w for w in result.plan.warnings)
    with session_scope(catalog) as session:
        changes = json.dumps(list_changes(session=session, limit=10_000), default=str)
    assert LITERAL_KEY not in changes and "litellm-claude" in changes


def test_litellm_import_twice_creates_no_duplicates(catalog: Engine) -> None:
    first = run(catalog, "litellm", FIXTURES / "litellm/config.yaml", apply=True)
    second = run(catalog, "litellm", FIXTURES / "litellm/config.yaml", apply=True)

    assert first.plan.to_dict()["summary"]["create"] == 10  # 3 models, 4 deployments, 3 routes
    assert second.version is None
    assert second.plan.to_dict()["summary"] == {"create": 0, "unchanged": 10, "exists": 0}


def test_litellm_malformed_yaml_is_one_error_naming_the_file(
    catalog: Engine, registry_state: Callable[[Engine], Any]
) -> None:
    before = registry_state(catalog)
    path = FIXTURES / "litellm/malformed.yaml"

    with pytest.raises(ImportFailed, match=rf"{path}: malformed YAML at line \d+"):
        run(catalog, "litellm", path, apply=True)

    assert registry_state(catalog) == before


def test_a_value_the_registry_refuses_is_shown_in_the_diff_and_refused_whole(
    catalog: Engine, registry_state: Callable[[Engine], Any]
) -> None:
    path = FIXTURES / "litellm/bad-url.yaml"
    dry = run(catalog, "litellm", path)
    assert any("litellm-broken" in e and "endpoint_url" in e for e in dry.plan.errors)
    before = registry_state(catalog)

    with pytest.raises(ImportFailed) as raised:
        run(catalog, "litellm", path, apply=True)

    assert raised.value.message.startswith(f"{path}: the registry refuses deployment")
    assert "endpoint_url" in raised.value.message
    assert registry_state(catalog) == before


def test_a_write_refused_midway_rolls_back_the_whole_import(
    catalog: Engine, registry_state: Callable[[Engine], Any]
) -> None:
    """The plan is clean, but the registry refuses the last deployment (an id that differs
    only in case from one made meanwhile): models, routes and the first three deployments
    were already written in the transaction, and none of it stays."""
    with write_transaction(engine=catalog, actor="test") as writer:
        writer.create("deployment", {"id": "LITELLM-claude", "model": SMOLLM})
    before = registry_state(catalog)

    with pytest.raises(ConflictError) as raised:
        run(catalog, "litellm", FIXTURES / "litellm/config.yaml", apply=True)

    assert raised.value.message.startswith("deployment 'litellm-claude' from ")
    assert "differs only in case" in raised.value.message
    assert registry_state(catalog) == before


def test_an_entry_edited_since_is_listed_with_its_differences_and_never_changed(
    catalog: Engine, registry_state: Callable[[Engine], Any]
) -> None:
    config = FIXTURES / "litellm/config.yaml"
    run(catalog, "litellm", config, apply=True)
    with write_transaction(engine=catalog, actor="admin") as writer:
        writer.update("deployment", "litellm-local-qwen", {"priority": 5}, expected_version=None)
    before = registry_state(catalog)

    again = run(catalog, "litellm", config, apply=True)

    shown = entry(again, "deployment", "litellm-local-qwen")
    assert shown["op"] == "exists"
    assert shown["differs"] == {"priority": {"stored": 5, "found": 1}}
    assert again.version is None and registry_state(catalog) == before  # the admin's edit stands
