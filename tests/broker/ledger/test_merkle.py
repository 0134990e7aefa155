"""broker.ledger.merkle against the RFC 6962/9162 reference vectors of transparency-dev/merkle."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.ledger.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    ProofError,
    leaf_hash,
    root_from_inclusion,
    verify_consistency,
    verify_inclusion,
)

# The 8 leaves of transparency-dev/merkle testonly.LeafInputs().
LEAVES = [
    bytes.fromhex(h)
    for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
              "606162636465666768696a6b6c6d6e6f")
]  # fmt: skip
# testonly.RootHashes(): the root of the first n leaves, n = 1..8.
ROOTS = [
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]


def _h(*hexes: str) -> list[bytes]:
    return [bytes.fromhex(h) for h in hexes]


# proof/verify_test.go inclusionProofs: (leaf index, tree size, proof), index 0-based here.
INCLUSION = [
    (0, 8, _h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
              "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
              "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")),
    (5, 8, _h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
              "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
              "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (2, 3, _h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (1, 5, _h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
              "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
              "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
]  # fmt: skip
# proof/verify_test.go consistencyProofs: (size1, size2, proof).
CONSISTENCY = [
    (1, 8, _h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
              "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
              "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")),
    (6, 8, _h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
              "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
              "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (2, 5, _h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
              "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
    (6, 7, _h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
              "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
              "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (1, 1, []),
]  # fmt: skip


def test_roots_match_the_reference_for_every_size() -> None:
    tree = MerkleTree()
    assert tree.root() == EMPTY_ROOT == hashlib.sha256(b"").digest()
    for n, data in enumerate(LEAVES, start=1):
        tree.append(data)
        assert tree.root() == ROOTS[n - 1]
    assert [tree.root(n) for n in range(1, 9)] == ROOTS
    assert tree.leaf(0) == bytes.fromhex(
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_proofs_match_the_reference(index: int, size: int, proof: list[bytes]) -> None:
    tree = MerkleTree(LEAVES)
    assert tree.inclusion_proof(index, size) == proof
    verify_inclusion(index, size, leaf_hash(LEAVES[index]), proof, ROOTS[size - 1])
    with pytest.raises(ProofError):
        verify_inclusion(index ^ 1, size, leaf_hash(LEAVES[index]), proof, ROOTS[size - 1])
    with pytest.raises(ProofError):
        verify_inclusion(index, size, leaf_hash(b"WrongLeaf"), proof, ROOTS[size - 1])
    with pytest.raises(ProofError):
        verify_inclusion(index, size, leaf_hash(LEAVES[index]), [*proof, ROOTS[0]], ROOTS[size - 1])
    with pytest.raises(ProofError):
        verify_inclusion(index, size, leaf_hash(LEAVES[index]), proof[:-1], ROOTS[size - 1])


@pytest.mark.parametrize(("first", "second", "proof"), CONSISTENCY)
def test_consistency_proofs_match_the_reference(
    first: int, second: int, proof: list[bytes]
) -> None:
    tree = MerkleTree(LEAVES)
    assert tree.consistency_proof(first, second) == proof
    verify_consistency(first, second, ROOTS[first - 1], ROOTS[second - 1], proof)
    if proof:
        with pytest.raises(ProofError):
            verify_consistency(first, second, ROOTS[second - 1], ROOTS[first - 1], proof)
        with pytest.raises(ProofError):
            verify_consistency(first, second, ROOTS[first - 1], ROOTS[second - 1], proof[:-1])
        with pytest.raises(ProofError):
            verify_consistency(first + 1, second, ROOTS[first - 1], ROOTS[second - 1], proof)


def test_degenerate_sizes_and_bad_hashes() -> None:
    some = hashlib.sha256(b"some").digest()
    verify_consistency(0, 0, some, some, [])
    verify_consistency(0, 5, some, ROOTS[4], [])
    for args in [
        (0, 0, some, ROOTS[0], []),  # two roots for one size
        (1, 1, some, some, [some]),  # equal sizes with a proof
        (2, 1, ROOTS[1], ROOTS[0], []),  # back in time
        (1, 2, ROOTS[0], ROOTS[1], []),  # empty proof
    ]:
        with pytest.raises(ProofError):
            verify_consistency(*args)  # type: ignore[arg-type]
    for index, size in [(0, 0), (1, 0), (2, 1)]:
        with pytest.raises(ProofError):
            verify_inclusion(index, size, some, [], some)
    with pytest.raises(ProofError):
        verify_inclusion(0, 1, some, [], b"")
    verify_inclusion(0, 1, some, [], some)
    tree = MerkleTree(LEAVES)
    with pytest.raises(ProofError):
        tree.inclusion_proof(8)
    with pytest.raises(ProofError):
        tree.consistency_proof(3, 9)


def _flip(proof: list[bytes], at: int, bit: int) -> list[bytes]:
    out = list(proof)
    h = bytearray(out[at])
    h[bit // 8] ^= 1 << (bit % 8)
    out[at] = bytes(h)
    return out


_TREE = MerkleTree(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(64))


@settings(max_examples=300, deadline=None)
@given(data=st.data(), size=st.integers(1, 64))
def test_every_proof_up_to_64_verifies_and_a_flipped_bit_fails(
    data: st.DataObject, size: int
) -> None:
    index = data.draw(st.integers(0, size - 1))
    root = _TREE.root(size)
    proof = _TREE.inclusion_proof(index, size)
    assert root_from_inclusion(index, size, _TREE.leaf(index), proof) == root
    assert len(proof) <= (size - 1).bit_length()
    if proof:
        at = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        with pytest.raises(ProofError):
            verify_inclusion(index, size, _TREE.leaf(index), _flip(proof, at, bit), root)
    first = data.draw(st.integers(0, size))
    cons = _TREE.consistency_proof(first, size)
    verify_consistency(first, size, _TREE.root(first), root, cons)
    if cons:
        at = data.draw(st.integers(0, len(cons) - 1))
        bit = data.draw(st.integers(0, 255))
        with pytest.raises(ProofError):
            verify_consistency(first, size, _TREE.root(first), root, _flip(cons, at, bit))


def test_exhaustively_every_size_and_index_up_to_64() -> None:
    for size in range(1, 65):
        root = _TREE.root(size)
        for index in range(size):
            verify_inclusion(
                index, size, _TREE.leaf(index), _TREE.inclusion_proof(index, size), root
            )
        for first in range(size + 1):
            proof = _TREE.consistency_proof(first, size)
            verify_consistency(first, size, _TREE.root(first), root, proof)


def test_a_tree_built_later_gives_the_same_roots_as_one_grown_leaf_by_leaf() -> None:
    grown = MerkleTree()
    for i in range(100):
        grown.append(bytes([i]))
    assert MerkleTree(bytes([i]) for i in range(100)).root() == grown.root()
    assert grown.root(37) == MerkleTree(bytes([i]) for i in range(37)).root()
