"""Running servers: Ollama (``/api/tags``, ``/api/show``) and OpenAI-compatible servers
(``/v1/models``: vLLM, llama.cpp, SGLang, TGI), as found models and deployments.

Requests go only to the URL the admin gives, with a timeout; a server that cannot be reached,
answers an error status or does not answer the documented JSON is one ``ImportFailed`` naming
the URL, and nothing is imported.

- **Ollama**: each tag is a model of its own (Ollama's quantized blob), ``derived``
  (``quantized_from``) from its catalog match (``ollama_tag`` table, or a Hugging Face repo its
  modelfile's ``FROM hf.co/org/name`` names); family, parameter size (``general.parameter_count``
  when the server reports it), context length, license (recognised from its text) and the
  manifest digest (as ``revision``) are facts; a deployment per tag on ``<url>/v1``.
- **OpenAI-compatible**: each listed id is a deployment on ``<url>/v1``; its model is the
  registry model the id (or vLLM's ``root``) names exactly (``same``), else a new entry. An id
  with vLLM's ``parent`` is a LoRA adapter: a model ``adapter_of`` the parent's model.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import httpx

from registry.importers.errors import ImportFailed
from registry.importers.found import (
    Discovery,
    Fact,
    FoundDeployment,
    FoundModel,
    Parent,
    model_key,
    slug,
)

# Licenses recognised from the first words of a license text (Ollama's ``license``).
LICENSE_TEXTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE | re.DOTALL), license_id)
    for pattern, license_id in (
        (r"^\s*apache license\s+version 2\.0", "Apache-2.0"),
        (r"^\s*(?:the )?mit license", "MIT"),
        (r"^\s*llama 3\.1 community license", "LicenseRef-Llama-3.1-Community"),
        (r"^\s*llama 3\.2 community license", "LicenseRef-Llama-3.2-Community"),
        (r"^\s*gemma terms of use", "LicenseRef-Gemma-Terms"),
    )
)
_FROM_HF = re.compile(r"^FROM\s+(?:https?://)?(?:hf\.co|huggingface\.co)/([^/\s:]+/[^/\s:]+)", re.M)


def discover_ollama(url: str, *, timeout_s: float, prefix: str = "ollama") -> Discovery:
    base = url.rstrip("/")
    discovery = Discovery(source="ollama", location=base)
    with _client(timeout_s) as client:
        tags = _get_json(client, "GET", f"{base}/api/tags")
        for item in _list(tags, "models", f"{base}/api/tags"):
            name = str(item.get("name") or item.get("model") or "")
            if not name:
                raise ImportFailed(f"{base}/api/tags", "a model without a name")
            show = _get_json(client, "POST", f"{base}/api/show", {"model": name})
            _ollama_model(discovery, base, prefix, item, show)
    return discovery


def _ollama_model(
    discovery: Discovery, base: str, prefix: str, item: dict[str, Any], show: Any
) -> None:
    name = str(item.get("name") or item.get("model"))
    if not isinstance(show, dict):
        raise ImportFailed(f"{base}/api/show", f"{name}: the answer is not a JSON object")
    shown = f"ollama:{base}/api/show?model={quote(name)}"
    listed = f"ollama:{base}/api/tags#models[name={name}]"
    found = FoundModel(
        key=model_key(prefix, name),
        artifact=shown,
        # the tag itself is matched by the table only: Ollama tags name instruct models the
        # way the catalog names base models (``qwen2.5:7b`` is Qwen2.5-7B-Instruct)
        names=tuple(_FROM_HF.findall(str(show.get("modelfile") or ""))),
        kinship="derived",
        relation="quantized_from",
        ollama_tag=name,
    )
    found.facts["name"] = Fact(name, listed)
    if item.get("digest"):
        found.facts["revision"] = Fact(str(item["digest"]), f"{listed}.digest")
    _ollama_facts(found, _mapping(show.get("details") or item.get("details")), shown)
    _ollama_info(found, _mapping(show.get("model_info")), shown)
    license_id = _license_of(str(show.get("license") or ""))
    if license_id is not None:
        found.facts["license"] = Fact(license_id, f"{shown}#license")
    elif show.get("license"):
        discovery.warnings.append(f"{name}: license text not recognised ({shown}#license)")
    discovery.models.append(found)
    deployment = FoundDeployment(id=slug(f"{prefix}-{name}"), model_key=found.key, artifact=shown)
    _deploy(deployment, f"{base}/v1", name, listed)
    discovery.deployments.append(deployment)


def _ollama_facts(found: FoundModel, details: dict[str, Any], shown: str) -> None:
    """``details``: family, quantization, parameter size."""
    for fact, key in (
        ("family", "family"),
        ("quantization", "quantization_level"),
        ("size_label", "parameter_size"),
    ):
        _put(found, fact, details.get(key), f"{shown}#details.{key}")


def _ollama_info(found: FoundModel, info: dict[str, Any], shown: str) -> None:
    """``model_info`` (the GGUF header): the exact parameter count, the context length."""
    count = info.get("general.parameter_count")
    if isinstance(count, int) and not isinstance(count, bool):
        found.facts["parameters_total"] = Fact(count, f"{shown}#model_info.general.parameter_count")
    context = f"{info.get('general.architecture')}.context_length"
    _put(found, "context_length", info.get(context), f"{shown}#model_info.{context}")


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _license_of(text: str) -> str | None:
    for pattern, license_id in LICENSE_TEXTS:
        if pattern.search(text[:400]):
            return license_id
    return None


def discover_openai(url: str, *, timeout_s: float, prefix: str = "served") -> Discovery:
    base = url.rstrip("/").removesuffix("/v1")
    listing = f"{base}/v1/models"
    discovery = Discovery(source="openai", location=base)
    with _client(timeout_s) as client:
        entries = _list(_get_json(client, "GET", listing), "data", listing)
    served = {str(e.get("id")): e for e in entries if e.get("id")}
    # bases first: an adapter's parent must be planned before it
    for model_id, entry in sorted(served.items(), key=lambda kv: bool(kv[1].get("parent"))):
        source = f"openai:{listing}#data[id={model_id}]"
        found = FoundModel(key=model_key(prefix, model_id), artifact=source, kinship="same")
        root = entry.get("root")
        found.names = tuple(str(n) for n in (root, model_id) if n)
        found.facts["name"] = Fact(model_id, f"{source}.id")
        _put(found, "context_length", entry.get("max_model_len"), f"{source}.max_model_len")
        _llama_cpp_meta(found, entry.get("meta"), source)
        parent = entry.get("parent")
        if parent:
            parent_key = model_key(prefix, str(parent))
            found.kinship, found.names = "derived", ()
            found.parents = (Parent("adapter_of", parent_key, f"{source}.parent"),)
        discovery.models.append(found)
        deployment = FoundDeployment(slug(f"{prefix}-{model_id}"), found.key, source)
        _deploy(deployment, f"{base}/v1", model_id, f"{source}.id")
        discovery.deployments.append(deployment)
    return discovery


def _llama_cpp_meta(found: FoundModel, meta: Any, source: str) -> None:
    """llama.cpp's server describes the GGUF it serves under ``meta``."""
    if not isinstance(meta, dict):
        return
    if isinstance(meta.get("n_ctx_train"), int):
        found.facts["context_length"] = Fact(meta["n_ctx_train"], f"{source}.meta.n_ctx_train")
    if isinstance(meta.get("n_params"), int):
        found.facts["parameters_total"] = Fact(meta["n_params"], f"{source}.meta.n_params")
    _put(found, "quantization", meta.get("ftype"), f"{source}.meta.ftype")


def _deploy(deployment: FoundDeployment, endpoint: str, upstream: str, source: str) -> None:
    deployment.facts["adapter"] = Fact("openai", source)
    deployment.facts["endpoint_url"] = Fact(endpoint, source)
    deployment.facts["upstream_model"] = Fact(upstream, source)


def _put(found: FoundModel, name: str, value: Any, source: str) -> None:
    if value is not None and value != "":
        found.facts[name] = Fact(value, source)


def _client(timeout_s: float) -> httpx.Client:
    # no redirects (only the URL given is fetched), no proxies from the environment
    return httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False)


def _get_json(client: httpx.Client, method: str, url: str, body: Any = None) -> Any:
    try:
        response = client.request(method, url, json=body)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise ImportFailed(url, f"cannot reach the server ({type(exc).__name__}: {exc})") from exc
    if response.status_code != 200:
        raise ImportFailed(url, f"answered HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError as exc:
        raise ImportFailed(url, "the answer is not JSON") from exc


def _list(document: Any, key: str, url: str) -> list[dict[str, Any]]:
    items = document.get(key) if isinstance(document, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ImportFailed(url, f'the answer has no "{key}" list')
    return items
