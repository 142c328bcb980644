"""Field checks for registry writes, as pydantic ``Annotated`` types, and input reshaping.

Every check normalizes to the canonical spelling of ``registry.vocabulary`` where the meaning is
unambiguous (``de`` -> ``DE``, ``mit`` -> ``MIT``, ``Huawei Technologies`` -> ``huawei``) and
raises ``ValueError`` (with "did you mean") otherwise; pydantic turns that into an error that
names the field, and the service turns that into :class:`registry.service.ValidationFailed`.

Reference data (ISO 3166-1 countries, EEA members, SPDX license ids) ships in ``registry/data/``;
it was generated once at dev time (see ``registry/data/README.md``) so nothing is downloaded at
run time and a registry validates the same way offline as online.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator

from registry.vocabulary import (
    LICENSE_REF_RE,
    country_codes,
    eea_countries,
    normalise_accelerator,
    normalise_country,
    normalise_hardware_vendor,
    normalise_license,
    normalise_slug,
    spdx_ids,
)

__all__ = ["LICENSE_REF_RE", "country_codes", "eea_countries", "spdx_ids"]

_SLUG = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9])?"
SLUG_RE = re.compile(_SLUG)
MODEL_ID_RE = re.compile(rf"{_SLUG}/{_SLUG}")
# Route names are what clients send as ``model``: allow the shapes SDK users already type
# (``gpt-4o``, ``org/name``, Ollama-style ``llama3.1:8b``).
ROUTE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}")
# A secret reference must look like an environment variable name. This is what stops a pasted
# API key from ever being stored: real keys contain characters or shapes no env var name has.
ENV_VAR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
URL_RE = re.compile(r"https?://[^\s/$.?#][^\s]*", re.IGNORECASE)


def check_country(value: str) -> str:
    return normalise_country(value)


def check_license_id(value: str) -> str:
    return normalise_license(value)


def check_region(value: str) -> str:
    return normalise_slug(value, "region")


def check_purpose(value: str) -> str:
    return normalise_slug(value, "purpose")


def _pattern_check(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


Country = Annotated[str, AfterValidator(check_country)]
LicenseId = Annotated[str, AfterValidator(check_license_id)]
HardwareVendor = Annotated[str, AfterValidator(normalise_hardware_vendor)]
Accelerator = Annotated[str, AfterValidator(normalise_accelerator)]
Region = Annotated[str, AfterValidator(check_region)]
Purpose = Annotated[str, AfterValidator(check_purpose)]
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
