"""Ready-made rule sets (``presets/*.yaml``), usable as they are or with parameters.

A policy includes presets by name, before its own rules::

    presets:
      - no-third-party-data-retention              # defaults
      - use: no-countries
        with: {countries: [CN, RU]}                # parameters are lists of strings
    rules: [...]

A preset file has a ``title``, a ``description``, ``params`` (each with a description and a
default list) and ``rules`` in the YAML rule format, where a value written ``$name`` is replaced
by the list given for parameter ``name``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from router.policy import yaml_source
from router.policy.errors import PolicyInvalid


@dataclass(frozen=True, slots=True)
class PresetParam:
    name: str
    description: str
    default: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Preset:
    """One preset as shipped: what it is for, its parameters, its rules (unexpanded)."""

    name: str
    title: str
    description: str
    params: tuple[PresetParam, ...]
    rules: tuple[Mapping[str, Any], ...]


def list_presets() -> tuple[Preset, ...]:
    """Every shipped preset, by name."""
    return tuple(load_preset(name) for name in _preset_names())


@cache
def _preset_names() -> tuple[str, ...]:
    folder = resources.files("router.policy").joinpath("presets")
    return tuple(
        sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))
    )


@cache
def load_preset(name: str) -> Preset:
    """The preset called ``name``; PolicyInvalid when there is none."""
    if name not in _preset_names():
        raise PolicyInvalid(f"unknown preset {name!r}; presets: {', '.join(_preset_names())}")
    path = resources.files("router.policy").joinpath("presets", f"{name}.yaml")
    document = yaml_source.safe_load(path.read_text(encoding="utf-8"))
    params = tuple(
        PresetParam(key, spec["description"], tuple(spec["default"]))
        for key, spec in (document.get("params") or {}).items()
    )
    return Preset(
        name, document["title"], document["description"], params, tuple(document["rules"])
    )


def preset_rules(name: str, params: Mapping[str, object] | None = None) -> list[dict[str, Any]]:
    """The rules of preset ``name`` with ``$param`` values replaced (defaults for the rest)."""
    preset = load_preset(name)
    values = {p.name: list(p.default) for p in preset.params}
    for key, value in (params or {}).items():
        if key not in values:
            known = ", ".join(values) or "none"
            raise PolicyInvalid(f"preset {name!r}: unknown parameter {key!r} (parameters: {known})")
        values[key] = _param_list(name, key, value)
    return [_substitute(rule, values) for rule in preset.rules]


def preset_policy_source(name: str, **params: Sequence[str]) -> str:
    """A YAML policy made of one preset, e.g. to start a policy from it in the admin UI."""
    use: dict[str, Any] = {"use": name}
    if params:
        use["with"] = {key: list(value) for key, value in params.items()}
    preset_rules(name, params)  # reject unknown names and parameters now
    return yaml.safe_dump({"presets": [use], "rules": []}, sort_keys=False)


def expand_presets(entries: object) -> list[dict[str, Any]]:
    """The rules of a policy's ``presets:`` list, in order."""
    if not isinstance(entries, list):
        raise PolicyInvalid("presets: expected a list of preset names or {use, with} mappings")
    rules: list[dict[str, Any]] = []
    for entry in entries:
        if isinstance(entry, str):
            rules += preset_rules(entry)
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("use"), str):
            raise PolicyInvalid(
                f"presets: expected a name or {{use: name, with: {{...}}}}, got {entry!r}"
            )
        if extra := set(entry) - {"use", "with"}:
            raise PolicyInvalid(f"presets: unknown key {sorted(extra)[0]!r} for {entry['use']!r}")
        given = entry.get("with") or {}
        if not isinstance(given, dict):
            raise PolicyInvalid(f"preset {entry['use']!r}: 'with' must map parameters to lists")
        rules += preset_rules(entry["use"], given)
    return rules


def _param_list(preset: str, key: str, value: object) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise PolicyInvalid(
            f"preset {preset!r}: parameter {key!r} must be a non-empty list of strings: {value!r}"
        )
    return list(items)


def _substitute(node: Any, values: Mapping[str, list[str]]) -> Any:
    """A copy of ``node`` where every string ``$name`` is replaced by ``values[name]``."""
    if isinstance(node, str) and node.startswith("$") and node[1:] in values:
        return list(values[node[1:]])
    if isinstance(node, dict):
        return {key: _substitute(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_substitute(item, values) for item in node]
    return node
