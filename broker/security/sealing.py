"""Sealed case bodies: encrypted for exactly the organisations a referral is sent to."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

from broker.errors import SealError

__all__ = [
    "SUITE",
    "content_key",
    "is_sealed",
    "open_sealed",
    "seal",
    "seal_context",
    "sealed_for",
    "sealed_key_id",
    "status_domain",
]

SUITE = "HPKE-X25519-SHA256-AES256GCM/AES256GCM/v1"
_HPKE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_256_GCM)
_DOMAIN = b"referral-broker/v1/seal\n"


def _lp(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack(">I", len(data)) + data


def status_domain(emitter: str) -> bytes:
    """The context prefix of a status update's sealed content, bound to its emitter."""
    return b"referral-broker/v1/seal-status\n" + _lp(emitter)


def seal_context(
    referral_id: str, origin: str, recipients: Iterable[str], domain: bytes = _DOMAIN
) -> bytes:
    """The associated data of a sealed body (and the prefix of each HPKE ``info``)."""
    return domain + _lp(referral_id) + _lp(origin) + _lp(",".join(sorted(set(recipients))))


def _info(context: bytes, org: str, kid: str) -> bytes:
    return context + _lp(org) + _lp(kid)


def is_sealed(body: Any) -> bool:
    """True if a decoded body is a SealedBody (sealed bodies carry a ciphertext)."""
    return isinstance(body, Mapping) and "ciphertext" in body


def sealed_for(body: Mapping[str, Any]) -> list[str]:
    """The recipient organisations of a sealed body, as listed in clear."""
    return [str(r.get("org")) for r in body.get("recipients") or ()]


def seal(
    plaintext: bytes,
    *,
    referral_id: str,
    origin: str,
    recipients: Mapping[str, tuple[str, X25519PublicKey]],
    domain: bytes = _DOMAIN,
) -> dict[str, Any]:
    """A SealedBody datum for ``recipients`` (org id → (key id, public key))."""
    if not recipients:
        raise SealError("a sealed body needs at least one recipient")
    context = seal_context(referral_id, origin, recipients, domain)
    key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(12)
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, context)
    wrapped = [
        {
            "org": org,
            "key_id": kid,
            "wrapped_key": _HPKE.encrypt(key, public, info=_info(context, org, kid)),
        }
        for org, (kid, public) in sorted(recipients.items())
    ]
    return {"suite": SUITE, "recipients": wrapped, "nonce": nonce, "ciphertext": ciphertext}


def open_sealed(
    body: Mapping[str, Any],
    *,
    referral_id: str,
    origin: str,
    org_id: str,
    private_keys: Mapping[str, X25519PrivateKey],
    domain: bytes = _DOMAIN,
    cached: Callable[[str], bytes | None] | None = None,
) -> bytes:
    """The plaintext of a sealed body for ``org_id``; SealError saying why it cannot be opened.

    ``cached`` (key id → this body's content key, or None) opens a body whose period key
    was destroyed after its content key was kept (broker.security.shredding).
    """
    context = seal_context(referral_id, origin, sealed_for(body), domain)
    key = content_key(
        body,
        referral_id=referral_id,
        origin=origin,
        org_id=org_id,
        private_keys=private_keys,
        domain=domain,
        cached=cached,
    )
    try:
        return AESGCM(key).decrypt(bytes(body["nonce"]), bytes(body["ciphertext"]), context)
    except (InvalidTag, ValueError, KeyError, TypeError) as exc:
        raise SealError(
            f"sealed body does not open for {org_id}: altered or not for this key"
        ) from exc


def content_key(
    body: Mapping[str, Any],
    *,
    referral_id: str,
    origin: str,
    org_id: str,
    private_keys: Mapping[str, X25519PrivateKey],
    domain: bytes = _DOMAIN,
    cached: Callable[[str], bytes | None] | None = None,
) -> bytes:
    """The content key of a sealed body, unwrapped for ``org_id`` (or from ``cached``)."""
    if body.get("suite") != SUITE:
        raise SealError("sealed with an unknown suite")
    orgs = sealed_for(body)
    mine = [r for r in body.get("recipients") or () if r.get("org") == org_id]
    if not mine:
        raise SealError(
            f"not sealed for {org_id}: sealed for {len(orgs)} organisation(s) "
            f"({', '.join(orgs)}); {org_id} cannot decrypt it"
        )
    entry = mine[0]
    kid = str(entry.get("key_id"))
    private = private_keys.get(kid)
    if private is None:
        kept = cached(kid) if cached is not None else None
        if kept is not None:
            return kept
        raise SealError(f"sealed for key {kid} of {org_id}, which {org_id} does not hold")
    context = seal_context(referral_id, origin, orgs, domain)
    try:
        return _HPKE.decrypt(bytes(entry["wrapped_key"]), private, info=_info(context, org_id, kid))
    except (InvalidTag, ValueError, KeyError, TypeError) as exc:
        raise SealError(
            f"sealed body does not open for {org_id} (key {kid}): altered or not for this key"
        ) from exc


def sealed_key_id(body: Mapping[str, Any], org_id: str) -> str | None:
    """The id of ``org_id``'s key a sealed body's content key is wrapped under (None if not)."""
    for r in body.get("recipients") or ():
        if r.get("org") == org_id:
            return str(r.get("key_id"))
    return None
