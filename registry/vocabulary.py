"""Vocabularies: the one canonical spelling of every fact a policy can compare.

A rule can only mean what it says if the registry and the rule spell a fact the same way, so
both go through the same functions here:

- **countries**: ISO 3166-1 alpha-2, upper case (``de`` -> ``DE``); a few well-known non-ISO
  spellings map to their code (``UK`` -> ``GB``, ``EL`` -> ``GR``) and so do country names
  (``Germany`` -> ``DE``);
- **licenses**: SPDX ids in SPDX's own spelling (``mit`` -> ``MIT``), or ``LicenseRef-*``;
- **hardware vendors and accelerators**: ``registry/data/hardware.yaml`` (``Huawei
  Technologies`` -> ``huawei``, ``Ascend 910B`` -> ``ascend-910b``, ``NVIDIA H100`` -> ``h100``);
  every accelerator belongs to one vendor;
- **named sanctions and export lists**: ``registry/data/listings.yaml`` (``Entity List`` ->
  ``us-entity-list``), each with its official name and URL;
- **regions, purposes and behavioural-restriction topics**: lower-case slugs
  (``EU-Central-1`` -> ``eu-central-1``).

Matching ignores case, spaces and punctuation. A value that maps to nothing raises
``ValueError`` whose message lists the closest accepted spellings ("did you mean"); callers turn
it into a validation error (writes, policies) or into *unknown* (stored data that no longer
maps: it fails closed, it is never kept as text that no rule matches).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

import yaml

LICENSE_REF_RE = re.compile(r"LicenseRef-[A-Za-z0-9.-]+")

_NOT_ALNUM = re.compile(r"[^0-9a-z]+")
SLUG_TEXT = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")
# Country spellings that are common but not ISO 3166-1 alpha-2.
COUNTRY_ALIASES = {"UK": "GB", "EL": "GR"}


def squash(text: str) -> str:
    """The matching key of a spelling: lower case, letters and digits only."""
    return _NOT_ALNUM.sub("", text.lower())


def did_you_mean(value: str, choices: Iterable[str], *, n: int = 3) -> str:
    """`` (did you mean 'a' or 'b'?)`` for the closest choices, or nothing."""
    by_lower = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(value.lower(), list(by_lower), n=n, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(by_lower[c]) for c in close) + "?)"


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """Canonical values and every accepted spelling of each (matched by ``squash``)."""

    what: str  # how errors name it, e.g. "a known hardware vendor"
    canonical: tuple[str, ...]
    index: Mapping[str, str]  # squash(spelling) -> canonical value
    spellings: tuple[str, ...] = ()  # every listed spelling, as listed (for documentation)

    def lookup(self, value: str) -> str | None:
        """The canonical value ``value`` spells, or None."""
        return self.index.get(squash(value))

    def normalise(self, value: str) -> str:
        """The canonical value; ValueError naming the accepted values otherwise."""
        canonical = self.lookup(value)
        if canonical is None:
            hint = did_you_mean(value, self.canonical) or (
                f"; accepted: {', '.join(self.canonical)}" if len(self.canonical) <= 30 else ""
            )
            raise ValueError(f"{value!r} is not {self.what}{hint}")
        return canonical


def _vocabulary(what: str, spellings: Mapping[str, Iterable[str]]) -> Vocabulary:
    """``spellings`` maps each canonical value to its aliases; a clash is a data error."""
    index: dict[str, str] = {}
    listed: dict[str, None] = {}
    for canonical, aliases in spellings.items():
        for spelling in (canonical, *aliases):
            key = squash(spelling)
            if index.setdefault(key, canonical) != canonical:
                raise ValueError(f"{what} spelling {spelling!r} names two values")
            listed[spelling] = None
    return Vocabulary(what, tuple(spellings), index, tuple(listed))


def _load(name: str) -> Any:
    return json.loads(files("registry").joinpath("data", name).read_text(encoding="utf-8"))


@cache
def country_codes() -> frozenset[str]:
    """The 249 ISO 3166-1 alpha-2 codes."""
    return frozenset(row["code"] for row in _load("countries.json")["countries"])


@cache
def country_names() -> Mapping[str, str]:
    """ISO code -> English short name."""
    return {row["code"]: row["name"] for row in _load("countries.json")["countries"]}


@cache
def eea_countries() -> frozenset[str]:
    """EEA members: the 27 EU member states plus Iceland, Liechtenstein and Norway."""
    return frozenset(_load("countries.json")["eea"])


@cache
def spdx_ids() -> Mapping[str, str]:
    """SPDX license ids keyed by their lower-case form (SPDX ids match case-insensitively)."""
    return {row["id"].lower(): row["id"] for row in _load("spdx_licenses.json")["licenses"]}


@cache
def _hardware() -> dict[str, Any]:
    text = files("registry").joinpath("data", "hardware.yaml").read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


@cache
def hardware_vendors() -> Vocabulary:
    vendors = _hardware()["vendors"]
    return _vocabulary(
        "a known hardware vendor", {v: [row["name"], *row["aliases"]] for v, row in vendors.items()}
    )


@cache
def accelerators() -> Vocabulary:
    """Accelerators; each may also be written with its vendor in front (``NVIDIA H100``)."""
    rows = _hardware()["accelerators"]
    vendors = _hardware()["vendors"]
    spellings: dict[str, list[str]] = {}
    for name, row in rows.items():
        vendor = row["vendor"]
        own = [name, *row["aliases"]]
        prefixes = [vendor, vendors[vendor]["name"], *vendors[vendor]["aliases"]]
        spellings[name] = own + [f"{p} {s}" for p in prefixes for s in own]
    return _vocabulary("a known accelerator", spellings)


@cache
def _listings() -> dict[str, Any]:
    text = files("registry").joinpath("data", "listings.yaml").read_text(encoding="utf-8")
    lists: dict[str, Any] = yaml.safe_load(text)["lists"]
    return lists


@cache
def named_lists() -> Vocabulary:
    """Sanctions and export lists; a name outside it is refused listing every accepted one."""
    rows = _listings()
    return _vocabulary(
        "a known sanctions or export list", {k: r["aliases"] for k, r in rows.items()}
    )


def named_list_info(name: str) -> tuple[str, str]:
    """Official name and URL of a canonical list."""
    row = _listings()[name]
    return str(row["name"]), str(row["url"])


def normalise_named_list(value: str) -> str:
    """The canonical list name; the error names every accepted list (there are few)."""
    vocabulary = named_lists()
    canonical = vocabulary.lookup(value)
    if canonical is None:
        hint = did_you_mean(value, vocabulary.canonical)
        accepted = ", ".join(vocabulary.canonical)
        raise ValueError(f"{value!r} is not {vocabulary.what}{hint}; accepted: {accepted}")
    return canonical


def normalise_topic(value: str) -> str:
    """Behavioural-restriction topics (``Tiananmen 1989`` -> ``tiananmen-1989``): open
    vocabulary, one spelling: lower case, runs of other characters become one '-'."""
    slug = re.sub(r"[^a-z0-9]+", "-", value.strip().lower()).strip("-")
    return normalise_slug(slug or value, "topic")


def accelerator_vendor(accelerator: str) -> str:
    """The vendor of a canonical accelerator."""
    return str(_hardware()["accelerators"][accelerator]["vendor"])


@cache
def countries() -> Vocabulary:
    spellings: dict[str, list[str]] = {code: [] for code in sorted(country_codes())}
    for code, name in country_names().items():
        spellings[code].append(name)
    for alias, code in COUNTRY_ALIASES.items():
        spellings[code].append(alias)
    for code in country_codes():
        spellings[code].append(code.lower())
    return _vocabulary("an ISO 3166-1 alpha-2 country code", spellings)


def normalise_country(value: str) -> str:
    return countries().normalise(value)


def normalise_license(value: str) -> str:
    """SPDX ids in SPDX's spelling; ``LicenseRef-*`` as written (ids match case-insensitively:
    rules compare their lower-case form)."""
    if LICENSE_REF_RE.fullmatch(value):
        return value
    canonical = spdx_ids().get(value.lower())
    if canonical is None:
        hint = did_you_mean(value, spdx_ids().values())
        raise ValueError(f"{value!r} is not an SPDX license id or LicenseRef-[A-Za-z0-9.-]+{hint}")
    return canonical


def normalise_hardware_vendor(value: str) -> str:
    return hardware_vendors().normalise(value)


def normalise_accelerator(value: str) -> str:
    return accelerators().normalise(value)


def normalise_slug(value: str, what: str) -> str:
    """Regions and purposes: lower case, letters, digits, '.', '_', '-'; at most 64."""
    slug = value.strip().lower()
    if not SLUG_TEXT.fullmatch(slug):
        raise ValueError(
            f"{value!r} is not a valid {what} (letters, digits, '.', '_', '-'; at most 64)"
        )
    return slug


def fold(value: str) -> str:
    """The form identifiers are compared in when their vocabulary is open (model, route,
    deployment and tenant ids, ``LicenseRef-*``, families, tags): lower case."""
    return value.lower()
