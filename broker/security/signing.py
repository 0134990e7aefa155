"""Signatures: the origin signs each referral's value bytes together with a context.

The **context** binds what the bytes alone cannot: which schema id the frame
was written with and who the referral is meant for. It travels in a header as
canonical ASCII text, e.g.::

    v1;id=<referral_id>;origin=<org>;schema=5;created=<ms>;to=police-de,police-nl;cc=DE,NL

(``to`` = the organisations the routing decision sends the referral to, sorted;
``cc`` = the envelope's jurisdictions, upper-case, sorted, distinct.)

The signed message is (see ``schemas/README.md`` for other languages)::

    b"referral-broker/v1/signature\\n"
    || uint32_be(len(context)) || context
    || uint32_be(len(value))   || value          # the Kafka record value, framed

and the signature is Ed25519 over it with the origin's signing key. Headers:
``referral.sig`` (base64 signature), ``referral.sig.key`` (key id),
``referral.sig.ctx`` (the context). A receiver verifies the signature first
(before decoding a byte), then that the decoded envelope agrees with the
context (:func:`check_envelope`), and that it is itself among ``to``.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.errors import SignatureInvalid
from broker.security.keys import TrustStore

__all__ = [
    "CONTEXT_HEADER",
    "DOMAIN",
    "KEY_HEADER",
    "SIGNATURE_HEADER",
    "SignedContext",
    "check_envelope",
    "has_signature",
    "sign",
    "signed_message",
    "verify",
]

SIGNATURE_HEADER = "referral.sig"
KEY_HEADER = "referral.sig.key"
CONTEXT_HEADER = "referral.sig.ctx"
#: Domain separation: a signature over a referral is never valid for anything else.
DOMAIN = b"referral-broker/v1/signature\n"
_MAX_CONTEXT = 4096


def _ms(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


@dataclass(frozen=True)
class SignedContext:
    """What a signature binds besides the value bytes."""

    referral_id: str
    origin: str
    schema_id: int
    created_at_ms: int
    recipients: tuple[str, ...]
    jurisdictions: tuple[str, ...]

    @classmethod
    def of(
        cls, envelope: Mapping[str, Any], schema_id: int, recipients: Iterable[str]
    ) -> SignedContext:
        """The context of an envelope sent to ``recipients`` with writer schema ``schema_id``."""
        return cls(
            referral_id=str(envelope["referral_id"]),
            origin=str(envelope["origin_org"]),
            schema_id=int(schema_id),
            created_at_ms=_ms(envelope["created_at"]),
            recipients=tuple(sorted(set(recipients))),
            jurisdictions=_jurisdictions(envelope),
        )

    def encode(self) -> bytes:
        """The canonical ASCII text of the context."""
        return (
            f"v1;id={self.referral_id};origin={self.origin};schema={self.schema_id};"
            f"created={self.created_at_ms};to={','.join(self.recipients)};"
            f"cc={','.join(self.jurisdictions)}"
        ).encode("ascii")

    @classmethod
    def parse(cls, data: bytes) -> SignedContext:
        """Parse a context header; SignatureInvalid if it is not one."""
        try:
            text = data.decode("ascii")
            version, *parts = text.split(";")
            fields = dict(p.split("=", 1) for p in parts)
            if version != "v1" or set(fields) != {"id", "origin", "schema", "created", "to", "cc"}:
                raise ValueError("fields")
            return cls(
                referral_id=fields["id"],
                origin=fields["origin"],
                schema_id=int(fields["schema"]),
                created_at_ms=int(fields["created"]),
                recipients=tuple(fields["to"].split(",")) if fields["to"] else (),
                jurisdictions=tuple(fields["cc"].split(",")) if fields["cc"] else (),
            )
        except (UnicodeDecodeError, ValueError) as exc:
            raise SignatureInvalid("signature context header is malformed") from exc


def _jurisdictions(envelope: Mapping[str, Any]) -> tuple[str, ...]:
    codes = {str(j.get("country", "")).strip().upper() for j in envelope.get("jurisdictions") or ()}
    return tuple(sorted(codes))


def signed_message(context: bytes, value: bytes) -> bytes:
    """The exact bytes that are signed: domain, then length-prefixed context and value."""
    return b"".join(
        (DOMAIN, struct.pack(">I", len(context)), context, struct.pack(">I", len(value)), value)
    )


def sign(
    private: Ed25519PrivateKey, kid: str, context: SignedContext, value: bytes
) -> list[tuple[str, bytes]]:
    """The signature headers of ``value`` sent under ``context``."""
    ctx = context.encode()
    signature = private.sign(signed_message(ctx, value))
    return [
        (SIGNATURE_HEADER, base64.b64encode(signature)),
        (KEY_HEADER, kid.encode("ascii")),
        (CONTEXT_HEADER, ctx),
    ]


def _header(headers: Sequence[tuple[str, bytes | None]] | None, name: str) -> bytes | None:
    found = [v or b"" for k, v in headers or () if k == name]
    if len(found) > 1:
        raise SignatureInvalid(f"header {name} appears {len(found)} times")
    return found[0] if found else None


def has_signature(headers: Sequence[tuple[str, bytes | None]] | None) -> bool:
    """True if any signature header is present (then all must be, and valid)."""
    return any(k in (SIGNATURE_HEADER, KEY_HEADER, CONTEXT_HEADER) for k, _ in headers or ())


def verify(
    headers: Sequence[tuple[str, bytes | None]] | None, value: bytes, trust: TrustStore
) -> SignedContext:
    """Check the signature of ``value``; its context, or SignatureInvalid saying why."""
    sig, kid, ctx = (_header(headers, h) for h in (SIGNATURE_HEADER, KEY_HEADER, CONTEXT_HEADER))
    if sig is None or kid is None or ctx is None:
        raise SignatureInvalid("missing signature (referral.sig, .key and .ctx headers expected)")
    if len(ctx) > _MAX_CONTEXT:
        raise SignatureInvalid("signature context header is too long")
    context = SignedContext.parse(ctx)
    try:
        signature = base64.b64decode(sig, validate=True)
        key_text = kid.decode("ascii")
    except (binascii.Error, ValueError) as exc:
        raise SignatureInvalid("signature header is not base64") from exc
    public = trust.signing_key(context.origin, key_text)
    try:
        public.verify(signature, signed_message(ctx, value))
    except InvalidSignature:
        raise SignatureInvalid(
            f"bad signature: the record is not what {context.origin} signed "
            f"(key {key_text}); altered on the way?"
        ) from None
    return context


def check_envelope(context: SignedContext, envelope: Mapping[str, Any], schema_id: int) -> None:
    """SignatureInvalid unless the decoded envelope says what the signed context says."""
    if (
        str(envelope.get("referral_id")) != context.referral_id
        or str(envelope.get("origin_org")) != context.origin
        or _ms(envelope.get("created_at", 0)) != context.created_at_ms
        or _jurisdictions(envelope) != context.jurisdictions
        or schema_id != context.schema_id
    ):
        raise SignatureInvalid("the envelope does not match the signed context")
