"""Field checks for registry writes, as pydantic ``Annotated`` types, and input reshaping.

Every check normalizes where the meaning is unambiguous (``de`` -> ``DE``, ``mit`` -> ``MIT``)
and raises ``ValueError`` otherwise; pydantic turns that into an error that names the field, and
the service turns that into :class:`registry.service.ValidationFailed`.

Reference data (ISO 3166-1 countries, EEA members, SPDX license ids) ships in ``registry/data/``;
it was generated once at dev time (see ``registry/data/README.md``) so nothing is downloaded at
run time and a registry validates the same way offline as online.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from importlib.resources import files
from typing import Annotated, Any

from pydantic import AfterValidator

_SLUG = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9])?"
SLUG_RE = re.compile(_SLUG)
MODEL_ID_RE = re.compile(rf"{_SLUG}/{_SLUG}")
# Route names are what clients send as ``model``: allow the shapes SDK users already type
# (``gpt-4o``, ``org/name``, Ollama-style ``llama3.1:8b``).
ROUTE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}")
LICENSE_REF_RE = re.compile(r"LicenseRef-[A-Za-z0-9.-]+")
# A secret reference must look like an environment variable name. This is what stops a pasted
# API key from ever being stored: real keys contain characters or shapes no env var name has.
ENV_VAR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
URL_RE = re.compile(r"https?://[^\s/$.?#][^\s]*", re.IGNORECASE)


def _load(name: str) -> Any:
    return json.loads(files("registry").joinpath("data", name).read_text(encoding="utf-8"))


@cache
def country_codes() -> frozenset[str]:
    """The 249 ISO 3166-1 alpha-2 codes."""
    return frozenset(row["code"] for row in _load("countries.json")["countries"])


@cache
def eea_countries() -> frozenset[str]:
    """EEA members: the 27 EU member states plus Iceland, Liechtenstein and Norway."""
    return frozenset(_load("countries.json")["eea"])


@cache
def spdx_ids() -> Mapping[str, str]:
    """SPDX license ids keyed by their lower-case form (SPDX ids match case-insensitively)."""
    return {row["id"].lower(): row["id"] for row in _load("spdx_licenses.json")["licenses"]}


def check_country(value: str) -> str:
    code = value.strip().upper()
    if code not in country_codes():
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code")
    return code


def check_license_id(value: str) -> str:
    if LICENSE_REF_RE.fullmatch(value):
        return value
    canonical = spdx_ids().get(value.lower())
    if canonical is None:
        raise ValueError(f"{value!r} is not an SPDX license id or LicenseRef-[A-Za-z0-9.-]+")
    return canonical


def _pattern_check(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


Country = Annotated[str, AfterValidator(check_country)]
LicenseId = Annotated[str, AfterValidator(check_license_id)]
Slug = Annotated[
    str, _pattern_check(SLUG_RE, "a slug (letters, digits, '.', '_', '-'; at most 128)")
]
ModelId = Annotated[str, _pattern_check(MODEL_ID_RE, "a model id of the form org/name")]
RouteName = Annotated[
    str, _pattern_check(ROUTE_NAME_RE, "a route name (letters, digits, '.', '_', ':', '/', '-')")
]
EnvVarName = Annotated[
    str,
    _pattern_check(ENV_VAR_RE, "an environment variable name (the secret's name, not the secret)"),
]
Url = Annotated[str, _pattern_check(URL_RE, "an http(s) URL")]


# The file format nests some deployment facts; the registry stores them as flat columns.
DEPLOYMENT_SECTIONS: Mapping[str, Mapping[str, str]] = {
    "location": {"country": "location_country", "region": "location_region", "eea": "location_eea"},
    "hardware": {
        "vendor": "hardware_vendor",
        "accelerator": "accelerator",
        "count": "accelerator_count",
    },
    "data_handling": {
        "retention_days": "retention_days",
        "zero_data_retention": "zero_data_retention",
        "trains_on_inputs": "trains_on_inputs",
    },
}


def flatten_deployment(data: Mapping[str, Any]) -> dict[str, Any]:
    """Accept the file format's nested ``location``/``hardware``/``data_handling`` sections."""
    flat = {k: v for k, v in data.items() if k not in DEPLOYMENT_SECTIONS}
    for section, columns in DEPLOYMENT_SECTIONS.items():
        nested = data.get(section)
        if nested is None:
            continue
        if not isinstance(nested, Mapping):
            raise ValueError(f"{section}: must be a mapping")
        for key, value in nested.items():
            flat[columns.get(key, f"{section}.{key}")] = value  # unknown keys fail as extras
    return flat
