"""An append-only Merkle tree as RFC 9162 §2.1 (Certificate Transparency) defines it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MerkleTree",
    "ProofError",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion",
    "verify_consistency",
    "verify_inclusion",
]

#: Bytes in one hash.
HASH_SIZE = 32
#: The root hash of the empty tree: SHA-256 of nothing.
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A proof that does not hold, or that asks for a size or index the tree cannot have."""


def leaf_hash(data: bytes) -> bytes:
    """The hash of a leaf: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an inner node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two smaller than ``size`` (``size`` ≥ 2)."""
    return 1 << ((size - 1).bit_length() - 1)


class MerkleTree:
    """An append-only RFC 9162 tree that can prove any leaf in, and any earlier size of, itself."""

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        # _levels[k] holds the hashes of the complete subtrees of 2**k leaves, left to right.
        self._levels: list[bytearray] = [bytearray()]
        for data in leaves:
            self.append(data)

    def __len__(self) -> int:
        return len(self._levels[0]) // HASH_SIZE

    def append(self, data: bytes) -> int:
        """Add a leaf with these bytes; its index."""
        return self.append_hash(leaf_hash(data))

    def append_hash(self, digest: bytes) -> int:
        """Add a leaf by its leaf hash; its index."""
        if len(digest) != HASH_SIZE:
            raise ValueError("a leaf hash is 32 bytes")
        levels = self._levels
        index = len(levels[0]) // HASH_SIZE
        levels[0] += digest
        level, count = 0, index + 1
        while count & 1 == 0:
            row = levels[level]
            pair = bytes(row[-2 * HASH_SIZE :])
            if len(levels) == level + 1:
                levels.append(bytearray())
            levels[level + 1] += hashlib.sha256(b"\x01" + pair).digest()
            level, count = level + 1, count >> 1
        return index

    def leaf(self, index: int) -> bytes:
        """The leaf hash at ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        return bytes(self._levels[0][index * HASH_SIZE : (index + 1) * HASH_SIZE])

    def _hash(self, start: int, size: int) -> bytes:
        """MTH(D[start:start+size]) for ``size`` ≥ 1."""
        if size & (size - 1) == 0 and start % size == 0:
            level = size.bit_length() - 1
            at = (start >> level) * HASH_SIZE
            return bytes(self._levels[level][at : at + HASH_SIZE])
        k = _split(size)
        return node_hash(self._hash(start, k), self._hash(start + k, size - k))

    def _size(self, size: int | None) -> int:
        n = len(self) if size is None else size
        if not 0 <= n <= len(self):
            raise ProofError(f"the tree has {len(self)} leaves, not {n}")
        return n

    def root(self, size: int | None = None) -> bytes:
        """The root hash of the first ``size`` leaves (all, by default)."""
        n = self._size(size)
        return self._hash(0, n) if n else EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[0:size]) of RFC 9162 §2.1.3.1, leaf-side first."""
        n = self._size(size)
        if not 0 <= index < n:
            raise ProofError(f"no leaf {index} in a tree of {n}")
        path: list[bytes] = []
        start = 0
        while n > 1:
            k = _split(n)
            if index < k:
                path.append(self._hash(start + k, n - k))
                n = k
            else:
                path.append(self._hash(start, k))
                start, index, n = start + k, index - k, n - k
        path.reverse()
        return path

    def consistency_proof(self, first: int, second: int | None = None) -> list[bytes]:
        """PROOF(first, D[0:second]) of RFC 9162 §2.1.4.1."""
        n = self._size(second)
        if not 0 <= first <= n:
            raise ProofError(f"a tree of {n} leaves has no earlier size {first}")
        if first in (0, n):
            return []
        path: list[bytes] = []
        start, m, complete = 0, first, True
        while m != n:
            k = _split(n)
            if m <= k:
                path.append(self._hash(start + k, n - k))
                n = k
            else:
                path.append(self._hash(start, k))
                start, m, n, complete = start + k, m - k, n - k, False
        if not complete:
            path.append(self._hash(start, m))
        path.reverse()
        return path


def _check_hashes(*hashes: bytes) -> None:
    if any(len(h) != HASH_SIZE for h in hashes):
        raise ProofError("a hash is not 32 bytes")


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root an inclusion proof leads to (RFC 9162 §2.1.3.2); ProofError if it cannot."""
    _check_hashes(leaf, *proof)
    if not 0 <= index < size:
        raise ProofError(f"no leaf {index} in a tree of {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the inclusion proof is too short")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """ProofError unless ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree ``root``."""
    _check_hashes(root)
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise ProofError("the inclusion proof leads to another root")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """ProofError unless ``proof`` shows the tree ``first_root`` is a prefix of ``second_root``."""
    _check_hashes(first_root, second_root, *proof)
    if not 0 <= first <= second:
        raise ProofError(f"a tree of {second} leaves has no earlier size {first}")
    if first == second:
        if proof:
            raise ProofError("a proof between equal sizes is empty")
        if first_root != second_root:
            raise ProofError("two different roots for the same size")
        return
    if first == 0:
        if proof:
            raise ProofError("a proof from the empty tree is empty")
        return
    if not proof:
        raise ProofError("the consistency proof is empty")
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the consistency proof is too short")
    if fr != first_root:
        raise ProofError("the consistency proof does not lead to the earlier root")
    if sr != second_root:
        raise ProofError("the consistency proof does not lead to the later root")
