"""A discovery compared with the registry: the diff an admin reviews, and its one-transaction
apply.

    Discovery --plan(registry)--> ImportPlan --apply_plan(writer)--> entries created

- Every entry the import would write is listed: ``create`` (new), ``unchanged`` (already there
  with the same values: importing twice writes nothing), or ``exists`` (an entry with that id
  holds other values: listed with the differences, **never changed** by an import).
- New models and deployments are ``review_status: under_review``: not routable until approved.
- Every fact set carries a per-field claim (``claims``) whose source names the artifact and
  the field, confidence ``reported``; the entry's default claim names the artifact with
  confidence ``unknown`` (nothing else about it was read).
- Each catalog match is listed with its rule and confidence; ambiguous names are listed and not
  applied; what could not be resolved (a license or organization not in the registry) is left
  unset and listed under ``unresolved``.
- A lineage parent the metadata names but the registry lacks becomes a stub model (its id,
  ``under_review``, no facts), so the child's effective provenance is *incomplete* and fails
  closed instead of looking parentless.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from pydantic import ValidationError

from registry.gitops_schema import normalise
from registry.importers.found import (
    Discovery,
    Fact,
    FoundDeployment,
    FoundModel,
    FoundRoute,
    size_in_parameters,
)
from registry.importers.matching import (
    Ambiguous,
    Match,
    RegistryModels,
    match_model,
    resolve_license,
    resolve_organization,
)
from registry.models import SPECS
from registry.validation import MODEL_ID_RE

Op = Literal["create", "unchanged", "exists"]
MODEL_FIELDS = (
    "name",
    "family",
    "revision",
    "context_length",
    "parameters_total",
    "weights_digest",
)
DEPLOYMENT_FIELDS = (
    "adapter",
    "endpoint_url",
    "upstream_model",
    "secret_ref",
    "timeout_s",
    "priority",
    "weight",
)
NOT_COMPARED = {"claim", "claims", "review_status"}


@dataclass(frozen=True, slots=True)
class Registry:
    """What the plan compares with: public dicts per kind, keyed by id (routes by name)."""

    models: Mapping[str, Mapping[str, Any]]
    deployments: Mapping[str, Mapping[str, Any]]
    routes: Mapping[str, Mapping[str, Any]]
    organizations: tuple[Mapping[str, Any], ...]
    licenses: tuple[str, ...]


@dataclass(slots=True)
class Entry:
    op: Op
    kind: str
    id: str
    values: dict[str, Any]
    differs: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # field -> (stored, found)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"op": self.op, "kind": self.kind, "id": self.id}
        hidden = {"id", "claim", "claims"}
        data["fields"] = {k: v for k, v in self.values.items() if k not in hidden}
        data["sources"] = {k: c["source"] for k, c in self.values.get("claims", {}).items()}
        if self.differs:
            data["differs"] = {k: {"stored": s, "found": f} for k, (s, f) in self.differs.items()}
        return data


@dataclass(slots=True)
class ImportPlan:
    source: str
    location: str
    entries: list[Entry] = field(default_factory=list)
    matches: list[dict[str, Any]] = field(default_factory=list)
    ambiguous: list[dict[str, Any]] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # values the registry would refuse
    observed: dict[str, dict[str, Any]] = field(default_factory=dict)  # not stored: shown

    @property
    def creates(self) -> list[Entry]:
        return [e for e in self.entries if e.op == "create"]

    def to_dict(self) -> dict[str, Any]:
        counts = {op: sum(e.op == op for e in self.entries) for op in ("create", "unchanged")}
        counts["exists"] = sum(e.op == "exists" for e in self.entries)
        return {
            "source": self.source,
            "location": self.location,
            "summary": counts,
            "entries": [e.to_dict() for e in self.entries],
            "matches": self.matches,
            "ambiguous": self.ambiguous,
            "unresolved": self.unresolved,
            "warnings": self.warnings,
            "errors": self.errors,
            "observed": self.observed,
        }


def plan(discovery: Discovery, registry: Registry, *, today: date) -> ImportPlan:
    """The diff of ``discovery`` against ``registry`` (see the module docstring)."""
    builder = _Builder(discovery, registry, today)
    model_ids = {found.key: builder.model(found) for found in discovery.models}
    for deployment in discovery.deployments:
        builder.deployment(deployment, model_ids[deployment.model_key])
    for route in discovery.routes:
        builder.route(route)
    builder.result.warnings.extend(discovery.warnings)
    return builder.result


class _Builder:
    def __init__(self, discovery: Discovery, registry: Registry, today: date) -> None:
        self.registry = registry
        self.models = RegistryModels(registry.models.values())
        self.today = today.isoformat()
        self.result = ImportPlan(source=discovery.source, location=discovery.location)
        self._planned: dict[tuple[str, str], Entry] = {}
        self._resolved: dict[str, str] = {}  # FoundModel.key -> the registry id it became

    # --- models ------------------------------------------------------------------------------

    def model(self, found: FoundModel) -> str:
        """The id of the registry model the deployments of ``found`` use."""
        self._resolved[found.key] = self._model(found)
        return self._resolved[found.key]

    def _model(self, found: FoundModel) -> str:
        match = self._applied_match(found)
        if match is not None and found.kinship == "same":
            return match.model  # the artifact is that registry model: no entry of its own
        self._add_model(found, match)
        return found.key

    def _applied_match(self, found: FoundModel) -> Match | None:
        """The catalog match to apply, if any; every match and ambiguity goes in the diff.

        A served name is taken as *the* registry model only on an exact rule: a name that
        merely normalises alike (``qwen2.5:7b`` ~ ``Qwen2.5-7B``, the base) is a suggestion."""
        family = found.facts.get("family")
        outcome = match_model(
            found.names,
            self.models,
            ollama_tag=found.ollama_tag,
            family=str(family.value) if family else None,
        )
        if isinstance(outcome, Ambiguous):
            self.result.ambiguous.append(
                {
                    "artifact": found.artifact,
                    "name": outcome.name,
                    "candidates": list(outcome.candidates),
                    "rule": outcome.rule,
                }
            )
            return None
        if outcome is None:
            return None
        applied = not (found.kinship == "same" and outcome.rule == "normalised_name")
        self.result.matches.append(
            {
                "artifact": found.artifact,
                "name": outcome.name,
                "model": outcome.model,
                "rule": outcome.rule,
                "confidence": outcome.confidence,
                "relation": "same" if found.kinship == "same" else found.relation,
                "applied": applied,
            }
        )
        return outcome if applied else None

    def _add_model(self, found: FoundModel, match: Match | None) -> None:
        values, claims = self._base(found.key, found.artifact)
        for name in MODEL_FIELDS:
            if name in found.facts:
                self._set(values, claims, name, found.facts[name])
        self._size(found, values, claims)
        self._license(found, values, claims)
        self._developer(found, values, claims)
        lineage = self._lineage(found, match, claims)
        if lineage:
            values["lineage"] = lineage
        observed = {k: f.value for k, f in found.facts.items() if k in {"quantization"}}
        if observed:
            self.result.observed[found.key] = observed
        self._entry("model", found.key, values)

    def _size(self, found: FoundModel, values: dict[str, Any], claims: dict[str, Any]) -> None:
        label = found.facts.get("size_label")
        if "parameters_total" in values:  # an exact count beats the size label
            return
        count = size_in_parameters(str(label.value)) if label else None
        if label is not None and count is not None:
            self._set(values, claims, "parameters_total", Fact(count, label.source))

    def _license(self, found: FoundModel, values: dict[str, Any], claims: dict[str, Any]) -> None:
        declared = found.facts.get("license")
        if declared is None:
            return
        license_id = resolve_license(str(declared.value), self.registry.licenses)
        if license_id is None:
            self.result.unresolved.append(
                f"{found.key}: license {declared.value!r} ({declared.source}) is not in the "
                "registry: left unset (unknown); add the license and import again"
            )
            return
        self._set(values, claims, "license", Fact(license_id, declared.source))

    def _developer(self, found: FoundModel, values: dict[str, Any], claims: dict[str, Any]) -> None:
        named = found.facts.get("organization")
        if named is None:
            return
        org = resolve_organization(str(named.value), self.registry.organizations, self.models)
        if org is None:
            self.result.unresolved.append(
                f"{found.key}: organization {named.value!r} ({named.source}) is not in the "
                "registry: developer left unset (unknown)"
            )
            return
        self._set(values, claims, "developer", Fact(org, named.source))

    def _lineage(
        self, found: FoundModel, match: Match | None, claims: dict[str, Any]
    ) -> list[dict[str, str]]:
        """The match (derived kinship), else the parents the metadata names."""
        if match is not None and found.kinship == "derived":
            source = f"{found.artifact} (catalog match: {match.rule})"
            claims["lineage"] = self._claim(source)
            return [{"relation": found.relation, "model": match.model}]
        edges: list[dict[str, str]] = []
        for parent in found.parents:
            target = self._parent(found, parent.name, parent.source)
            if target is not None and target != found.key:
                edges.append({"relation": parent.relation, "model": target})
                claims.setdefault("lineage", self._claim(parent.source))
        return edges

    def _parent(self, found: FoundModel, name: str, source: str) -> str | None:
        hit = self._resolved.get(name) or self.models.exact(name)
        if hit is not None:
            return hit
        if not MODEL_ID_RE.fullmatch(name):
            self.result.unresolved.append(
                f"{found.key}: parent {name!r} ({source}) is not a model id: no lineage edge"
            )
            return None
        values, _ = self._base(name, source.split("#", 1)[0])
        self._entry("model", name, values)  # a stub: the ancestor is unknown, fails closed
        return name

    # --- deployments and routes --------------------------------------------------------------

    def deployment(self, found: FoundDeployment, model_id: str) -> None:
        values, claims = self._base(found.id, found.artifact)
        values["model"] = model_id
        for name in DEPLOYMENT_FIELDS:
            if name in found.facts:
                self._set(values, claims, name, found.facts[name])
        self._entry("deployment", found.id, values)

    def route(self, found: FoundRoute) -> None:
        values: dict[str, Any] = {"name": found.name, "candidates": list(found.candidates)}
        if found.strategy is not None:
            values["strategy"] = found.strategy.value
        self._entry("route", found.name, values)

    # --- helpers -----------------------------------------------------------------------------

    def _claim(self, source: str, confidence: str = "reported") -> dict[str, Any]:
        return {"source": source, "retrieved_at": self.today, "confidence": confidence}

    def _base(self, key: str, artifact: str) -> tuple[dict[str, Any], dict[str, Any]]:
        claims: dict[str, Any] = {}
        values: dict[str, Any] = {
            "id": key,
            "review_status": "under_review",
            "claim": self._claim(artifact, "unknown"),
            "claims": claims,
        }
        return values, claims

    def _set(self, values: dict[str, Any], claims: dict[str, Any], name: str, fact: Fact) -> None:
        values[name] = fact.value
        claims[name] = self._claim(fact.source)

    def _entry(self, kind: str, key: str, values: dict[str, Any]) -> None:
        if (kind, key) in self._planned:
            return
        stored = self._stored(kind, key)
        entry = Entry("create", kind, key, values)
        if stored is None:
            self._check(entry)
        else:
            entry.differs = _differences(values, stored)
            entry.op = "exists" if entry.differs else "unchanged"
        self._planned[(kind, key)] = entry
        self.result.entries.append(entry)

    def _check(self, entry: Entry) -> None:
        """The field checks of a registry write, so the dry run shows what an apply would
        refuse (references are checked by the apply itself)."""
        try:
            SPECS[entry.kind].create.model_validate(entry.values)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            self.result.errors.append(f"{entry.kind} {entry.id!r}: {where}: {message}")

    def _stored(self, kind: str, key: str) -> Mapping[str, Any] | None:
        if kind == "model":
            hit = self.models.exact(key)
            return self.registry.models[hit] if hit is not None else None
        if kind == "deployment":
            return self.registry.deployments.get(key)
        return self.registry.routes.get(key)


def _differences(
    values: Mapping[str, Any], stored: Mapping[str, Any]
) -> dict[str, tuple[Any, Any]]:
    """The fields the import would set that the stored entry holds otherwise."""
    differs: dict[str, tuple[Any, Any]] = {}
    for name, value in values.items():
        if name in NOT_COMPARED or (name in {"id", "name"} and name not in stored):
            continue
        if normalise(name, value) != normalise(name, stored.get(name)):
            differs[name] = (normalise(name, stored.get(name)), normalise(name, value))
    return differs
