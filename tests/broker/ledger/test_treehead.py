"""broker.ledger.treehead: signed checkpoints (C2SP signed notes) and witness cosignatures."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.ledger.merkle import MerkleTree
from broker.ledger.treehead import (
    NoteError,
    SignedNote,
    TreeHead,
    sign_tree_head,
    verify_cosignature,
    verify_tree_head,
    witness_cosign,
)

ORIGIN = "referral-broker.example.org/ledger"
LOG = Ed25519PrivateKey.generate()
WITNESS = Ed25519PrivateKey.generate()


def _tree(n: int) -> MerkleTree:
    return MerkleTree(i.to_bytes(4, "big") for i in range(n))


def _note(tree: MerkleTree, size: int, key: Ed25519PrivateKey = LOG) -> SignedNote:
    return sign_tree_head(TreeHead(ORIGIN, size, tree.root(size)), "router", key)


def test_a_checkpoint_note_round_trips_and_its_signature_holds() -> None:
    tree = _tree(10)
    note = _note(tree, 10)
    text = note.encode().decode()
    lines = text.split("\n")
    assert lines[:3] == [ORIGIN, "10", base64.b64encode(tree.root()).decode()]
    assert lines[3] == ""
    assert lines[4].startswith("\u2014 router ")
    parsed = SignedNote.parse(note.encode())
    assert parsed == note
    assert verify_tree_head(parsed, "router", LOG.public_key()) == TreeHead(ORIGIN, 10, tree.root())


def test_a_changed_byte_or_another_key_fails() -> None:
    note = _note(_tree(10), 10)
    raw = bytearray(note.encode())
    raw[len(ORIGIN) + 1] ^= 1  # the size line: "10" → "00"-ish
    with pytest.raises(NoteError):
        verify_tree_head(SignedNote.parse(bytes(raw)), "router", LOG.public_key())
    with pytest.raises(NoteError, match="no signature"):
        verify_tree_head(note, "router", WITNESS.public_key())
    with pytest.raises(NoteError, match="no signature"):
        verify_tree_head(note, "police-nl", LOG.public_key())
    for bad in (b"", b"just text\n", note.body, note.encode().replace(b"\xe2\x80\x94", b"-")):
        with pytest.raises(NoteError):
            SignedNote.parse(bad)


def test_a_witness_cosigns_a_consistent_growth_only() -> None:
    tree = _tree(20)
    first, state = witness_cosign(
        None, _note(tree, 7), "router", LOG.public_key(), [], "police-nl", WITNESS, 1_000
    )
    assert state.size == 7
    cosigned = _note(tree, 7).with_signature(first.signature)
    assert verify_cosignature(cosigned, "police-nl", WITNESS.public_key()).timestamp == 1_000
    assert verify_tree_head(SignedNote.parse(cosigned.encode()), "router", LOG.public_key())
    # Growing to 20 with the consistency proof from 7: cosigned.
    proof = tree.consistency_proof(7, 20)
    second, state = witness_cosign(
        state, _note(tree, 20), "router", LOG.public_key(), proof, "police-nl", WITNESS, 2_000
    )
    assert state.size == 20
    assert verify_cosignature(
        _note(tree, 20).with_signature(second.signature), "police-nl", WITNESS.public_key()
    )
    # The same size again, same root: cosigned (no proof needed).
    witness_cosign(
        state, _note(tree, 20), "router", LOG.public_key(), [], "police-nl", WITNESS, 2_001
    )


def test_a_witness_refuses_a_split_view_a_rollback_and_a_bad_proof() -> None:
    honest, forked = _tree(12), MerkleTree([b"x", *(i.to_bytes(4, "big") for i in range(1, 12))])
    _, state = witness_cosign(
        None, _note(honest, 8), "router", LOG.public_key(), [], "police-nl", WITNESS, 1
    )
    cases = [
        (_note(forked, 8), [], "another root"),  # two heads for one size
        (_note(honest, 5), [], "after one of 8"),  # rollback
        (_note(forked, 12), forked.consistency_proof(8, 12), "not consistent"),
        (_note(honest, 12), [], "not consistent"),  # growth without a proof
        (_note(honest, 12, key=WITNESS), honest.consistency_proof(8, 12), "no signature"),
    ]
    for note, proof, why in cases:
        with pytest.raises(NoteError, match=why):
            witness_cosign(state, note, "router", LOG.public_key(), proof, "police-nl", WITNESS, 2)


def test_a_cosignature_on_another_checkpoint_does_not_hold() -> None:
    tree = _tree(9)
    cosig, _ = witness_cosign(
        None, _note(tree, 9), "router", LOG.public_key(), [], "police-nl", WITNESS, 5
    )
    moved = _note(tree, 8).with_signature(cosig.signature)
    with pytest.raises(NoteError, match="does not hold"):
        verify_cosignature(moved, "police-nl", WITNESS.public_key())
