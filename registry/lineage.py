"""Effective provenance computed along a model's lineage. Pure functions over snapshot data.

A model's *own* facts are what its card says. Its *effective* facts follow its weights back
through every ``finetune_of``, ``adapter_of``, ``merge_of``, ``quantized_from``,
``distilled_from`` and ``continued_pretrain_of`` relation:

- a fine-tune of a model developed in country X is "derived from X": effective developer
  countries are the HQ countries of the developers of the model and of all its ancestors;
- a distill of Llama carries Llama's license terms even when its card says MIT: effective
  licenses are the model's declared license plus every ancestor's license whose terms pass to
  derivatives (``derivatives_inherit``).

Anything unknown along the way (an ancestor not in the registry, a developer without a country,
a license not in the registry) is reported as incomplete, so policies can fail closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from registry.snapshot import LicenseSnap, ModelSnap, OrgSnap


class LineageCycleError(ValueError):
    """A lineage edge would make a model its own ancestor."""


@dataclass(frozen=True, slots=True)
class EffectiveProvenance:
    model_id: str
    ancestors: tuple[str, ...]  # nearest first, each once, the model itself excluded
    developer_ids: frozenset[str]  # developers of the model and every ancestor
    developer_countries: frozenset[str]  # their HQ countries
    licenses: frozenset[str]  # declared license + inherited ancestor licenses
    complete: bool  # False when any ancestor, developer, country or license is unknown


def ancestors(models: Mapping[str, ModelSnap], model_id: str) -> tuple[str, ...]:
    """Every ancestor of ``model_id``, breadth first (nearest first), each listed once.

    Ancestors missing from ``models`` are listed but not expanded further."""
    seen: dict[str, None] = {}
    frontier = [model_id]
    while frontier:
        next_frontier: list[str] = []
        for current in frontier:
            model = models.get(current)
            for edge in model.parents if model else ():
                if edge.parent_id != model_id and edge.parent_id not in seen:
                    seen[edge.parent_id] = None
                    next_frontier.append(edge.parent_id)
        frontier = next_frontier
    return tuple(seen)


def find_cycle(edges: Mapping[str, tuple[str, ...]]) -> tuple[str, ...] | None:
    """Return one cycle (as a path that starts and ends at the same model) or None.

    ``edges`` maps a model id to its parent ids; used to reject a write before it lands.
    Iterative depth-first search, so arbitrarily long lineage chains cannot exhaust the stack."""
    done: set[str] = set()
    for start in edges:
        if start in done:
            continue
        path: list[str] = [start]
        on_path = {start}
        pending = [iter(edges.get(start, ()))]
        while pending:
            parent = next(pending[-1], None)
            if parent is None:  # every parent of path[-1] explored
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                pending.pop()
                continue
            if parent in on_path:
                return (*path[path.index(parent) :], parent)
            if parent not in done:
                path.append(parent)
                on_path.add(parent)
                pending.append(iter(edges.get(parent, ())))
    return None


def effective_provenance(
    models: Mapping[str, ModelSnap],
    orgs: Mapping[str, OrgSnap],
    licenses: Mapping[str, LicenseSnap],
    model_id: str,
) -> EffectiveProvenance:
    """The developer countries and licenses that really apply to ``model_id``."""
    lineage = ancestors(models, model_id)
    complete = model_id in models and all(a in models for a in lineage)
    developer_ids: set[str] = set()
    countries: set[str] = set()
    effective_licenses: set[str] = set()
    for index, current in enumerate((model_id, *lineage)):
        model = models.get(current)
        if model is None:
            continue
        org = orgs.get(model.developer_id) if model.developer_id else None
        if org is None or org.hq_country is None:
            complete = False
        else:
            developer_ids.add(org.id)
            countries.add(org.hq_country)
        if model.license_id is None or model.license_id not in licenses:
            complete = False
            continue
        is_self = index == 0
        if is_self or licenses[model.license_id].derivatives_inherit:
            effective_licenses.add(model.license_id)
    return EffectiveProvenance(
        model_id=model_id,
        ancestors=lineage,
        developer_ids=frozenset(developer_ids),
        developer_countries=frozenset(countries),
        licenses=frozenset(effective_licenses),
        complete=complete,
    )


def training_hardware_vendors(
    models: Mapping[str, ModelSnap], model_id: str, *, lineage: bool = True
) -> frozenset[str]:
    """The vendors of the hardware ``model_id`` was trained on: its own and, with ``lineage``,
    every ancestor's (a fine-tune also runs on its base's pre-training). Empty when no source
    states any; unknown members are simply absent."""
    ids = (model_id, *(ancestors(models, model_id) if lineage else ()))
    return frozenset(
        vendor
        for current in ids
        if (model := models.get(current)) is not None
        for vendor in model.training_hardware_vendors
    )
