"""Signatures: whoever sends a record signs its value bytes together with a context."""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.errors import SignatureInvalid
from broker.security.keys import LiveKeys, TrustStore
from broker.security.window import now_ms
from broker.wire.topics import RecordHeaders, header_values

__all__ = [
    "CHECKPOINT_DOMAIN",
    "CONTEXT_HEADER",
    "DOMAIN",
    "KEY_HEADER",
    "LEDGER_DOMAIN",
    "SIGNATURE_HEADER",
    "SIGNATURE_HEADERS",
    "STATUS_DOMAIN",
    "CheckpointContext",
    "LedgerContext",
    "LedgerSigner",
    "SignedContext",
    "StatusContext",
    "check_envelope",
    "check_status",
    "has_signature",
    "ledger_signer",
    "sign",
    "signature_key_id",
    "signed_message",
    "verify",
    "verify_signed",
]

SIGNATURE_HEADER = "referral.sig"
KEY_HEADER = "referral.sig.key"
CONTEXT_HEADER = "referral.sig.ctx"
#: The three headers of a signature (a record re-signed must drop the old ones).
SIGNATURE_HEADERS = frozenset({SIGNATURE_HEADER, KEY_HEADER, CONTEXT_HEADER})
#: Domain separation: a signature over a referral is never valid for anything else.
DOMAIN = b"referral-broker/v1/signature\n"
#: ... over a status update.
STATUS_DOMAIN = b"referral-broker/v1/status\n"
#: ... over a ledger record (one HandoverEvent or one HandoverBatch).
LEDGER_DOMAIN = b"referral-broker/v1/ledger\n"
#: ... over a ledger checkpoint.
CHECKPOINT_DOMAIN = b"referral-broker/v1/checkpoint\n"
_MAX_CONTEXT = 4096


def _ms(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


def _fields(data: bytes, versions: Mapping[str, frozenset[str]]) -> tuple[str, dict[str, str]]:
    """The version and ``name=value`` fields of a context; ValueError unless exactly expected."""
    text = data.decode("ascii")
    version, *parts = text.split(";")
    fields = dict(p.split("=", 1) for p in parts)
    if version not in versions or set(fields) != versions[version] or len(fields) != len(parts):
        raise ValueError("fields")
    return version, fields


def _malformed(kind: str) -> SignatureInvalid:
    return SignatureInvalid(f"{kind} signature context header is malformed")


class _Context(Protocol):
    DOMAIN: ClassVar[bytes]

    @property
    def signer(self) -> str: ...

    @property
    def signed_at_ms(self) -> int: ...

    def encode(self) -> bytes: ...


C = TypeVar("C", bound=_Context)


@dataclass(frozen=True)
class SignedContext:
    """What a referral's signature binds besides the value bytes."""

    DOMAIN: ClassVar[bytes] = DOMAIN
    _V1: ClassVar[frozenset[str]] = frozenset({"id", "origin", "schema", "created", "to", "cc"})

    referral_id: str
    origin: str
    schema_id: int
    created_at_ms: int
    recipients: tuple[str, ...]
    jurisdictions: tuple[str, ...]
    #: When the signature was made (a v1 context has none: its creation time stands in).
    signed_at_ms: int = field(default=-1)

    def __post_init__(self) -> None:
        if self.signed_at_ms < 0:
            object.__setattr__(self, "signed_at_ms", self.created_at_ms)

    @property
    def signer(self) -> str:
        """The organisation whose key must have made the signature: the origin."""
        return self.origin

    @classmethod
    def of(
        cls,
        envelope: Mapping[str, Any],
        schema_id: int,
        recipients: Iterable[str],
        signed_at_ms: int | None = None,
    ) -> SignedContext:
        """The context of an envelope sent to ``recipients`` with writer schema ``schema_id``."""
        return cls(
            referral_id=str(envelope["referral_id"]),
            origin=str(envelope["origin_org"]),
            schema_id=int(schema_id),
            created_at_ms=_ms(envelope["created_at"]),
            recipients=tuple(sorted(set(recipients))),
            jurisdictions=_jurisdictions(envelope),
            signed_at_ms=now_ms() if signed_at_ms is None else signed_at_ms,
        )

    def encode(self) -> bytes:
        """The canonical ASCII text of the context."""
        return (
            f"v2;id={self.referral_id};origin={self.origin};schema={self.schema_id};"
            f"created={self.created_at_ms};signed={self.signed_at_ms};"
            f"to={','.join(self.recipients)};cc={','.join(self.jurisdictions)}"
        ).encode("ascii")

    @classmethod
    def parse(cls, data: bytes) -> SignedContext:
        """Parse a context header; SignatureInvalid if it is not one."""
        try:
            version, fields = _fields(data, {"v1": cls._V1, "v2": cls._V1 | {"signed"}})
            return cls(
                referral_id=fields["id"],
                origin=fields["origin"],
                schema_id=int(fields["schema"]),
                created_at_ms=int(fields["created"]),
                recipients=tuple(fields["to"].split(",")) if fields["to"] else (),
                jurisdictions=tuple(fields["cc"].split(",")) if fields["cc"] else (),
                signed_at_ms=int(fields["signed"]) if version == "v2" else -1,
            )
        except (UnicodeDecodeError, ValueError) as exc:
            raise SignatureInvalid("signature context header is malformed") from exc


@dataclass(frozen=True)
class StatusContext:
    """What a status update's signature binds: the referral, its origin, who says what, when."""

    DOMAIN: ClassVar[bytes] = STATUS_DOMAIN
    _FIELDS: ClassVar[frozenset[str]] = frozenset({"id", "origin", "by", "status", "signed"})

    referral_id: str
    origin: str
    emitter: str
    status: str
    signed_at_ms: int

    @property
    def signer(self) -> str:
        """The organisation whose key must have made the signature: the emitter."""
        return self.emitter

    @classmethod
    def of(cls, status: Mapping[str, Any], signed_at_ms: int | None = None) -> StatusContext:
        """The context of a status update datum (Avro form)."""
        return cls(
            referral_id=str(status["referral_id"]),
            origin=str(status["origin_org"]),
            emitter=str(status["emitted_by"]),
            status=str(status["status"]),
            signed_at_ms=now_ms() if signed_at_ms is None else signed_at_ms,
        )

    def encode(self) -> bytes:
        """The canonical ASCII text of the context."""
        return (
            f"status-v1;id={self.referral_id};origin={self.origin};by={self.emitter};"
            f"status={self.status};signed={self.signed_at_ms}"
        ).encode("ascii")

    @classmethod
    def parse(cls, data: bytes) -> StatusContext:
        """Parse a status context header; SignatureInvalid if it is not one."""
        try:
            _, f = _fields(data, {"status-v1": cls._FIELDS})
            return cls(f["id"], f["origin"], f["by"], f["status"], int(f["signed"]))
        except (UnicodeDecodeError, ValueError) as exc:
            raise _malformed("status") from exc


@dataclass(frozen=True)
class LedgerContext:
    """What a ledger record's signature binds: its actor, when, and how many events it holds."""

    DOMAIN: ClassVar[bytes] = LEDGER_DOMAIN
    _FIELDS: ClassVar[frozenset[str]] = frozenset({"actor", "signed", "events"})

    actor: str
    signed_at_ms: int
    events: int

    @property
    def signer(self) -> str:
        """Whose key must have made the signature: the actor of every event in the record."""
        return self.actor

    def encode(self) -> bytes:
        """The canonical ASCII text of the context."""
        text = f"ledger-v1;actor={self.actor};signed={self.signed_at_ms};events={self.events}"
        return text.encode("ascii")

    @classmethod
    def parse(cls, data: bytes) -> LedgerContext:
        """Parse a ledger context header; SignatureInvalid if it is not one."""
        try:
            _, f = _fields(data, {"ledger-v1": cls._FIELDS})
            return cls(f["actor"], int(f["signed"]), int(f["events"]))
        except (UnicodeDecodeError, ValueError) as exc:
            raise _malformed("ledger") from exc


@dataclass(frozen=True)
class CheckpointContext:
    """What a checkpoint's signature binds besides the checkpoint text: who, and when."""

    DOMAIN: ClassVar[bytes] = CHECKPOINT_DOMAIN
    _FIELDS: ClassVar[frozenset[str]] = frozenset({"by", "signed"})

    by: str
    signed_at_ms: int

    @property
    def signer(self) -> str:
        """Whose key must have made the signature."""
        return self.by

    def encode(self) -> bytes:
        """The canonical ASCII text of the context."""
        return f"checkpoint-v1;by={self.by};signed={self.signed_at_ms}".encode("ascii")

    @classmethod
    def parse(cls, data: bytes) -> CheckpointContext:
        """Parse a checkpoint context header; SignatureInvalid if it is not one."""
        try:
            _, f = _fields(data, {"checkpoint-v1": cls._FIELDS})
            return cls(f["by"], int(f["signed"]))
        except (UnicodeDecodeError, ValueError) as exc:
            raise _malformed("checkpoint") from exc


def _jurisdictions(envelope: Mapping[str, Any]) -> tuple[str, ...]:
    codes = {str(j.get("country", "")).strip().upper() for j in envelope.get("jurisdictions") or ()}
    return tuple(sorted(codes))


def signed_message(context: bytes, value: bytes, domain: bytes = DOMAIN) -> bytes:
    """The exact bytes that are signed: domain, then length-prefixed context and value."""
    return b"".join(
        (domain, struct.pack(">I", len(context)), context, struct.pack(">I", len(value)), value)
    )


def sign(
    private: Ed25519PrivateKey, kid: str, context: _Context, value: bytes
) -> list[tuple[str, bytes]]:
    """The signature headers of ``value`` sent under ``context`` (any kind above)."""
    ctx = context.encode()
    signature = private.sign(signed_message(ctx, value, context.DOMAIN))
    return [
        (SIGNATURE_HEADER, base64.b64encode(signature)),
        (KEY_HEADER, kid.encode("ascii")),
        (CONTEXT_HEADER, ctx),
    ]


def _header(headers: RecordHeaders, name: str) -> bytes | None:
    found = header_values(headers, name)
    if len(found) > 1:
        raise SignatureInvalid(f"header {name} appears {len(found)} times")
    return found[0] if found else None


def has_signature(headers: Sequence[tuple[str, bytes | None]] | None) -> bool:
    """True if any signature header is present (then all must be, and valid)."""
    return any(k in SIGNATURE_HEADERS for k, _ in headers or ())


def signature_key_id(headers: Sequence[tuple[str, bytes | None]] | None) -> str | None:
    """The key id a record claims to be signed with (None if it names none)."""
    kid = _header(headers, KEY_HEADER)
    return kid.decode("ascii", "replace") if kid is not None else None


def verify_signed(
    headers: Sequence[tuple[str, bytes | None]] | None,
    value: bytes,
    trust: TrustStore,
    kind: type[C],
    *,
    allow_revoked: bool = False,
) -> C:
    """Check a signature of ``kind`` over ``value``; its context, or SignatureInvalid saying why.

    The key must be a trusted signing key of the signer the context names
    (``allow_revoked``: one revoked since counts too — for records kept as history).
    """
    sig, kid, ctx = (_header(headers, h) for h in (SIGNATURE_HEADER, KEY_HEADER, CONTEXT_HEADER))
    if sig is None or kid is None or ctx is None:
        raise SignatureInvalid("missing signature (referral.sig, .key and .ctx headers expected)")
    if len(ctx) > _MAX_CONTEXT:
        raise SignatureInvalid("signature context header is too long")
    context: C = kind.parse(ctx)  # type: ignore[attr-defined]
    try:
        signature = base64.b64decode(sig, validate=True)
        key_text = kid.decode("ascii")
    except (binascii.Error, ValueError) as exc:
        raise SignatureInvalid("signature header is not base64") from exc
    public = trust.signing_key(context.signer, key_text, allow_revoked=allow_revoked)
    try:
        public.verify(signature, signed_message(ctx, value, kind.DOMAIN))
    except InvalidSignature:
        raise SignatureInvalid(
            f"bad signature: the record is not what {context.signer} signed "
            f"(key {key_text}); altered on the way?"
        ) from None
    return context


def verify(
    headers: Sequence[tuple[str, bytes | None]] | None, value: bytes, trust: TrustStore
) -> SignedContext:
    """Check the signature of a referral's ``value``; its context, or SignatureInvalid."""
    return verify_signed(headers, value, trust, SignedContext)


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


def check_status(context: StatusContext, status: Mapping[str, Any]) -> None:
    """SignatureInvalid unless the decoded status update says what its signed context says."""
    if (
        str(status.get("referral_id")) != context.referral_id
        or str(status.get("origin_org")) != context.origin
        or str(status.get("emitted_by")) != context.emitter
        or str(status.get("status")) != context.status
    ):
        raise SignatureInvalid("the status update does not match its signed context")


#: Signs one ledger record: ``(value, number of events) -> signature headers`` ([]: unsigned).
LedgerSigner = Callable[[bytes, int], list[tuple[str, bytes]]]


def ledger_signer(keys: LiveKeys, actor: str) -> LedgerSigner:
    """A signer of ``actor``'s ledger records with its current key (unsigned while it has none)."""

    def sign_record(value: bytes, events: int) -> list[tuple[str, bytes]]:
        current = keys.current()
        if current is None:
            return []
        context = LedgerContext(actor, now_ms(), events)
        return sign(current.signing, current.signing_id, context, value)

    return sign_record
