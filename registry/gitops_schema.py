"""The registry file format (``docs/registry-format.md``): YAML text in, validated entries out.

``parse_document`` reads one YAML document and returns a ``RegistryDocument``: per registry kind,
the entries in file order, each holding the **service fields the file sets**, already checked
and canonicalised by the service's own ``XUpdate`` models (``de`` -> ``DE``, ``mit`` -> ``MIT``),
plus the file line of every field so later errors can point at it. ``to_file_entry`` is the way
back, used by export. The fields of each section are those of ``registry.models`` (one list of
fields); the file adds only the nested ``location``/``hardware``/``data_handling`` sections of a
deployment and the ``secret_ref`` of an API key.

Every problem in a file is collected and raised at once as ``RegistryFileError``; each problem
reads ``line N: section[id].field: message``.

The YAML loader follows YAML 1.2 for booleans: only ``true``/``false`` are booleans, so
``commercial_use: yes`` stays the string ``"yes"`` and the country ``NO`` stays Norway.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime
from functools import cache
from typing import Annotated, Any, get_args

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from registry.models import SPECS, as_utc
from registry.service import RegistryError
from registry.validation import DEPLOYMENT_SECTIONS, EnvVarName

API_VERSION = "provenance-router/v1"

# File sections in dependency order: each may refer only to itself and to earlier ones.
SECTIONS: Mapping[str, str] = {
    "organizations": "organization",
    "licenses": "license",
    "models": "model",
    "deployments": "deployment",
    "routes": "route",
    "tenants": "tenant",
    "api_keys": "api_key",
}
SECTION_OF: Mapping[str, str] = {kind: section for section, kind in SECTIONS.items()}

# A deployment's nested sections in the file and the flat service fields they hold.
GROUPS: Mapping[str, Mapping[str, str]] = DEPLOYMENT_SECTIONS
PATH_OF_COLUMN: Mapping[str, str] = {
    column: f"{group}.{sub}" for group, subs in GROUPS.items() for sub, column in subs.items()
}
COLUMN_OF_PATH: Mapping[str, str] = {path: column for column, path in PATH_OF_COLUMN.items()}
INPUT_ONLY = frozenset({"raw_key"})  # service fields a file never holds
INSTANTS = frozenset({"expires_at"})  # points in time (not dates): compared in UTC
KEY_SECRET_REF = "secret_ref"  # api_keys only: NAME of the env var holding the raw key


class RegistryFileError(RegistryError):
    """A registry file is malformed or inconsistent; nothing was written.

    ``problems`` lists every problem found, each as ``line N: section[id].field: message``."""

    def __init__(self, problems: list[str] | tuple[str, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


# --------------------------------------------------------------------------- the YAML loader


class MarkedMap(dict[Any, Any]):
    """A YAML mapping that remembers its own line and the line of each of its keys (1-based)."""

    def __init__(self, line: int = 0) -> None:
        super().__init__()
        self.line = line
        self.lines: dict[Any, int] = {}


class _Loader(yaml.SafeLoader):
    """Safe loader with YAML 1.2 booleans, line-marked mappings and duplicate-key errors."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Iterator[MarkedMap]:
    loader.flatten_mapping(node)
    data = MarkedMap(node.start_mark.line + 1)
    yield data
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable) or key in data:
            problem = f"duplicate key {key!r}" if isinstance(key, Hashable) else "unhashable key"
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark, problem, key_node.start_mark
            )
        data[key] = loader.construct_object(value_node, deep=True)
        data.lines[key] = key_node.start_mark.line + 1


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def load_yaml(text: str) -> Any:
    """Load one YAML document; malformed YAML raises ``RegistryFileError`` with line and column."""
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = "; ".join(part for part in (exc.context, exc.problem) if part)
        raise RegistryFileError([f"{where}malformed YAML: {what}"]) from exc
    except yaml.YAMLError as exc:
        raise RegistryFileError([f"malformed YAML: {exc}"]) from exc


# --------------------------------------------------------------------------- fields per kind


def file_columns(kind: str) -> tuple[str, ...]:
    """The service fields a file entry may hold, in file order: key first, claims last."""
    spec = SPECS[kind]
    body = [c for c in spec.create.model_fields if c not in {spec.key, "claim", "claims"}]
    tail = [c for c in ("claim", "claims") if c in spec.create.model_fields]
    return tuple(c for c in (spec.key, *body, *tail) if c not in INPUT_ONLY)


def fact_columns(kind: str) -> frozenset[str]:
    """The fields a per-fact claim (``claims:``) may name."""
    return frozenset(file_columns(kind)) - {"id", "claim", "claims"}


def file_path(column: str) -> str:
    """How the file spells a service field (``location_country`` -> ``location.country``)."""
    return PATH_OF_COLUMN.get(column, column)


@cache
def _key_adapter(kind: str) -> TypeAdapter[str]:
    spec = SPECS[kind]
    info = spec.create.model_fields[spec.key]
    checks = [m for m in info.metadata if not type(m).__module__.startswith("sqlmodel")]
    annotation: Any = Annotated[(info.annotation, *checks)] if checks else info.annotation
    adapter: TypeAdapter[str] = TypeAdapter(annotation)
    return adapter


_ENV_VAR_NAME: TypeAdapter[str] = TypeAdapter(EnvVarName)


# --------------------------------------------------------------------------- parsed entries


@dataclass(frozen=True, slots=True)
class Entry:
    """One entity of the file: the service fields it sets (canonical values) and their lines."""

    kind: str
    id: str
    values: Mapping[str, Any]  # service field -> value, without the key; for Writer.create/update
    line: int
    lines: Mapping[str, int]  # service field -> line of the field in the file
    secret_ref: str | None = None  # api keys: env var holding the raw key
    origin: str = ""  # where the entry comes from when not the file being applied ("catalog")

    def where(self, column: str | None = None, *, name_field: bool = True) -> str:
        """``line N: section[id].field`` for messages (N: the field's line when known)."""
        line = self.lines.get(column, self.line) if column else self.line
        suffix = f".{file_path(column)}" if column and name_field else ""
        origin = f"{self.origin} " if self.origin else ""
        return f"{origin}line {line}: {SECTION_OF[self.kind]}[{self.id}]{suffix}"


@dataclass(frozen=True, slots=True)
class RegistryDocument:
    """A validated registry file: entries per kind in file order, and which sections it has."""

    entries: Mapping[str, tuple[Entry, ...]]  # kind -> entries
    sections: frozenset[str]  # kinds whose section is present in the file (the prune scope)

    def of(self, kind: str) -> tuple[Entry, ...]:
        return self.entries.get(kind, ())


def parse_document(text: str, *, origin: str = "") -> RegistryDocument:
    """Validate a registry file; raise ``RegistryFileError`` listing every problem.

    ``origin`` names the file in messages when it is not the one being applied."""
    raw = load_yaml(text)
    if not isinstance(raw, MarkedMap):
        raise RegistryFileError(["the file must be a YAML mapping with apiVersion and sections"])
    problems: list[str] = []
    _check_header(raw, problems)
    entries = {
        kind: _parse_section(section, kind, raw, problems)
        for section, kind in SECTIONS.items()
        if section in raw
    }
    if problems:
        raise RegistryFileError([f"{origin} {p}" if origin else p for p in problems])
    if origin:
        entries = {k: tuple(replace(e, origin=origin) for e in es) for k, es in entries.items()}
    return RegistryDocument(entries=entries, sections=frozenset(entries))


def _check_header(raw: MarkedMap, problems: list[str]) -> None:
    api_version = raw.get("apiVersion")
    if api_version != API_VERSION:
        line = raw.lines.get("apiVersion", raw.line)
        problems.append(f"line {line}: apiVersion must be {API_VERSION!r}, got {api_version!r}")
    for key in raw:
        if key != "apiVersion" and key not in SECTIONS:
            known = ", ".join(SECTIONS)
            problems.append(f"line {raw.lines[key]}: unknown section {key!r} (known: {known})")


def _parse_section(
    section: str, kind: str, raw: MarkedMap, problems: list[str]
) -> tuple[Entry, ...]:
    items = raw[section]
    if items is None:
        return ()
    if not isinstance(items, list):
        problems.append(f"line {raw.lines[section]}: {section} must be a list")
        return ()
    parsed: dict[str, Entry] = {}
    for index, item in enumerate(items):
        entry = _parse_item(kind, index, item, raw.lines[section], problems)
        if entry is None:
            continue
        if entry.id in parsed:
            first = parsed[entry.id].line
            problems.append(f"{entry.where()}: duplicate id (first defined on line {first})")
            continue
        parsed[entry.id] = entry
    return tuple(parsed.values())


@dataclass(slots=True)
class _ItemContext:
    """One file entry being parsed: where it is, and where its problems go."""

    kind: str
    label: str  # ``section[id]``
    item: MarkedMap
    problems: list[str]

    def problem(self, line: int | None, path: str, message: str) -> None:
        suffix = f".{path}" if path else ""
        self.problems.append(f"line {line or self.item.line}: {self.label}{suffix}: {message}")


def _parse_item(
    kind: str, index: int, item: Any, section_line: int, problems: list[str]
) -> Entry | None:
    section, spec = SECTION_OF[kind], SPECS[kind]
    if not isinstance(item, MarkedMap):
        problems.append(f"line {section_line}: {section}[{index}]: expected a mapping")
        return None
    raw_id = item.get(spec.key)
    label = f"{section}[{raw_id if isinstance(raw_id, str) else index}]"
    context = _ItemContext(kind, label, item, problems)
    fields, lines = _flatten(context)
    secret_ref = _pop_secret_ref(context, fields)
    entity_id = _validate_key(context, raw_id)
    values = _validate_fields(context, fields, lines)
    if entity_id is None or values is None:
        return None
    return Entry(kind, entity_id, values, item.line, lines, secret_ref)


def _flatten(context: _ItemContext) -> tuple[dict[str, Any], dict[str, int]]:
    """File shape -> flat service fields (without the key), with the line of each field."""
    key, item = SPECS[context.kind].key, context.item
    fields: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for name, value in item.items():
        if name == key:
            continue
        if context.kind == "deployment" and name in GROUPS:
            _flatten_group(context, name, fields, lines)
            continue
        if name == "claims" and isinstance(value, MarkedMap):
            value = _claims_columns(context, value)
        fields[name], lines[name] = value, item.lines[name]
    return fields, lines


def _flatten_group(
    context: _ItemContext, group: str, fields: dict[str, Any], lines: dict[str, int]
) -> None:
    columns, value, line = GROUPS[group], context.item[group], context.item.lines[group]
    if value is None:  # ``location: null`` clears the whole section
        fields.update(dict.fromkeys(columns.values()))
        lines.update(dict.fromkeys(columns.values(), line))
        return
    if not isinstance(value, MarkedMap):
        context.problem(line, group, "must be a mapping")
        return
    for sub, sub_value in value.items():
        if sub not in columns:
            context.problem(value.lines[sub], f"{group}.{sub}", "unknown field")
            continue
        fields[columns[sub]], lines[columns[sub]] = sub_value, value.lines[sub]


def _claims_columns(context: _ItemContext, claims: MarkedMap) -> dict[Any, Any]:
    """Map the fact names of ``claims:`` to service fields; unknown facts are problems."""
    facts = fact_columns(context.kind)
    mapped: dict[Any, Any] = {}
    for fact, claim in claims.items():
        column = COLUMN_OF_PATH.get(fact, fact)
        if column not in facts:
            context.problem(claims.lines[fact], f"claims.{fact}", "not a field of this entity")
            continue
        mapped[column] = claim
    return mapped


def _pop_secret_ref(context: _ItemContext, fields: dict[str, Any]) -> str | None:
    if context.kind != "api_key":
        return None
    raw = fields.pop(KEY_SECRET_REF, None)
    if raw is None:
        return None
    try:
        return _ENV_VAR_NAME.validate_python(raw, strict=True)
    except ValidationError as exc:
        line = context.item.lines.get(KEY_SECRET_REF)
        context.problem(line, KEY_SECRET_REF, _message(exc.errors()[0]))
        return None


def _validate_key(context: _ItemContext, raw_id: Any) -> str | None:
    key = SPECS[context.kind].key
    if raw_id is None:
        context.problem(None, "", f"required field {key!r} is missing")
        return None
    try:
        return _key_adapter(context.kind).validate_python(raw_id, strict=True)
    except ValidationError as exc:
        context.problem(context.item.lines.get(key), key, _message(exc.errors()[0]))
        return None


def _validate_fields(
    context: _ItemContext, fields: Mapping[str, Any], lines: Mapping[str, int]
) -> dict[str, Any] | None:
    """Check the fields with the service's own update model; return canonical values."""
    try:
        validated = SPECS[context.kind].update.model_validate(fields)
    except ValidationError as exc:
        for error in exc.errors():
            loc: tuple[Any, ...] = tuple(error["loc"])
            path = ".".join(file_path(str(part)) for part in loc)
            context.problem(_line_of(loc, context.item, lines), path, _message(error))
        return None
    dumped: dict[str, Any] = validated.model_dump(exclude_unset=True)
    return dumped


def _line_of(loc: tuple[Any, ...], item: MarkedMap, lines: Mapping[str, int]) -> int:
    """The line of the deepest node along ``loc`` that has one."""
    if not loc or str(loc[0]) not in lines:
        return item.line
    line = lines[str(loc[0])]
    node: Any = item.get(loc[0])
    for part in loc[1:]:
        if isinstance(node, MarkedMap) and part in node:
            line, node = node.lines[part], node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            line = node.line if isinstance(node, MarkedMap) else line
        else:
            break
    return line


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "missing":
        return "required field is missing"
    return str(error["msg"]).removeprefix("Value error, ")


# --------------------------------------------------------------------------- normalisation


# Lists kept in the order written; every other list is a set.
ORDERED_LISTS = frozenset(
    {"candidates", "lineage", "training_hardware", "behavioral_restrictions", "listings"}
)


def normalise(column: str, value: Any) -> Any:
    """A canonical, comparable form of a field value (file values and registry values alike)."""
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if column == "claim":
        return normalise_claim(value)
    if column == "claims":
        claims = {fact: normalise_claim(c) for fact, c in (value or {}).items()}
        return {fact: c for fact, c in sorted(claims.items()) if c is not None}
    if column == "lineage":
        return [{"relation": e["relation"], "model": e["model"]} for e in _plain(value) or ()]
    if column in INSTANTS and value is not None:
        return _instant(value)
    if isinstance(value, list | tuple | set | frozenset):
        items = [normalise(column, v) for v in value]
        if column in ORDERED_LISTS or not all(isinstance(i, Hashable) for i in items):
            return items
        return sorted(set(items), key=_sort_key)
    if isinstance(value, Mapping):  # an unset (null) key is the same as an absent one
        return {str(k): normalise(column, v) for k, v in sorted(value.items()) if v is not None}
    return _scalar(value)


def _instant(value: datetime | str) -> str:
    """A point in time as an ISO string in UTC (``Z``), from a datetime or its text."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return as_utc(moment).isoformat().replace("+00:00", "Z")


def _sort_key(value: Any) -> tuple[int, str]:
    return (0, value) if isinstance(value, str) else (1, repr(value))


def normalise_claim(claim: Any) -> dict[str, Any] | None:
    """A claim as ``{source, retrieved_at (ISO date), confidence}``; an empty claim is None."""
    if claim is None:
        return None
    data = _plain(claim)
    result = {
        "source": data.get("source"),
        "retrieved_at": _scalar(data.get("retrieved_at")),
        "confidence": data.get("confidence") or "unknown",
    }
    if result == {"source": None, "retrieved_at": None, "confidence": "unknown"}:
        return None
    return result


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _scalar(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# --------------------------------------------------------------------------- export direction


def to_file_entry(kind: str, public: Mapping[str, Any]) -> dict[str, Any]:
    """A service public dict -> a file entry (nested sections, file names, dates as dates).

    Only the fields of the file format are read, so nothing else (hashes, prefixes, timestamps,
    versions) can reach an export. Empty values the service would default to anyway are left
    out, so an export re-applied to an empty registry gives the same state. Lists keep their
    stored order (the order they were written in)."""
    entry: dict[str, Any] = {}
    for column in file_columns(kind):
        raw = public.get(column)
        value = normalise(column, raw)
        if _is_default_empty(kind, column, value):
            continue
        if isinstance(raw, list) and column not in ORDERED_LISTS:
            value = list(dict.fromkeys(_scalar(v) for v in raw))
        if column in _date_columns(kind) and isinstance(value, str):
            value = date.fromisoformat(value)
        group, _, sub = file_path(column).partition(".")
        if sub:
            entry.setdefault(group, {})[sub] = _export_value(column, value)
        else:
            entry[column] = _export_value(column, value)
    return entry


@cache
def _date_columns(kind: str) -> frozenset[str]:
    """Fields holding a date: written as YAML dates, not strings."""
    fields = SPECS[kind].create.model_fields
    return frozenset(
        name
        for name, info in fields.items()
        if info.annotation is date or date in get_args(info.annotation)
    )


def _is_default_empty(kind: str, column: str, value: Any) -> bool:
    if value not in (None, [], {}, ""):
        return False
    info = SPECS[kind].create.model_fields[column]
    if info.is_required():
        return False
    return bool(normalise(column, info.get_default(call_default_factory=True)) == value)


def _export_value(column: str, value: Any) -> Any:
    """Claims with their dates as dates; the items of a list of mappings without their unset
    (null) keys."""
    if isinstance(value, list):
        return [_without_nulls(v) if isinstance(v, Mapping) else v for v in value]
    if column == "claim":
        return _export_claim(value)
    if column == "claims":
        return {file_path(fact): _export_claim(claim) for fact, claim in value.items()}
    return value


def _without_nulls(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if v is not None}


def _export_claim(claim: Mapping[str, Any]) -> dict[str, Any]:
    exported = {k: v for k, v in claim.items() if v is not None}
    if isinstance(exported.get("retrieved_at"), str):
        exported["retrieved_at"] = date.fromisoformat(exported["retrieved_at"])
    return exported
