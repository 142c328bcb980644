"""``import ollama`` and ``import openai`` against real servers on 127.0.0.1: a uvicorn app
answering Ollama's documented ``/api/tags`` and ``/api/show`` (``import_fixtures/ollama``),
one answering vLLM's ``/v1/models`` (with ``root`` and a LoRA adapter's ``parent``), and the
real xllamacpp server of the bundled SmolLM2 (``slow``). SQLite and PostgreSQL, catalog loaded.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapters.local_llamacpp import LocalModelServer
from registry.catalog import load_catalog
from registry.db import session_scope
from registry.importers import ImportFailed, ImportResult, import_source
from registry.lineage import effective_provenance
from registry.service import load_snapshot, read_one
from tests.servers import serve_app

FIXTURES = Path(__file__).parent / "import_fixtures/ollama"
DISTILL = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
QWEN = "Qwen/Qwen2.5-7B-Instruct"


def ollama_app(calls: list[str]) -> Starlette:
    tags = json.loads((FIXTURES / "tags.json").read_text())
    shows = json.loads((FIXTURES / "show.json").read_text())

    async def api_tags(_request: Request) -> JSONResponse:
        calls.append("GET /api/tags")
        return JSONResponse(tags)

    async def api_show(request: Request) -> JSONResponse:
        name = (await request.json()).get("model")
        calls.append(f"POST /api/show {name}")
        if name not in shows:
            return JSONResponse({"error": f"model '{name}' not found"}, status_code=404)
        return JSONResponse(shows[name])

    return Starlette(
        routes=[Route("/api/tags", api_tags), Route("/api/show", api_show, methods=["POST"])]
    )


VLLM_MODELS = {  # vLLM's /v1/models with one LoRA adapter (--enable-lora --lora-modules)
    "object": "list",
    "data": [
        {
            "id": QWEN,
            "object": "model",
            "created": 1733000000,
            "owned_by": "vllm",
            "root": QWEN,
            "parent": None,
            "max_model_len": 32768,
            "permission": [],
        },
        {
            "id": "sql-lora",
            "object": "model",
            "created": 1733000000,
            "owned_by": "vllm",
            "root": "/adapters/sql-lora",
            "parent": QWEN,
            "max_model_len": None,
            "permission": [],
        },
    ],
}


def vllm_app() -> Starlette:
    async def models(_request: Request) -> JSONResponse:
        return JSONResponse(VLLM_MODELS)

    return Starlette(routes=[Route("/v1/models", models)])


@pytest.fixture
def catalog(engine: Engine) -> Engine:
    load_catalog(engine)
    return engine


@pytest.fixture
def ollama() -> Iterator[tuple[str, list[str]]]:
    calls: list[str] = []
    with serve_app(ollama_app(calls)) as url:
        yield url, calls


def run(engine: Engine, source: str, url: str, *, apply: bool = False) -> ImportResult:
    return import_source(
        engine,
        source=source,
        location=url,
        apply=apply,
        actor="test-import",
        timeout_s=5.0,
        digest_cache=None,
    )


def read(engine: Engine, kind: str, id: str) -> dict[str, Any]:
    with session_scope(engine) as session:
        return read_one(session=session, kind=kind, id=id)


# --- Ollama ----------------------------------------------------------------------------------


def test_ollama_dry_run_lists_models_deployments_and_the_tag_match(
    catalog: Engine, ollama: tuple[str, list[str]], registry_state: Callable[[Engine], Any]
) -> None:
    url, calls = ollama
    before = registry_state(catalog)

    result = run(catalog, "ollama", url)

    assert registry_state(catalog) == before
    assert calls[0] == "GET /api/tags" and len(calls) == 4  # tags + one show per model
    diff = result.to_dict()
    assert {(e["kind"], e["id"], e["op"]) for e in diff["entries"]} == {
        ("model", "ollama/deepseek-r1-8b", "create"),
        ("model", "ollama/deepseek-r1-latest", "create"),
        ("model", "ollama/acme-assistant-latest", "create"),
        ("deployment", "ollama-deepseek-r1-8b", "create"),
        ("deployment", "ollama-deepseek-r1-latest", "create"),
        ("deployment", "ollama-acme-assistant-latest", "create"),
    }
    # family llama: the 2025-01 distill of Llama 3.1 8B, by the known-tags table
    assert diff["matches"] == [
        {
            "artifact": f"ollama:{url}/api/show?model=deepseek-r1%3A8b",
            "name": "deepseek-r1:8b",
            "model": DISTILL,
            "rule": "ollama_tag",
            "confidence": "high",
            "relation": "quantized_from",
            "applied": True,
        }
    ]
    assert diff["observed"]["ollama/deepseek-r1-8b"] == {"quantization": "Q4_K_M"}
    assert any("acme-assistant:latest: license text not recognised" in w for w in diff["warnings"])


def test_ollama_apply_brings_the_catalog_lineage_and_effective_license(
    catalog: Engine, ollama: tuple[str, list[str]]
) -> None:
    url, _ = ollama

    result = run(catalog, "ollama", url, apply=True)

    assert result.version is not None
    imported = read(catalog, "model", "ollama/deepseek-r1-8b")
    assert imported["review_status"] == "under_review"
    assert imported["lineage"] == [{"relation": "quantized_from", "model": DISTILL}]
    assert imported["license"] == "MIT"  # recognised from the license text
    assert imported["parameters_total"] == 8030261312  # model_info.general.parameter_count
    assert imported["family"] == "llama" and imported["context_length"] == 131072
    assert imported["revision"] == (
        "28f8fd6cdc677661426adab9338ce3c013d7e69a5bea9e704b364171a5d61a10"
    )
    shown = f"ollama:{url}/api/show?model=deepseek-r1%3A8b"
    assert imported["claims"]["family"] == {
        "source": f"{shown}#details.family",
        "retrieved_at": imported["claims"]["family"]["retrieved_at"],
        "confidence": "reported",
    }
    assert imported["claims"]["license"]["source"] == f"{shown}#license"
    deployment = read(catalog, "deployment", "ollama-deepseek-r1-8b")
    assert (deployment["endpoint_url"], deployment["upstream_model"]) == (
        f"{url}/v1",
        "deepseek-r1:8b",
    )
    assert deployment["model"] == "ollama/deepseek-r1-8b"
    assert deployment["review_status"] == "under_review"
    # the newer deepseek-r1 (family qwen3) is not the Llama distill: no link made
    assert read(catalog, "model", "ollama/deepseek-r1-latest")["lineage"] == []

    with session_scope(catalog) as session:
        snapshot = load_snapshot(session=session)
    effective = effective_provenance(
        snapshot.models, snapshot.orgs, snapshot.licenses, "ollama/deepseek-r1-8b"
    )
    assert effective.ancestors[:2] == (DISTILL, "meta-llama/Llama-3.1-8B")
    assert "LicenseRef-Llama-3.1-Community" in effective.licenses  # Llama's terms carry over


def test_ollama_import_twice_creates_no_duplicates(
    catalog: Engine, ollama: tuple[str, list[str]], registry_state: Callable[[Engine], Any]
) -> None:
    url, _ = ollama
    run(catalog, "ollama", url, apply=True)
    after_first = registry_state(catalog)

    second = run(catalog, "ollama", url, apply=True)

    assert second.version is None and registry_state(catalog) == after_first
    assert {e["op"] for e in second.to_dict()["entries"]} == {"unchanged"}


def test_unreachable_server_is_one_error_naming_the_url(
    catalog: Engine, registry_state: Callable[[Engine], Any]
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    before = registry_state(catalog)

    for source, path in (("ollama", "/api/tags"), ("openai", "/v1/models")):
        with pytest.raises(ImportFailed) as raised:
            run(catalog, source, url, apply=True)
        assert raised.value.message.startswith(f"{url}{path}: cannot reach the server")

    assert registry_state(catalog) == before


def test_a_server_answering_an_error_is_one_error_and_nothing_half_imported(
    catalog: Engine, registry_state: Callable[[Engine], Any]
) -> None:
    calls: list[str] = []
    app = ollama_app(calls)
    tags = json.loads((FIXTURES / "tags.json").read_text())
    tags["models"].append({**tags["models"][0], "name": "vanished:1b", "model": "vanished:1b"})

    async def more_tags(_request: Request) -> JSONResponse:
        return JSONResponse(tags)

    app.router.routes.insert(0, Route("/api/tags", more_tags))
    before = registry_state(catalog)
    with (
        serve_app(app) as url,
        pytest.raises(ImportFailed, match=rf"^{url}/api/show: answered HTTP 404"),
    ):
        run(catalog, "ollama", url, apply=True)

    assert registry_state(catalog) == before  # the three readable models were not imported


# --- OpenAI-compatible -----------------------------------------------------------------------


def test_vllm_models_become_deployments_and_a_lora_adapter_is_adapter_of(
    catalog: Engine,
) -> None:
    with serve_app(vllm_app()) as url:
        result = run(catalog, "openai", f"{url}/v1", apply=True)

    base = read(catalog, "deployment", "served-Qwen-Qwen2.5-7B-Instruct")
    assert base["model"] == QWEN  # the served id is the catalog id: the same model
    assert (base["endpoint_url"], base["upstream_model"]) == (f"{url}/v1", QWEN)
    adapter = read(catalog, "model", "served/sql-lora")
    assert adapter["lineage"] == [{"relation": "adapter_of", "model": QWEN}]
    assert adapter["claims"]["lineage"]["source"] == (
        f"openai:{url}/v1/models#data[id=sql-lora].parent"
    )
    assert read(catalog, "deployment", "served-sql-lora")["model"] == "served/sql-lora"
    same = [m for m in result.plan.matches if m["relation"] == "same"]
    assert [(m["model"], m["rule"]) for m in same] == [(QWEN, "exact_id")]


@pytest.fixture(scope="module")
def local_model() -> Iterator[LocalModelServer]:
    with LocalModelServer() as server:
        yield server


@pytest.mark.slow
def test_xllamacpp_server_models_are_imported_as_deployments(
    catalog: Engine, local_model: LocalModelServer
) -> None:
    result = run(catalog, "openai", local_model.base_url, apply=True)

    (deployment,) = [e for e in result.to_dict()["entries"] if e["kind"] == "deployment"]
    stored = read(catalog, "deployment", deployment["id"])
    assert stored["endpoint_url"] == local_model.base_url.rstrip("/")
    assert stored["review_status"] == "under_review"
    served = read(catalog, "model", stored["model"])
    assert served["parameters_total"] == 134515008  # llama.cpp's meta.n_params of the GGUF
    assert served["context_length"] == 8192  # meta.n_ctx_train
    assert served["claims"]["parameters_total"]["source"].endswith(".meta.n_params")
    assert result.plan.observed[stored["model"]] == {"quantization": "Q4_1"}
