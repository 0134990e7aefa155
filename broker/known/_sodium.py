"""The few ristretto255 primitives the OPRF needs, typed: pysodium over Debian libsodium23."""

from __future__ import annotations

from typing import Any

from broker.known.errors import SodiumMissing

try:
    import pysodium as _ps
except (ImportError, OSError, ValueError, AttributeError) as exc:  # no libsodium on the system
    raise SodiumMissing(
        "libsodium is not installed: install Debian's libsodium23 (`make install` does it)"
    ) from exc

_lib: Any = _ps.sodium
if _lib.sodium_init() < 0:  # pragma: no cover - libsodium could not initialise its RNG
    raise SodiumMissing("libsodium failed to initialise")

ELEMENT_BYTES = 32
SCALAR_BYTES = 32
HASH_BYTES = 64


def from_hash(uniform: bytes) -> bytes:
    """The ristretto255 one-way map of 64 uniform bytes (RFC 9496 §4.3.4)."""
    return bytes(_ps.crypto_core_ristretto255_from_hash(uniform))


def is_valid_point(element: bytes) -> bool:
    """Whether ``element`` is a canonical ristretto255 encoding (the identity included)."""
    return len(element) == ELEMENT_BYTES and bool(
        _ps.crypto_core_ristretto255_is_valid_point(element)
    )


def scalarmult(scalar: bytes, element: bytes) -> bytes:
    """``scalar * element``; ValueError if the result is the identity."""
    return bytes(_ps.crypto_scalarmult_ristretto255(scalar, element))


def scalarmult_base(scalar: bytes) -> bytes:
    """``scalar * G``; ValueError if the scalar is zero."""
    return bytes(_ps.crypto_scalarmult_ristretto255_base(scalar))


def scalar_reduce(wide: bytes) -> bytes:
    """A 64-byte little-endian integer reduced modulo the group order."""
    return bytes(_ps.crypto_core_ristretto255_scalar_reduce(wide))


def scalar_invert(scalar: bytes) -> bytes:
    """The inverse of a non-zero scalar modulo the group order."""
    return bytes(_ps.crypto_core_ristretto255_scalar_invert(scalar))


def scalar_random() -> bytes:
    """A uniformly random scalar in [0, order)."""
    return bytes(_ps.crypto_core_ristretto255_scalar_random())
