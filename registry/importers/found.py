"""What a source reader found, before it is compared with the registry: plain data, no I/O.

    Discovery                      one source (a GGUF file or folder, a server, a config file)
    ├── models: FoundModel         a model an artifact describes, each fact with where it is
    ├── deployments: FoundDeployment   an endpoint serving one of those models
    ├── routes: FoundRoute         a public name -> deployments (LiteLLM's model_name)
    └── warnings                   what the reader saw and did not take (a literal API key)

Every fact is a :class:`Fact`: the value and the claim source naming the artifact and the field
it came from (``gguf:/models/x.gguf#general.license``). ``registry.importers.plan`` turns a
discovery into registry entries, matching the models against the registry's (the catalog).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from registry.snapshot import Relation

# How an artifact's model relates to the registry model it matches:
#   same     the artifact *is* that model (a served name, a snapshot): use the registry entry
#   derived  the artifact is a new model made from it (a quantized GGUF, an Ollama blob)
Kinship = Literal["same", "derived"]

_NOT_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class Fact:
    """One value and where it was read: ``source`` is ``<kind>:<artifact>#<field>``."""

    value: Any
    source: str


@dataclass(frozen=True, slots=True)
class Parent:
    """A lineage parent the metadata names (``base_model`` of a card, of a GGUF header)."""

    relation: Relation
    name: str  # a model id (org/name) or a name to match
    source: str


@dataclass(slots=True)
class FoundModel:
    """A model one artifact describes.

    ``key`` is the id a new registry entry gets; ``names`` are what the matcher compares with
    registry ids and names, strongest first; ``kinship`` says what a match means."""

    key: str
    artifact: str  # the entity's default claim source, e.g. ``gguf:/models/x.gguf``
    facts: dict[str, Fact] = field(default_factory=dict)
    names: tuple[str, ...] = ()
    kinship: Kinship = "derived"
    relation: Relation = "quantized_from"  # to the matched model, when derived
    parents: tuple[Parent, ...] = ()  # named by the metadata itself
    ollama_tag: str | None = None  # with facts["family"], for the known-tags table


@dataclass(slots=True)
class FoundDeployment:
    id: str
    model_key: str  # a FoundModel.key of the same discovery
    artifact: str
    facts: dict[str, Fact] = field(default_factory=dict)


@dataclass(slots=True)
class FoundRoute:
    name: str
    candidates: tuple[str, ...]  # deployment ids, in order
    artifact: str
    strategy: Fact | None = None


@dataclass(slots=True)
class Discovery:
    """Everything one source yielded."""

    source: str  # gguf | ollama | openai | hf | litellm
    location: str  # the path or URL the admin gave
    models: list[FoundModel] = field(default_factory=list)
    deployments: list[FoundDeployment] = field(default_factory=list)
    routes: list[FoundRoute] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def slug(text: str, *, limit: int = 100) -> str:
    """``text`` as an id part (letters, digits, ``.``, ``_``, ``-``): ``llama3.1:8b`` ->
    ``llama3.1-8b``."""
    cleaned = _NOT_SLUG.sub("-", text).strip("-._")[:limit].strip("-._")
    return cleaned or "model"


def model_key(namespace: str, name: str) -> str:
    """A model id for a new entry: ``namespace/slug(name)``."""
    return f"{slug(namespace, limit=60)}/{slug(name)}"


def size_in_parameters(label: str) -> int | None:
    """``135M`` -> 135_000_000, ``8.0B`` -> 8_000_000_000, ``1.5T``; anything else None
    (``8x7B`` expert counts are not a total we can state)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMBT])\s*", label, re.IGNORECASE)
    if match is None:
        return None
    scale = {"K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}[match.group(2).upper()]
    return round(float(match.group(1)) * scale)
