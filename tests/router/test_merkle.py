"""The Merkle tree of batch-signed receipts (router.merkle) against RFC 9162's definitions:
the head equals MTH computed by the RFC's recursion, every leaf's path proves it under that
head, and a path proves nothing for another leaf or index. (A leftmost leaf's path can fit
several tree sizes: receipts sign the size with the head, tested in test_receipts.py.)"""

from __future__ import annotations

import hashlib

import pytest

from router.merkle import leaf_hash, root_and_paths, root_from_path


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1, written as the RFC states it (the reference)."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def leaves_of(n: int) -> list[bytes]:
    return [leaf_hash(f"receipt {i}".encode()) for i in range(n)]


@pytest.mark.parametrize("size", [*range(1, 34), 63, 64, 65, 100])
def test_every_leaf_is_proven_under_the_rfc_head(size: int) -> None:
    leaves = leaves_of(size)
    head, paths = root_and_paths(leaves)

    assert head == mth(leaves)
    for index, leaf in enumerate(leaves):
        assert root_from_path(index, size, leaf, paths[index]) == head
        assert len(paths[index]) <= max(1, size - 1).bit_length()


@pytest.mark.parametrize("size", [2, 3, 5, 8, 13])
def test_a_path_proves_nothing_else(size: int) -> None:
    leaves = leaves_of(size)
    head, paths = root_and_paths(leaves)

    for index, path in enumerate(paths):
        other = (index + 1) % size
        assert root_from_path(index, size, leaves[other], path) != head
        assert root_from_path(other, size, leaves[index], path) != head
        assert root_from_path(index, size, leaves[index], path[:-1]) != head
        assert root_from_path(index, size, leaves[index], [*path, head]) is None


def test_out_of_range_indexes_and_empty_trees_are_refused() -> None:
    leaf = leaf_hash(b"x")
    assert root_from_path(1, 1, leaf, []) is None
    assert root_from_path(-1, 1, leaf, []) is None
    with pytest.raises(ValueError):
        root_and_paths([])
