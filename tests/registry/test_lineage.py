"""Unit tests for ``registry.lineage``: pure functions over snapshot data, no database."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from registry.lineage import ancestors, effective_provenance, find_cycle
from registry.snapshot import LicenseSnap, Lineage, ModelSnap, OrgSnap


def model(
    model_id: str, *parents: str, developer: str = "acme", license_id: str = "MIT"
) -> ModelSnap:
    """A model whose parents are all ``finetune_of`` edges."""
    edges = tuple(Lineage("finetune_of", parent) for parent in parents)
    return ModelSnap(id=model_id, developer_id=developer, license_id=license_id, parents=edges)


def by_id(*models: ModelSnap) -> Mapping[str, ModelSnap]:
    return {m.id: m for m in models}


ORGS = {
    "acme": OrgSnap(id="acme", name="Acme", hq_country="US"),
    "dragon": OrgSnap(id="dragon", name="Dragon", hq_country="CN"),
    "nowhere": OrgSnap(id="nowhere", name="No country"),
}
LICENSES = {
    "MIT": LicenseSnap(id="MIT", name="MIT"),
    "LicenseRef-Sticky": LicenseSnap(
        id="LicenseRef-Sticky", name="Sticky", derivatives_inherit=True
    ),
}


def test_ancestors_are_nearest_first() -> None:
    models = by_id(model("c", "b"), model("b", "a"), model("a"))
    assert ancestors(models, "c") == ("b", "a")


def test_ancestors_of_a_root_are_empty() -> None:
    assert ancestors(by_id(model("a")), "a") == ()


def test_diamond_lists_the_shared_ancestor_once() -> None:
    models = by_id(model("d", "b", "c"), model("b", "a"), model("c", "a"), model("a"))
    assert ancestors(models, "d") == ("b", "c", "a")


def test_duplicate_edges_are_listed_once() -> None:
    twice = ModelSnap(id="x", parents=(Lineage("merge_of", "a"), Lineage("finetune_of", "a")))
    assert ancestors(by_id(twice, model("a")), "x") == ("a",)


def test_missing_ancestor_is_listed_but_not_expanded() -> None:
    assert ancestors(by_id(model("b", "a")), "b") == ("a",)


def test_ancestors_terminate_on_a_cycle_and_exclude_the_model_itself() -> None:
    models = by_id(model("a", "b"), model("b", "a"))
    assert ancestors(models, "a") == ("b",)


@pytest.mark.parametrize(
    ("edges", "cycle"),
    [
        ({"a": ("a",)}, ("a", "a")),
        ({"a": ("b",), "b": ("a",)}, ("a", "b", "a")),
        ({"a": ("b",), "b": ("c",), "c": ("a",)}, ("a", "b", "c", "a")),
        ({"root": (), "x": ("y",), "y": ("z",), "z": ("y",)}, ("y", "z", "y")),
    ],
    ids=["one-node", "two-nodes", "three-nodes", "cycle-off-the-first-start"],
)
def test_find_cycle_returns_a_closed_path(
    edges: Mapping[str, tuple[str, ...]], cycle: tuple[str, ...]
) -> None:
    assert find_cycle(edges) == cycle


@pytest.mark.parametrize(
    "edges",
    [
        {},
        {"a": ()},
        {"d": ("b", "c"), "b": ("a",), "c": ("a",), "a": ()},
        {"b": ("a",), "c": ("a", "b")},  # parent "a" has no entry of its own
    ],
    ids=["empty", "single-root", "diamond", "dangling-parent"],
)
def test_find_cycle_on_a_dag_is_none(edges: Mapping[str, tuple[str, ...]]) -> None:
    assert find_cycle(edges) is None


def test_effective_provenance_collects_ancestor_countries() -> None:
    models = by_id(model("child", "base"), model("base", developer="dragon"))
    result = effective_provenance(models, ORGS, LICENSES, "child")
    assert result.developer_countries == {"US", "CN"}
    assert result.developer_ids == {"acme", "dragon"}
    assert result.complete


def test_inheriting_license_passes_to_descendants_others_do_not() -> None:
    models = by_id(
        model("grandchild", "child"),
        model("child", "base"),
        model("base", license_id="LicenseRef-Sticky"),
        model("other-base"),
    )
    assert effective_provenance(models, ORGS, LICENSES, "grandchild").licenses == {
        "MIT",
        "LicenseRef-Sticky",
    }
    models = by_id(model("child", "other-base"), model("other-base", license_id="MIT"))
    assert effective_provenance(models, ORGS, LICENSES, "child").licenses == {"MIT"}


@pytest.mark.parametrize(
    "models",
    [
        by_id(model("child", "missing-parent")),
        by_id(model("child", "base"), model("base", developer="nowhere")),
        by_id(model("child", "base"), model("base", developer="unregistered-org")),
        by_id(model("child", "base"), model("base", license_id="LicenseRef-Unregistered")),
    ],
    ids=["missing-ancestor", "developer-without-country", "unknown-developer", "unknown-license"],
)
def test_anything_unknown_along_the_lineage_is_incomplete(models: Mapping[str, ModelSnap]) -> None:
    assert not effective_provenance(models, ORGS, LICENSES, "child").complete


def test_unknown_model_is_incomplete() -> None:
    result = effective_provenance({}, ORGS, LICENSES, "ghost")
    assert not result.complete
    assert result.ancestors == ()


def test_find_cycle_handles_chains_deeper_than_the_recursion_limit() -> None:
    depth = 5000
    chain = {f"m{i}": (f"m{i + 1}",) for i in range(depth)}
    assert find_cycle(chain) is None
    looped = {**chain, f"m{depth}": ("m0",)}
    cycle = find_cycle(looped)
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) == depth + 2
