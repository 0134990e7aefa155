"""RFC 9497 OPRF, mode 0 (modeOPRF), ciphersuite ristretto255-SHA512.

The client blinds its input, the key holder multiplies the blinded element by its key,
the client unblinds and hashes: the output is a PRF of the input under the key, and the
key holder never sees the input. Group arithmetic is libsodium's (``_sodium``).
"""

from __future__ import annotations

import hashlib

from broker.known import _sodium
from broker.known.errors import OprfError

__all__ = [
    "CONTEXT_STRING",
    "IDENTIFIER",
    "MODE_OPRF",
    "NE",
    "NH",
    "NS",
    "ORDER",
    "blind",
    "blind_evaluate",
    "context_string",
    "derive_key_pair",
    "deserialize_element",
    "deserialize_scalar",
    "evaluate",
    "expand_message_xmd",
    "finalize",
    "hash_to_group",
    "hash_to_scalar",
]

MODE_OPRF = 0x00
IDENTIFIER = b"ristretto255-SHA512"
ORDER = 2**252 + 27742317777372353535851937790883648493
NE = _sodium.ELEMENT_BYTES  # serialized element
NS = _sodium.SCALAR_BYTES  # serialized scalar
NH = 64  # SHA-512 output
_IDENTITY = bytes(NE)
_MAX_INPUT = 0xFFFF  # I2OSP(len(input), 2)


def context_string(mode: int = MODE_OPRF, identifier: bytes = IDENTIFIER) -> bytes:
    """RFC 9497 §3.2 CreateContextString: ``"OPRFV1-" || I2OSP(mode, 1) || "-" || identifier``."""
    return b"OPRFV1-" + bytes([mode]) + b"-" + identifier


CONTEXT_STRING = context_string()


def expand_message_xmd(msg: bytes, dst: bytes, len_in_bytes: int) -> bytes:
    """RFC 9380 §5.3.1 expand_message_xmd with SHA-512 (b = 64, s = 128 bytes)."""
    b_in_bytes, s_in_bytes = 64, 128
    if len(dst) > 255:  # §5.3.3: an oversize DST is hashed first
        dst = hashlib.sha512(b"H2C-OVERSIZE-DST-" + dst).digest()
    ell = -(-len_in_bytes // b_in_bytes)
    if ell > 255 or len_in_bytes > 0xFFFF or len_in_bytes <= 0:
        raise ValueError("expand_message_xmd: requested length out of range")
    dst_prime = dst + bytes([len(dst)])
    msg_prime = bytes(s_in_bytes) + msg + len_in_bytes.to_bytes(2, "big") + b"\x00" + dst_prime
    b0 = hashlib.sha512(msg_prime).digest()
    bi = hashlib.sha512(b0 + b"\x01" + dst_prime).digest()
    out = [bi]
    for i in range(2, ell + 1):
        mixed = bytes(x ^ y for x, y in zip(b0, bi, strict=True))
        bi = hashlib.sha512(mixed + bytes([i]) + dst_prime).digest()
        out.append(bi)
    return b"".join(out)[:len_in_bytes]


def hash_to_group(msg: bytes, context: bytes = CONTEXT_STRING) -> bytes:
    """HashToGroup: hash_to_ristretto255 (RFC 9380 App. B) with DST ``"HashToGroup-" || ctx``."""
    return _sodium.from_hash(expand_message_xmd(msg, b"HashToGroup-" + context, 64))


def hash_to_scalar(msg: bytes, dst: bytes | None = None) -> bytes:
    """HashToScalar: 64 bytes of expand_message_xmd, little-endian, reduced mod the order."""
    if dst is None:
        dst = b"HashToScalar-" + CONTEXT_STRING
    return _sodium.scalar_reduce(expand_message_xmd(msg, dst, 64))


def deserialize_scalar(buf: bytes) -> bytes:
    """A 32-byte little-endian scalar in [1, order); OprfError otherwise (zero is refused)."""
    if len(buf) != NS or not 0 < int.from_bytes(buf, "little") < ORDER:
        raise OprfError("not a valid non-zero ristretto255 scalar")
    return bytes(buf)


def deserialize_element(buf: bytes) -> bytes:
    """A canonical ristretto255 encoding that is not the identity; OprfError otherwise."""
    if len(buf) != NE or buf == _IDENTITY or not _sodium.is_valid_point(buf):
        raise OprfError("not a valid ristretto255 element")
    return bytes(buf)


def derive_key_pair(seed: bytes, info: bytes) -> tuple[bytes, bytes]:
    """RFC 9497 §3.2.1 DeriveKeyPair: a deterministic (skS, pkS) from a 32-byte seed and info."""
    if len(seed) != NS:
        raise OprfError("the key seed must be 32 bytes")
    if len(info) > _MAX_INPUT:
        raise OprfError("the key info is too long")
    derive_input = seed + len(info).to_bytes(2, "big") + info
    dst = b"DeriveKeyPair" + CONTEXT_STRING
    for counter in range(256):
        sk = hash_to_scalar(derive_input + bytes([counter]), dst)
        if sk != bytes(NS):
            return sk, _sodium.scalarmult_base(sk)
    raise OprfError("DeriveKeyPair found no key")  # pragma: no cover - probability 2^-64000


def _input_element(input_: bytes) -> bytes:
    if len(input_) > _MAX_INPUT:
        raise OprfError("an OPRF input is longer than 65535 bytes")
    element = hash_to_group(input_)
    if element == _IDENTITY:  # pragma: no cover - needs a SHA-512 preimage
        raise OprfError("the input maps to the identity element")
    return element


def _random_nonzero_scalar() -> bytes:
    while True:
        scalar = _sodium.scalar_random()
        if scalar != bytes(NS):
            return scalar


def blind(input_: bytes, blind_scalar: bytes | None = None) -> tuple[bytes, bytes]:
    """Blind: ``(r, r * HashToGroup(input))``; a fixed ``blind_scalar`` is for test vectors."""
    r = _random_nonzero_scalar() if blind_scalar is None else deserialize_scalar(blind_scalar)
    return r, _sodium.scalarmult(r, _input_element(input_))


def blind_evaluate(sk: bytes, blinded_element: bytes) -> bytes:
    """BlindEvaluate: ``skS * blindedElement``, after checking the element as RFC 9497 §4.1 asks."""
    element = deserialize_element(blinded_element)
    return _sodium.scalarmult(deserialize_scalar(sk), element)


def _finish(input_: bytes, element: bytes) -> bytes:
    if len(input_) > _MAX_INPUT:
        raise OprfError("an OPRF input is longer than 65535 bytes")
    hash_input = (
        len(input_).to_bytes(2, "big")
        + input_
        + len(element).to_bytes(2, "big")
        + element
        + b"Finalize"
    )
    return hashlib.sha512(hash_input).digest()


def finalize(input_: bytes, blind_scalar: bytes, evaluated_element: bytes) -> bytes:
    """Finalize: unblind the evaluated element and hash it with the input into Nh = 64 bytes."""
    element = deserialize_element(evaluated_element)
    inverse = _sodium.scalar_invert(deserialize_scalar(blind_scalar))
    return _finish(input_, _sodium.scalarmult(inverse, element))


def evaluate(sk: bytes, input_: bytes) -> bytes:
    """Evaluate: the key holder's direct PRF output for an input it knows (equals Finalize's)."""
    return _finish(input_, _sodium.scalarmult(deserialize_scalar(sk), _input_element(input_)))
