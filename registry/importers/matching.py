"""Matching what an artifact calls itself to the registry's models (the catalog), by explicit
rules, strongest first. Pure functions over plain data.

| rule | compares | confidence |
|---|---|---|
| ``exact_id`` | a name of the form ``org/name`` with a registry model id, ignoring case | high |
| ``ollama_tag`` | an Ollama tag *and* its reported family with the table below | high |
| ``normalised_name`` | the name part in lower-case letters and digits, with the ids' | medium |

``normalised_name`` compares ``SmolLM2-135M`` and ``smollm2_135m`` as equal; an org part,
when the artifact gives one, narrows its candidates to that org's.

A rule that finds one model is a match; one that finds several is *ambiguous*: listed for the
admin, never applied. Names that match nothing are imported as new entries with no link.

Licenses and organizations are resolved the same way (exact id, the table of Hugging Face
license names, organization names and aliases); what resolves to nothing is left unset
(unknown, which fails closed) and said so in the diff.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from registry.vocabulary import normalise_license

Rule = Literal["exact_id", "ollama_tag", "normalised_name"]
CONFIDENCE: Mapping[str, str] = {
    "exact_id": "high",
    "ollama_tag": "high",
    "normalised_name": "medium",
}

# Ollama library tags whose weights are a known catalog model, keyed by (tag, the family
# /api/show reports): a tag that Ollama later points at other weights (``deepseek-r1:8b`` is
# DeepSeek-R1-0528-Qwen3-8B since May 2025, family ``qwen3``) then no longer matches.
OLLAMA_TAGS: Mapping[tuple[str, str], str] = {
    ("deepseek-r1:8b", "llama"): "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
    ("deepseek-r1:7b", "qwen2"): "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
    ("llama3.1:8b", "llama"): "meta-llama/Llama-3.1-8B-Instruct",
    ("qwen2.5:7b", "qwen2"): "Qwen/Qwen2.5-7B-Instruct",
    ("qwen2.5:72b", "qwen2"): "Qwen/Qwen2.5-72B-Instruct",
    ("qwen3:8b", "qwen3"): "Qwen/Qwen3-8B",
    ("smollm2:135m", "llama"): "HuggingFaceTB/SmolLM2-135M-Instruct",
    ("mistral:7b", "llama"): "mistralai/Mistral-7B-Instruct-v0.3",
    ("gpt-oss:20b", "gptoss"): "openai/gpt-oss-20b",
    ("granite3.3:8b", "granite"): "ibm-granite/granite-3.3-8b-instruct",
    ("falcon3:7b", "llama"): "tiiuae/Falcon3-7B-Instruct",
    ("phi4:14b", "phi3"): "microsoft/Phi-4",
}

# Hugging Face's license names (a card's ``license``, or ``license_name`` with
# ``license: other``) for licenses the catalog lists under a LicenseRef id.
HF_LICENSES: Mapping[str, str] = {
    "llama3.1": "LicenseRef-Llama-3.1-Community",
    "llama3.2": "LicenseRef-Llama-3.2-Community",
    "gemma": "LicenseRef-Gemma-Terms",
    "qwen": "LicenseRef-Qwen",
    "deepseek": "LicenseRef-DeepSeek-Model",
    "mrl": "LicenseRef-Mistral-Research",
}

_NOT_ALNUM = re.compile(r"[^a-z0-9]+")


def normalised(name: str) -> str:
    return _NOT_ALNUM.sub("", name.lower())


@dataclass(frozen=True, slots=True)
class Match:
    name: str  # what the artifact called it
    model: str  # the registry model id
    rule: Rule

    @property
    def confidence(self) -> str:
        return CONFIDENCE[self.rule]


@dataclass(frozen=True, slots=True)
class Ambiguous:
    name: str
    candidates: tuple[str, ...]
    rule: Rule


class RegistryModels:
    """The registry's models (public dicts) indexed for the rules."""

    def __init__(self, models: Iterable[Mapping[str, Any]]) -> None:
        self.by_id: dict[str, Mapping[str, Any]] = {m["id"]: m for m in models}
        self._folded = {key.lower(): key for key in self.by_id}
        self._by_name: dict[str, list[str]] = {}
        for key in self.by_id:
            self._by_name.setdefault(normalised(key.split("/", 1)[1]), []).append(key)

    def exact(self, name: str) -> str | None:
        return self._folded.get(name.lower())

    def named(self, name: str) -> list[str]:
        org, _, bare = name.rpartition("/")
        found = self._by_name.get(normalised(bare), [])
        same_org = [
            key for key in found if org and normalised(key.split("/")[0]) == normalised(org)
        ]
        return same_org or list(found)


def match_model(
    names: Iterable[str], models: RegistryModels, *, ollama_tag: str | None, family: str | None
) -> Match | Ambiguous | None:
    """The first rule that finds something, in the order of the table above."""
    names = tuple(names)
    for name in names:
        if "/" in name and (hit := models.exact(name)) is not None:
            return Match(name, hit, "exact_id")
    if ollama_tag is not None and family is not None:
        target = OLLAMA_TAGS.get((_bare_tag(ollama_tag), family.lower()))
        if target is not None and (hit := models.exact(target)) is not None:
            return Match(ollama_tag, hit, "ollama_tag")
    for name in names:
        found = models.named(name)
        if len(found) == 1:
            return Match(name, found[0], "normalised_name")
        if len(found) > 1:
            return Ambiguous(name, tuple(sorted(found)), "normalised_name")
    return None


def _bare_tag(tag: str) -> str:
    """``registry.ollama.ai/library/qwen2.5:7b`` -> ``qwen2.5:7b``."""
    return tag.lower().rsplit("/", 1)[-1]


def resolve_license(value: str, licenses: Iterable[str]) -> str | None:
    """A registry license id for what an artifact declares, or None."""
    folded = {key.lower(): key for key in licenses}
    candidates = [value, HF_LICENSES.get(value.lower(), ""), f"LicenseRef-{value}"]
    with contextlib.suppress(ValueError):
        candidates.insert(1, normalise_license(value))
    for candidate in candidates:
        if candidate and candidate.lower() in folded:
            return folded[candidate.lower()]
    return None


def resolve_organization(
    name: str, organizations: Iterable[Mapping[str, Any]], models: RegistryModels
) -> str | None:
    """An organization id for a name an artifact gives (``HuggingFaceTB``, ``Meta``): its
    id, legal name or an alias, ignoring case and punctuation; else the one developer of the
    registry's models published under that name (``HuggingFaceTB/...`` -> ``huggingface``)."""
    wanted = normalised(name)
    for org in organizations:
        spellings = [org["id"], org.get("name") or "", *(org.get("aliases") or [])]
        if wanted and any(normalised(s) == wanted for s in spellings):
            return str(org["id"])
    developers = {
        m.get("developer")
        for key, m in models.by_id.items()
        if normalised(key.split("/")[0]) == wanted and m.get("developer")
    }
    return str(developers.pop()) if len(developers) == 1 else None
