"""Files on disk: Hugging Face snapshot folders and LiteLLM proxy ``config.yaml`` files.

- **Hugging Face snapshot**: the model card's YAML front matter (``README.md``: ``license``,
  ``license_name``, ``base_model``, ``base_model_relation``) and ``config.json``
  (``max_position_embeddings``, ``model_type``). The model id comes from the hub cache layout
  (``models--ORG--NAME/snapshots/REV``: id ``ORG/NAME``, revision ``REV``), else from
  ``config.json``'s ``_name_or_path`` when it is ``org/name``, else ``hf/<folder>``. A snapshot
  *is* its model (``same``): when the registry has that id, nothing new is written.
  ``base_model_relation`` maps ``finetune``/``adapter``/``quantized``/``merge`` to
  ``finetune_of``/``adapter_of``/``quantized_from``/``merge_of``; without it, Hugging Face's
  own reading applies (an ``adapter_config.json``: adapter; several bases: merge; else
  finetune).
- **LiteLLM**: every ``model_list`` entry is a deployment (``litellm_params.model``: OpenAI
  fast path for ``openai/``/``hosted_vllm/`` with an ``api_base``, else the ``litellm``
  adapter with the whole model string), every ``model_name`` a route over its deployments
  (``order`` first), ``fallbacks`` appended to a route's candidates, ``routing_strategy``
  mapped where we have the strategy. ``api_key: os.environ/NAME`` becomes ``secret_ref: NAME``;
  a literal key is never stored (a warning says so).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from registry.importers.errors import ImportFailed
from registry.importers.found import (
    Discovery,
    Fact,
    FoundDeployment,
    FoundModel,
    FoundRoute,
    Parent,
    model_key,
    slug,
)
from registry.snapshot import Relation
from registry.validation import ENV_VAR_RE, MODEL_ID_RE, ROUTE_NAME_RE

HF_RELATIONS: dict[str, Relation] = {
    "finetune": "finetune_of",
    "adapter": "adapter_of",
    "quantized": "quantized_from",
    "merge": "merge_of",
}
STRATEGIES = {"simple-shuffle": "weighted", "latency-based-routing": "least-latency"}
OPENAI_PROVIDERS = {"openai", "hosted_vllm"}
ENV_PREFIX = "os.environ/"


# --------------------------------------------------------------------------- Hugging Face


def discover_hf(location: str) -> Discovery:
    folder = Path(location).expanduser().absolute()
    if not folder.is_dir():
        raise ImportFailed(str(folder), "not a folder (a Hugging Face snapshot is one)")
    card, config = _front_matter(folder / "README.md"), _config(folder / "config.json")
    if not card and not config:
        raise ImportFailed(str(folder), "neither a model card (README.md) nor a config.json")
    model_id, revision = _snapshot_id(folder, config)
    readme, config_file = f"hf:{folder / 'README.md'}", f"hf:{folder / 'config.json'}"
    found = FoundModel(key=model_id, artifact=f"hf:{folder}", names=(model_id,), kinship="same")
    found.facts["name"] = Fact(model_id.split("/", 1)[1], f"hf:{folder}#folder")
    if revision:
        found.facts["revision"] = Fact(revision, f"hf:{folder}#snapshot")
    license_name = card.get("license_name") if card.get("license") == "other" else None
    if license_name:
        found.facts["license"] = Fact(str(license_name), f"{readme}#license_name")
    elif card.get("license"):
        found.facts["license"] = Fact(str(card["license"]), f"{readme}#license")
    if isinstance(config.get("max_position_embeddings"), int):
        found.facts["context_length"] = Fact(
            config["max_position_embeddings"], f"{config_file}#max_position_embeddings"
        )
    if config.get("model_type"):
        found.facts["family"] = Fact(str(config["model_type"]), f"{config_file}#model_type")
    found.parents = _card_parents(card, folder, readme)
    discovery = Discovery(source="hf", location=str(folder), models=[found])
    return discovery


def _front_matter(readme: Path) -> dict[str, Any]:
    if not readme.is_file():
        return {}
    text = readme.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return {}
    block = text[3:].split("\n---", 1)
    if len(block) != 2:
        raise ImportFailed(str(readme), "the model card's front matter has no closing ---")
    data = _yaml(block[0], str(readme))
    return data if isinstance(data, dict) else {}


def _config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ImportFailed(str(path), f"malformed JSON ({exc})") from exc
    return data if isinstance(data, dict) else {}


def _snapshot_id(folder: Path, config: dict[str, Any]) -> tuple[str, str | None]:
    repo = folder.parent.parent.name if folder.parent.name == "snapshots" else ""
    if repo.startswith("models--") and repo.count("--") >= 2:
        org, name = repo.removeprefix("models--").split("--", 1)
        return f"{org}/{name}", folder.name
    named = str(config.get("_name_or_path") or "")
    if MODEL_ID_RE.fullmatch(named):
        return named, None
    return model_key("hf", folder.name), None


def _card_parents(card: dict[str, Any], folder: Path, readme: str) -> tuple[Parent, ...]:
    bases = card.get("base_model")
    names = [bases] if isinstance(bases, str) else [b for b in bases or [] if isinstance(b, str)]
    declared = card.get("base_model_relation")
    if declared in HF_RELATIONS:
        relation = HF_RELATIONS[declared]
    elif (folder / "adapter_config.json").is_file():
        relation = "adapter_of"
    else:
        relation = "merge_of" if len(names) > 1 else "finetune_of"
    return tuple(Parent(relation, name, f"{readme}#base_model") for name in names)


# --------------------------------------------------------------------------- LiteLLM


def discover_litellm(location: str) -> Discovery:
    path = Path(location).expanduser().absolute()
    if not path.is_file():
        raise ImportFailed(str(path), "no such file (or not a file)")
    config = _yaml(path.read_text(encoding="utf-8"), str(path))
    entries = config.get("model_list") if isinstance(config, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ImportFailed(str(path), "no model_list (a list of mappings)")
    discovery = Discovery(source="litellm", location=str(path))
    routes: dict[str, list[tuple[int, str]]] = {}
    for index, entry in enumerate(entries):
        deployment = _litellm_entry(discovery, path, index, entry)
        if deployment is not None:
            name, order = deployment
            routes.setdefault(entry["model_name"], []).append((order, name))
    _routes(discovery, path, config, routes)
    return discovery


def _litellm_entry(
    discovery: Discovery, path: Path, index: int, entry: dict[str, Any]
) -> tuple[str, int]:
    """One ``model_list`` entry as a deployment (and its model); returns the deployment id
    and its ``order`` (unordered last) for the route."""
    at = f"litellm:{path}#model_list[{index}]"
    params = entry.get("litellm_params")
    name = entry.get("model_name")
    if not isinstance(params, dict) or not isinstance(params.get("model"), str) or not name:
        raise ImportFailed(
            str(path), f"model_list[{index}]: needs model_name and litellm_params.model"
        )
    model = params["model"]
    provider, _, rest = model.partition("/")
    api_base = _value(discovery, params.get("api_base"), f"{at}.litellm_params.api_base")
    fast = provider in OPENAI_PROVIDERS and bool(rest) and api_base is not None
    deployment = FoundDeployment(
        _unused_id(discovery, f"litellm-{name}"), _litellm_model(discovery, model, at), at
    )
    facts, where = deployment.facts, f"{at}.litellm_params"
    facts["adapter"] = Fact("openai" if fast else "litellm", f"{where}.model")
    facts["upstream_model"] = Fact(rest if fast else model, f"{where}.model")
    if api_base is not None:
        facts["endpoint_url"] = Fact(api_base, f"{where}.api_base")
    secret = _secret_ref(discovery, params.get("api_key"), f"{where}.api_key")
    if secret is not None:
        facts["secret_ref"] = Fact(secret, f"{where}.api_key")
    _numbers(facts, params, where)
    discovery.deployments.append(deployment)
    order = params.get("order")
    return deployment.id, order if isinstance(order, int) else 10**6


def _litellm_model(discovery: Discovery, model: str, at: str) -> str:
    """The model a LiteLLM model string names (``provider/name``), once per discovery."""
    rest = model.partition("/")[2] or model
    found = FoundModel(
        key=model_key("litellm", rest),
        artifact=f"{at}.litellm_params.model",
        names=tuple(dict.fromkeys((rest, model))),
        kinship="same",
    )
    found.facts["name"] = Fact(rest, f"{at}.litellm_params.model")
    if not any(m.key == found.key for m in discovery.models):
        discovery.models.append(found)
    return found.key


def _unused_id(discovery: Discovery, wanted: str) -> str:
    """``wanted`` as a slug, then ``-2``, ``-3`` ... for more entries under one name."""
    taken = {d.id for d in discovery.deployments}
    candidate, count = slug(wanted), 1
    while candidate in taken:
        count += 1
        candidate = slug(f"{wanted}-{count}")
    return candidate


def _numbers(facts: dict[str, Fact], params: dict[str, Any], where: str) -> None:
    """``timeout`` (> 0), ``order`` (our priority: lower first) and ``weight`` (>= 0)."""
    timeout, order, weight = params.get("timeout"), params.get("order"), params.get("weight")
    if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0:
        facts["timeout_s"] = Fact(float(timeout), f"{where}.timeout")
    if isinstance(order, int) and not isinstance(order, bool):
        facts["priority"] = Fact(order, f"{where}.order")
    if isinstance(weight, int) and not isinstance(weight, bool) and weight >= 0:
        facts["weight"] = Fact(weight, f"{where}.weight")


def _value(discovery: Discovery, value: Any, where: str) -> str | None:
    """A plain setting; ``os.environ/NAME`` is resolved by LiteLLM at run time, not by us."""
    if value is None:
        return None
    text = str(value)
    if text.startswith(ENV_PREFIX):
        discovery.warnings.append(f"{where}: {text} is read from the environment: left unset")
        return None
    return text


def _secret_ref(discovery: Discovery, value: Any, where: str) -> str | None:
    """``os.environ/NAME`` -> ``NAME``; a literal key is never kept, not even in the diff."""
    if value is None:
        return None
    text = str(value)
    name = text.removeprefix(ENV_PREFIX) if text.startswith(ENV_PREFIX) else None
    if name is not None and ENV_VAR_RE.fullmatch(name):
        return name
    discovery.warnings.append(
        f"{where}: a literal API key is in the file; it was NOT imported. Put it in an "
        "environment variable and set the deployment's secret_ref to that variable's name"
    )
    return None


def _routes(
    discovery: Discovery,
    path: Path,
    config: dict[str, Any],
    routes: dict[str, list[tuple[int, str]]],
) -> None:
    settings = _mapping(config.get("router_settings"))
    where = f"litellm:{path}#router_settings"
    strategy = settings.get("routing_strategy")
    fact = None
    if strategy in STRATEGIES:
        fact = Fact(STRATEGIES[strategy], f"{where}.routing_strategy")
    elif strategy is not None:
        discovery.warnings.append(
            f"{where}.routing_strategy: {strategy!r} has no equivalent: routes use priority"
        )
    chains = {
        name: [d for _, d in sorted(found, key=lambda x: x[0])] for name, found in routes.items()
    }
    fallbacks = _fallbacks(config, settings)
    for name, deployments in chains.items():
        if not ROUTE_NAME_RE.fullmatch(name):
            discovery.warnings.append(
                f"litellm:{path}#model_list: model_name {name!r} is not a route name: skipped"
            )
            continue
        candidates = list(deployments)
        for other in fallbacks.get(name, []):
            candidates += [d for d in chains.get(other, []) if d not in candidates]
        discovery.routes.append(
            FoundRoute(name, tuple(candidates), f"litellm:{path}#model_list", fact)
        )


def _fallbacks(config: dict[str, Any], settings: dict[str, Any]) -> dict[str, list[str]]:
    """``fallbacks: [{gpt-4o: [claude, llama]}]`` from router_settings or litellm_settings."""
    litellm = _mapping(config.get("litellm_settings"))
    listed = settings.get("fallbacks") or litellm.get("fallbacks") or []
    chains: dict[str, list[str]] = {}
    for item in listed if isinstance(listed, list) else []:
        for name, others in item.items() if isinstance(item, dict) else ():
            chains.setdefault(str(name), []).extend(str(o) for o in others or [])
    return chains


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _yaml(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ImportFailed(where, f"malformed YAML{line} ({getattr(exc, 'problem', exc)})") from exc
