"""Signed tree heads of the ledger's Merkle tree, as C2SP signed notes, and witness cosignatures."""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.ledger.merkle import HASH_SIZE, ProofError, verify_consistency

__all__ = [
    "COSIGNATURE_ALG",
    "NOTE_ALG",
    "Cosignature",
    "NoteError",
    "NoteSignature",
    "SignedNote",
    "TreeHead",
    "WitnessState",
    "cosign",
    "key_hash",
    "sign_tree_head",
    "verify_cosignature",
    "verify_tree_head",
    "witness_cosign",
]

#: The signature-type byte of an Ed25519 note signature.
NOTE_ALG = 0x01
#: ... of a ``cosignature/v1`` (Ed25519 over a timestamped checkpoint).
COSIGNATURE_ALG = 0x04
_DASH = "\u2014"  # the em dash that starts each signature line


class NoteError(ValueError):
    """A note, signature or cosignature that does not parse or does not hold."""


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_hash(name: str, public: Ed25519PublicKey, alg: int = NOTE_ALG) -> bytes:
    """The 4-byte key hash of a signer: SHA-256(name || 0x0A || alg || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + _raw(public)).digest()[:4]


def _check_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise NoteError("a signer name is non-empty, without spaces or '+'")


@dataclass(frozen=True)
class TreeHead:
    """A checkpoint body: which log, how many entries, and the root hash."""

    origin: str
    size: int
    root: bytes

    def body(self) -> bytes:
        """The checkpoint text (what is signed), ending with a newline."""
        root = base64.b64encode(self.root).decode()
        return f"{self.origin}\n{self.size}\n{root}\n".encode()

    @classmethod
    def parse(cls, body: bytes) -> TreeHead:
        """The checkpoint in a note text; NoteError unless it is one (extension lines allowed)."""
        try:
            text = body.decode("utf-8")
            if not text.endswith("\n"):
                raise ValueError("no final newline")
            origin, size, root, *_ = text[:-1].split("\n")
            if not origin or not size.isdigit() or (size != "0" and size.startswith("0")):
                raise ValueError("origin or size")
            digest = base64.b64decode(root, validate=True)
            if len(digest) != HASH_SIZE:
                raise ValueError("root")
            return cls(origin, int(size), digest)
        except (UnicodeDecodeError, ValueError, binascii.Error) as exc:
            raise NoteError("not a checkpoint") from exc


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a note: the signer's name and its decoded bytes."""

    name: str
    data: bytes

    def line(self) -> str:
        """The signature line (without its newline)."""
        return f"{_DASH} {self.name} {base64.b64encode(self.data).decode()}"


@dataclass(frozen=True)
class SignedNote:
    """A note text and its signature lines (the log's and any witnesses' cosignatures)."""

    body: bytes
    signatures: tuple[NoteSignature, ...]

    def encode(self) -> bytes:
        """The whole note: text, empty line, one line per signature."""
        return self.body + b"\n" + "".join(s.line() + "\n" for s in self.signatures).encode()

    @classmethod
    def parse(cls, note: bytes) -> SignedNote:
        """Split a note into text and signature lines; NoteError if it is not one."""
        try:
            text = note.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NoteError("a note is UTF-8") from exc
        body, sep, sigs = text.rpartition("\n\n")
        if not sep or not sigs.endswith("\n"):
            raise NoteError("a note is text, an empty line and signature lines")
        out = []
        for line in sigs[:-1].split("\n"):
            dash, _, rest = line.partition(" ")
            name, _, data = rest.partition(" ")
            try:
                raw = base64.b64decode(data, validate=True)
            except binascii.Error as exc:
                raise NoteError("a signature line is not base64") from exc
            if dash != _DASH or not name or len(raw) < 5:
                raise NoteError("a signature line is '\u2014 name base64'")
            out.append(NoteSignature(name, raw))
        return cls((body + "\n").encode(), tuple(out))

    def with_signature(self, signature: NoteSignature) -> SignedNote:
        """The same note with one more signature line."""
        return SignedNote(self.body, (*self.signatures, signature))


def sign_tree_head(head: TreeHead, name: str, private: Ed25519PrivateKey) -> SignedNote:
    """The checkpoint ``head`` signed by the log ``name``."""
    _check_name(name)
    body = head.body()
    data = key_hash(name, private.public_key()) + private.sign(body)
    return SignedNote(body, (NoteSignature(name, data),))


def verify_tree_head(note: SignedNote, name: str, public: Ed25519PublicKey) -> TreeHead:
    """The checkpoint if ``name`` signed it with ``public``; NoteError otherwise."""
    want = key_hash(name, public)
    for s in note.signatures:
        if s.name == name and s.data[:4] == want and len(s.data) == 68:
            try:
                public.verify(s.data[4:], note.body)
            except InvalidSignature:
                raise NoteError(f"the checkpoint signature of {name} does not hold") from None
            return TreeHead.parse(note.body)
    raise NoteError(f"the checkpoint carries no signature of {name}")


def _cosigned_message(body: bytes, timestamp: int) -> bytes:
    return b"cosignature/v1\ntime " + str(timestamp).encode() + b"\n" + body


@dataclass(frozen=True)
class Cosignature:
    """A witness's cosignature: who, when (seconds since the epoch), and the signature line."""

    name: str
    timestamp: int
    signature: NoteSignature


def cosign(note: SignedNote, name: str, private: Ed25519PrivateKey, timestamp: int) -> Cosignature:
    """A ``cosignature/v1`` of the checkpoint in ``note`` by witness ``name`` at ``timestamp``."""
    _check_name(name)
    kh = key_hash(name, private.public_key(), COSIGNATURE_ALG)
    sig = private.sign(_cosigned_message(note.body, timestamp))
    line = NoteSignature(name, kh + struct.pack(">Q", timestamp) + sig)
    return Cosignature(name, timestamp, line)


def verify_cosignature(note: SignedNote, name: str, public: Ed25519PublicKey) -> Cosignature:
    """The cosignature of witness ``name`` on ``note``; NoteError if it has none that holds."""
    want = key_hash(name, public, COSIGNATURE_ALG)
    for s in note.signatures:
        if s.name == name and s.data[:4] == want and len(s.data) == 76:
            (timestamp,) = struct.unpack(">Q", s.data[4:12])
            try:
                public.verify(s.data[12:], _cosigned_message(note.body, timestamp))
            except InvalidSignature:
                raise NoteError(f"the cosignature of {name} does not hold") from None
            return Cosignature(name, timestamp, s)
    raise NoteError(f"the checkpoint carries no cosignature of {name}")


@dataclass(frozen=True)
class WitnessState:
    """What a witness remembers of one log: the last checkpoint it cosigned."""

    origin: str
    size: int
    root: bytes


def witness_cosign(
    state: WitnessState | None,
    note: SignedNote,
    log_name: str,
    log_key: Ed25519PublicKey,
    proof: Sequence[bytes],
    witness: str,
    private: Ed25519PrivateKey,
    timestamp: int,
) -> tuple[Cosignature, WitnessState]:
    """Cosign ``note`` if the log signed it and it extends the last one cosigned; NoteError if not.

    A smaller tree, or another root for the same size (a split view), is refused;
    a larger tree needs ``proof``, a consistency proof from the last size cosigned.
    """
    head = verify_tree_head(note, log_name, log_key)
    if state is not None:
        if head.origin != state.origin:
            raise NoteError(f"checkpoint of {head.origin}, not of {state.origin}")
        if head.size < state.size:
            raise NoteError(f"checkpoint of {head.size} entries after one of {state.size}")
        try:
            verify_consistency(state.size, head.size, state.root, head.root, proof)
        except ProofError as exc:
            what = "another root for" if head.size == state.size else "not consistent with"
            raise NoteError(
                f"checkpoint of {head.size} entries is {what} the one of {state.size} "
                f"cosigned before: {exc}"
            ) from exc
    return cosign(note, witness, private, timestamp), WitnessState(
        head.origin, head.size, head.root
    )
