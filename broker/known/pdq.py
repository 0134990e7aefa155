"""PDQ near-duplicates by multi-index tokens: 32 chunks of 8 bits, each tokenised with its index."""

from __future__ import annotations

import hashlib
import string
from collections.abc import Callable, Iterable, Sequence

from broker.known.errors import BadMatchInput
from broker.known.tokens import Token
from broker.known.wire import reference

__all__ = [
    "CHUNKS",
    "CHUNK_BITS",
    "MAX_DISTANCE",
    "PDQ_BYTES",
    "POSSIBLE_SHARED",
    "PdqIndex",
    "chunk_inputs",
    "chunk_kind",
    "confirm",
    "group_reference",
    "hamming",
    "is_chunk_kind",
    "parse_pdq",
]

PDQ_BYTES = 32
CHUNK_BITS = 8
CHUNKS = PDQ_BYTES * 8 // CHUNK_BITS
MAX_DISTANCE = CHUNKS - 1  # the largest distance the pigeonhole guarantees a shared chunk for
#: Chunk tokens an unconfirmed candidate must share to be shown as a possible near-duplicate
#: (unrelated hashes share 6 of 32 one time in ~10^9; random flips at distance 31 leave ~11).
POSSIBLE_SHARED = 6
_HEX = frozenset(string.hexdigits)
_KIND = "pdq:"


def chunk_kind(index: int) -> str:
    """The own-token kind of chunk ``index`` (``pdq:07``); its match entry's kind is ``pdq``."""
    return f"{_KIND}{index:02d}"


def is_chunk_kind(kind: str) -> bool:
    """True for the own-token kind of a PDQ chunk."""
    return kind.startswith(_KIND)


def group_reference(tokens: Sequence[bytes], referral_id: str, item_id: str) -> str:
    """The one reference of an item's 32 chunk entries: computable by whoever holds the same
    item of the same referral (its tokens), and by nobody else."""
    if len(tokens) != CHUNKS:
        raise BadMatchInput(f"a PDQ item has {CHUNKS} chunk tokens")
    return reference(hashlib.sha256(b"".join(tokens)).digest(), referral_id, item_id)


def parse_pdq(value: str) -> bytes:
    """A PDQ hash from its 64 hex digits; BadMatchInput (without the value) otherwise."""
    text = value.strip()
    if len(text) != 2 * PDQ_BYTES or not _HEX.issuperset(text):
        raise BadMatchInput("not a PDQ hash: expected 64 hex digits")
    return bytes.fromhex(text)


def chunk_inputs(pdq: bytes) -> list[bytes]:
    """The 32 OPRF inputs of a PDQ hash: ``b"pdq8:<index>:<chunk hex>"``, one per byte."""
    if len(pdq) != PDQ_BYTES:
        raise BadMatchInput("a PDQ hash has 32 bytes")
    return [b"pdq8:%02d:%02x" % (index, chunk) for index, chunk in enumerate(pdq)]


def hamming(a: bytes, b: bytes) -> int:
    """The number of differing bits between two equal-length hashes."""
    if len(a) != len(b):
        raise BadMatchInput("hashes of different lengths cannot be compared")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def confirm(
    query: bytes, candidates: Iterable[tuple[str, bytes]], max_distance: int = MAX_DISTANCE
) -> list[tuple[str, int]]:
    """The candidates (item id, real hash) within ``max_distance`` of ``query``, nearest first."""
    hits = [(item, d) for item, real in candidates if (d := hamming(query, real)) <= max_distance]
    return sorted(hits, key=lambda hit: (hit[1], hit[0]))


class PdqIndex:
    """Chunk tokens to the items that hold them; a lookup gives candidates, not matches."""

    def __init__(self) -> None:
        self._items: dict[Token, set[str]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item_id: str, tokens: Sequence[Token]) -> None:
        """Index the 32 chunk tokens of one item."""
        if len(tokens) != CHUNKS:
            raise BadMatchInput(f"a PDQ item has {CHUNKS} chunk tokens")
        for token in tokens:
            self._items.setdefault(token, set()).add(item_id)

    def candidates(self, tokens: Sequence[Token]) -> set[str]:
        """The items sharing at least one chunk token with the query's."""
        found: set[str] = set()
        for token in tokens:
            found |= self._items.get(token, set())
        return found

    def near(
        self,
        query: bytes,
        tokens: Sequence[Token],
        real_hash: Callable[[str], bytes | None],
        max_distance: int = MAX_DISTANCE,
    ) -> list[tuple[str, int]]:
        """Candidates confirmed by ``real_hash`` (the recipient's copy of each item's hash)."""
        pairs = ((item, real_hash(item)) for item in self.candidates(tokens))
        return confirm(query, ((i, h) for i, h in pairs if h is not None), max_distance)
