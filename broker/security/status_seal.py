"""Sealed status updates: what a status says, readable by the referral's origin alone.

The router needs only who sends a status about which referral of which origin;
the rest — the note, the reason code, the next due date, a re-route's
destination and the item outcomes (new host IPs, countries, providers) — is
sealed for the origin (:func:`broker.security.sealing.seal`, context
:func:`~broker.security.sealing.status_domain` of the emitter). The plaintext is
the whole update as a framed StatusUpdate datum; beside it, in clear, the same
update with those fields empty (:data:`SEALED_FIELDS`). The emitter signs the
sealed bytes; the origin checks the signature, opens the seal and takes the
inner update only if it says in clear what the outer one says
(:data:`BOUND_FIELDS`). An update with nothing to seal (a RECEIVED) goes as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from broker.errors import SealError
from broker.security.sealing import open_sealed, seal, status_domain
from broker.wire.codec import Codec
from broker.wire.registry import STATUS_UPDATE

__all__ = ["BOUND_FIELDS", "SEALED_FIELDS", "has_content", "open_status", "seal_status"]

#: What a status says: sealed for its origin, empty in clear.
SEALED_FIELDS: Mapping[str, Any] = {
    "reason_code": None,
    "note": None,
    "next_update_due": None,
    "destination_org": None,
    "item_outcomes": [],
}
#: What stays in clear and must be the same inside the seal.
BOUND_FIELDS = (
    "referral_id",
    "case_id",
    "emitted_by",
    "emitted_at",
    "status",
    "origin_org",
    "referral_version",
)


def has_content(datum: Mapping[str, Any]) -> bool:
    """True if a status datum says anything beyond who, which referral and which status."""
    return any(datum.get(name) for name in SEALED_FIELDS)


def seal_status(
    codec: Codec, datum: Mapping[str, Any], origin_key: tuple[str, X25519PublicKey]
) -> dict[str, Any]:
    """The status datum with its content sealed for its origin (key id, public key)."""
    origin = str(datum["origin_org"])
    plaintext = codec.encode(STATUS_UPDATE, {**datum, "sealed": None})
    sealed = seal(
        plaintext,
        referral_id=str(datum["referral_id"]),
        origin=origin,
        recipients={origin: origin_key},
        domain=status_domain(str(datum["emitted_by"])),
    )
    return {**datum, **SEALED_FIELDS, "sealed": sealed}


def open_status(
    codec: Codec,
    datum: Mapping[str, Any],
    org_id: str,
    private_keys: Mapping[str, X25519PrivateKey],
) -> dict[str, Any]:
    """The update inside a sealed status datum, opened by its origin ``org_id``.

    SealError if it does not open for ``org_id``, or if it does not say in clear what
    it says inside (or carries content beside its seal).
    """
    sealed = datum.get("sealed")
    if not isinstance(sealed, Mapping):
        raise SealError("status update without a sealed content")
    if has_content(datum):
        raise SealError("status update with content both sealed and in clear")
    plaintext = open_sealed(
        sealed,
        referral_id=str(datum.get("referral_id")),
        origin=str(datum.get("origin_org")),
        org_id=org_id,
        private_keys=private_keys,
        domain=status_domain(str(datum.get("emitted_by"))),
    )
    _, inner = codec.decode(plaintext, expected=STATUS_UPDATE)
    if inner.get("sealed") is not None or any(
        inner.get(name) != datum.get(name) for name in BOUND_FIELDS
    ):
        raise SealError("the sealed content of a status update differs from what it says in clear")
    return dict(inner)
