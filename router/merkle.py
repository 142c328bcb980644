"""Merkle tree hashes and inclusion proofs as RFC 9162 (Certificate Transparency 2.0, §2.1)
defines them, over SHA-256. Receipts use them to sign many at once (router.receipts): one
signature covers the root of a batch, and each receipt carries its leaf's inclusion path.

    leaf node:     SHA-256(0x00 || leaf data)
    interior node: SHA-256(0x01 || left || right)
    MTH(D[n]) splits at k, the largest power of two smaller than n: MTH(D[0:k]), MTH(D[k:n])

Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_and_paths(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The tree head of ``leaves`` (leaf hashes, at least one) and each leaf's inclusion path
    (RFC 9162 §2.1.3.1: sibling hashes from the leaf up)."""
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    paths: list[list[bytes]] = [[] for _ in leaves]
    return _subtree(leaves, 0, len(leaves), paths), paths


def _subtree(leaves: Sequence[bytes], start: int, end: int, paths: list[list[bytes]]) -> bytes:
    """MTH(leaves[start:end]); appends each sibling to the paths of the leaves below it, in
    bottom-up order (the recursion returns from the leaves first)."""
    if end - start == 1:
        return leaves[start]
    middle = start + _split(end - start)
    left = _subtree(leaves, start, middle, paths)
    right = _subtree(leaves, middle, end, paths)
    for index in range(start, middle):
        paths[index].append(right)
    for index in range(middle, end):
        paths[index].append(left)
    return _node(left, right)


def root_from_path(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes | None:
    """The tree head that ``path`` proves ``leaf`` to be leaf ``index`` of a tree of ``size``
    leaves under (RFC 9162 §2.1.3.2), or None when the path cannot be such a proof."""
    if not 0 <= index < size:
        return None
    fn, sn, root = index, size - 1, leaf
    for sibling in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            root = _node(sibling, root)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            root = _node(root, sibling)
        fn, sn = fn >> 1, sn >> 1
    return root if sn == 0 else None
