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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any

from annotated_types import Ge, Le
from pydantic import AfterValidator, BeforeValidator, GetJsonSchemaHandler, Strict
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from registry.vocabulary import (
    LICENSE_REF_RE,
    SLUG_TEXT,
    Vocabulary,
    accelerators,
    countries,
    country_codes,
    eea_countries,
    hardware_vendors,
    named_lists,
    normalise_accelerator,
    normalise_country,
    normalise_hardware_vendor,
    normalise_license,
    normalise_named_list,
    normalise_slug,
    normalise_topic,
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


check_country = normalise_country
check_license_id = normalise_license


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


@dataclass(frozen=True, slots=True)
class Documented:
    """The JSON schema of a checked string type (the OpenAPI document shows it): what the check
    *accepts*, aliases included, so a schema never refuses what the API takes. Computed when a
    schema is asked for: the vocabularies load lazily."""

    schema: Callable[[], dict[str, Any]]

    def __get_pydantic_json_schema__(
        self, _core_schema: CoreSchema, _handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", **self.schema()}


def _anchored(pattern: re.Pattern[str]) -> str:
    """A ``fullmatch`` pattern as a JSON Schema ``pattern`` (which matches anywhere)."""
    return f"^(?:{pattern.pattern})$"


def _matching(pattern: re.Pattern[str], description: str) -> Documented:
    return Documented(lambda: {"pattern": _anchored(pattern), "description": description})


VOCABULARY_KEY = "x-vocabulary"  # names a large schema an OpenAPI document may share once


def _spelled(vocabulary: Callable[[], Vocabulary], name: str, description: str) -> Documented:
    """Every listed spelling; the API also matches them ignoring case, spaces and punctuation,
    and stores the canonical one."""
    return Documented(
        lambda: {
            VOCABULARY_KEY: name,
            "enum": list(vocabulary().spellings),
            "description": f"{description}; matched ignoring case, spaces and punctuation, "
            "stored in canonical form",
        }
    )


def _license_schema() -> dict[str, Any]:
    ids = sorted({*spdx_ids().values(), *spdx_ids()})  # SPDX ids match ignoring case
    return {
        VOCABULARY_KEY: "LicenseId",
        "anyOf": [{"enum": ids}, {"pattern": _anchored(LICENSE_REF_RE)}],
        "description": "An SPDX license id (any case; stored in SPDX's spelling) or LicenseRef-*",
    }


_REGION_TEXT = Documented(
    lambda: {
        "pattern": rf"^\s*(?:{SLUG_TEXT.pattern.replace('[a-z0-9', '[A-Za-z0-9')})\s*$",
        "description": "A slug (letters, digits, '.', '_', '-'; at most 64); stored in lower case",
    }
)

Country = Annotated[
    str,
    AfterValidator(check_country),
    _spelled(countries, "Country", "An ISO 3166-1 alpha-2 country code (or the country's name)"),
]
LicenseId = Annotated[str, AfterValidator(check_license_id), Documented(_license_schema)]
HardwareVendor = Annotated[
    str,
    AfterValidator(normalise_hardware_vendor),
    _spelled(
        hardware_vendors, "HardwareVendor", "A hardware vendor of registry/data/hardware.yaml"
    ),
]
Accelerator = Annotated[
    str,
    AfterValidator(normalise_accelerator),
    _spelled(accelerators, "Accelerator", "An accelerator of registry/data/hardware.yaml"),
]
Region = Annotated[str, AfterValidator(check_region), _REGION_TEXT]
NamedList = Annotated[
    str,
    AfterValidator(normalise_named_list),
    _spelled(named_lists, "NamedList", "A sanctions or export list of registry/data/listings.yaml"),
]
Topic = Annotated[
    str,
    AfterValidator(normalise_topic),
    Documented(
        lambda: {
            "pattern": "[A-Za-z0-9]",  # at least one letter or digit (JSON Schema: anywhere)
            "maxLength": 64,
            "description": "A behavioural-restriction topic; stored as a lower-case slug "
            "(`Tiananmen 1989` -> `tiananmen-1989`)",
        }
    ),
]
Purpose = Annotated[str, AfterValidator(check_purpose), _REGION_TEXT]
_SLUG_TEXT = "a slug (letters, digits, '.', '_', '-'; at most 128)"
Slug = Annotated[str, _pattern_check(SLUG_RE, _SLUG_TEXT), _matching(SLUG_RE, _SLUG_TEXT)]
_MODEL_ID_TEXT = "a model id of the form org/name"
ModelId = Annotated[
    str, _pattern_check(MODEL_ID_RE, _MODEL_ID_TEXT), _matching(MODEL_ID_RE, _MODEL_ID_TEXT)
]
_ROUTE_TEXT = "a route name (letters, digits, '.', '_', ':', '/', '-')"
RouteName = Annotated[
    str, _pattern_check(ROUTE_NAME_RE, _ROUTE_TEXT), _matching(ROUTE_NAME_RE, _ROUTE_TEXT)
]
_ENV_TEXT = "an environment variable name (the secret's name, not the secret)"
EnvVarName = Annotated[str, _pattern_check(ENV_VAR_RE, _ENV_TEXT), _matching(ENV_VAR_RE, _ENV_TEXT)]
_URL_TEXT = "an http(s) URL"
_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s/$.?#]\S*$"  # URL_RE, case-insensitive
Url = Annotated[
    str,
    _pattern_check(URL_RE, _URL_TEXT),
    Documented(lambda: {"pattern": _URL_PATTERN, "description": _URL_TEXT}),
]


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIMESTAMP = re.compile(r"\s*[+-]?\d+(?:\.\d*)?\s*")


def _iso_date(value: object) -> object:
    """A date is ``YYYY-MM-DD`` (or a date from YAML): pydantic alone would also read 0,
    "1700000000" or a midnight datetime as a date, which the schema (``format: date``) refuses."""
    if isinstance(value, int | float) or (
        isinstance(value, str) and not _ISO_DATE.fullmatch(value)
    ):
        raise ValueError("must be a date written YYYY-MM-DD")
    return value


def _not_a_timestamp(value: object) -> object:
    """A moment is ISO 8601 text: pydantic alone would also read 0 or "1700000000" (Unix time),
    which the schema (``format: date-time``) refuses."""
    if isinstance(value, int | float) or (isinstance(value, str) and _TIMESTAMP.fullmatch(value)):
        raise ValueError("must be an ISO 8601 date-time such as 2026-01-31T12:00:00Z")
    return value


def _json_integer(value: object) -> object:
    """JSON integers only (``3``, or ``3.0``, which JSON Schema counts as one): pydantic alone
    would also take ``"3"`` and ``true``."""
    if isinstance(value, bool | str | bytes):
        raise ValueError("must be an integer")
    return value


class UniqueItems:
    """Documents ``uniqueItems`` on a list type whose check refuses duplicates."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema["uniqueItems"] = True
        return schema


# Values exactly of the JSON type the schema names: pydantic's lax mode would take 0 or "yes"
# for true and "3" for 3, which the OpenAPI document (``boolean``, ``integer``) refuses.
# Integers are bounded by the columns that store them (INTEGER is 32-bit on PostgreSQL).
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
Flag = Annotated[bool, Strict()]
INT32_MIN = -INT32_MAX - 1
# Bounds before the type check, so the JSON schema shows them as minimum/maximum (a field's own
# ``Field(ge=...)`` on top of a BeforeValidator would not be).
_INTEGER = BeforeValidator(_json_integer)
Int32 = Annotated[int, Ge(INT32_MIN), Le(INT32_MAX), _INTEGER]
Count32 = Annotated[int, Ge(0), Le(INT32_MAX), _INTEGER]
Positive32 = Annotated[int, Ge(1), Le(INT32_MAX), _INTEGER]
Count64 = Annotated[int, Ge(0), Le(INT64_MAX), _INTEGER]
Positive64 = Annotated[int, Ge(1), Le(INT64_MAX), _INTEGER]
Number = Annotated[float, Strict()]
Fraction = Annotated[float, Strict(), Ge(0), Le(1)]
Amount = Annotated[float, Strict(), Ge(0)]
Day = Annotated[date, BeforeValidator(_iso_date)]
Moment = Annotated[datetime, BeforeValidator(_not_a_timestamp)]


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
