"""Police messages on the wire: Avro ``PoliceMessage`` records, sealed bodies, signatures.

In clear: message and request ids, case (and referral) id, kind, sender, receiver,
when sent — what a router needs. Everything else is the sealed body: canonical
UTF-8 JSON sealed with :func:`broker.security.sealing.seal` for the sender and the
receiver (seal context id = message id, origin = sender). The record is signed by
its sender with :func:`broker.security.signing.sign` under a :class:`PoliceContext`
(its own domain, so the signature is valid for nothing else).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from broker.errors import SealError, SignatureInvalid, ValidationFailed
from broker.network import Network
from broker.requests.codes import (
    Access,
    DelayReason,
    HandlingCode,
    InfoAssessment,
    MessageKind,
    RefusalGround,
    SourceReliability,
)
from broker.security.keys import OrgKeys, TrustStore
from broker.security.sealing import open_sealed, seal
from broker.security.signing import sign, verify_signed
from broker.security.window import SignatureWindow
from broker.wire.codec import Codec
from broker.wire.registry import POLICE_MESSAGE

__all__ = [
    "POLICE_DOMAIN",
    "PoliceContext",
    "RequestError",
    "SignedMessage",
    "build_message",
    "check_content",
    "open_message",
    "verify_message",
    "window_of",
]

#: Domain separation of a police message's signature.
POLICE_DOMAIN = b"referral-broker/v1/police\n"
_CASE = re.compile(r"^[\x21-\x7e]{1,128}$")
_LANGUAGE = re.compile(r"^[a-z]{2}$")
_MAX_TEXT = 20_000


class RequestError(ValidationFailed):
    """A police request step that cannot be taken (one line, in the user's words)."""


@dataclass(frozen=True)
class PoliceContext:
    """What a police message's signature binds: ids, kind, sender, receiver, when signed."""

    DOMAIN: ClassVar[bytes] = POLICE_DOMAIN
    _FIELDS: ClassVar[frozenset[str]] = frozenset({"id", "req", "kind", "from", "to", "signed"})

    message_id: str
    request_id: str
    kind: str
    from_org: str
    to_org: str
    signed_at_ms: int

    @property
    def signer(self) -> str:
        """The organisation whose key must have made the signature: the sender."""
        return self.from_org

    def encode(self) -> bytes:
        """The canonical ASCII text of the context."""
        return (
            f"police-v1;id={self.message_id};req={self.request_id};kind={self.kind};"
            f"from={self.from_org};to={self.to_org};signed={self.signed_at_ms}"
        ).encode("ascii")

    @classmethod
    def parse(cls, data: bytes) -> PoliceContext:
        """Parse a context header; SignatureInvalid if it is not one."""
        try:
            version, *parts = data.decode("ascii").split(";")
            f = dict(p.split("=", 1) for p in parts)
            if version != "police-v1" or set(f) != cls._FIELDS or len(f) != len(parts):
                raise ValueError("fields")
            return cls(f["id"], f["req"], f["kind"], f["from"], f["to"], int(f["signed"]))
        except (UnicodeDecodeError, ValueError) as exc:
            raise SignatureInvalid("police message signature context header is malformed") from exc


@dataclass(frozen=True)
class SignedMessage:
    """A police message ready to send: its key, value bytes and signature headers."""

    message_id: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def _enum(kind: type[Any], value: Any, what: str) -> None:
    try:
        kind(value)
    except ValueError:
        known = ", ".join(str(v.value) for v in kind)
        raise RequestError(f"{what} must be one of {known}") from None


def _text(content: Mapping[str, Any], name: str, *, required: bool = True) -> None:
    value = content.get(name)
    if value is None and not required:
        return
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_TEXT:
        raise RequestError(f"{name} must be a non-empty text of at most {_MAX_TEXT} characters")


def _codes(content: Mapping[str, Any]) -> None:
    _enum(HandlingCode, content.get("handling", "H0"), "the handling code")
    _enum(SourceReliability, content.get("reliability", "X"), "the source reliability")
    _enum(InfoAssessment, content.get("assessment", "4"), "the information assessment")
    if not _LANGUAGE.match(str(content.get("language", "en"))):
        raise RequestError("the language must be a two-letter ISO 639-1 code, e.g. en")


def check_content(kind: MessageKind, content: Mapping[str, Any]) -> None:
    """RequestError unless ``content`` is what a ``kind`` message must carry."""
    _codes(content)
    if kind is MessageKind.REQUEST:
        if not isinstance(content.get("urgent"), bool):
            raise RequestError("a request must say whether it is urgent")
        _enum(Access, content.get("access"), "the accessibility")
        _text(content, "purpose")
        items = content.get("items")
        if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
            raise RequestError("a request must name at least one requested item")
    elif kind is MessageKind.ANSWER:
        _text(content, "text")
        for att in content.get("attachments") or ():
            if not isinstance(att, dict) or not isinstance(att.get("data"), str):
                raise RequestError("an attachment must have a name and data")
    elif kind is MessageKind.REFUSAL:
        _enum(RefusalGround, content.get("ground"), "the refusal ground (Art. 6)")
        _text(content, "note", required=False)
    elif kind is MessageKind.CLARIFICATION_ASKED:
        _text(content, "question")
    elif kind is MessageKind.CLARIFICATION_GIVEN:
        _text(content, "text")
    elif kind is MessageKind.DELAY:
        _enum(DelayReason, content.get("reason"), "the delay reason")
        if not isinstance(content.get("expected_ms"), int):
            raise RequestError("a delay must give the expected date of the answer")


def build_message(
    codec: Codec,
    keys: OrgKeys,
    trust: TrustStore,
    *,
    kind: MessageKind,
    request_id: str | None,
    case_id: str,
    referral_id: str | None,
    to_org: str,
    sent_at_ms: int,
    signed_at_ms: int,
    content: Mapping[str, Any],
) -> SignedMessage:
    """A signed PoliceMessage sealed for sender and receiver (a REQUEST: ``request_id`` None)."""
    check_content(kind, content)
    if not _CASE.match(case_id):
        raise RequestError("the case id must be 1-128 printable characters without spaces")
    message_id = str(uuid.uuid4())
    request_id = request_id or message_id
    from_org = keys.org_id
    plaintext = json.dumps(dict(content), sort_keys=True, separators=(",", ":")).encode()
    recipients = {org: trust.encryption_key(org) for org in {from_org, to_org}}
    body = seal(plaintext, referral_id=message_id, origin=from_org, recipients=recipients)
    datum = {
        "message_id": message_id,
        "request_id": request_id,
        "case_id": case_id,
        "referral_id": referral_id,
        "kind": kind.value,
        "from_org": from_org,
        "to_org": to_org,
        "sent_at": sent_at_ms,
        "body": body,
    }
    value = codec.encode(POLICE_MESSAGE, datum)
    context = PoliceContext(message_id, request_id, kind.value, from_org, to_org, signed_at_ms)
    headers = sign(keys.signing, keys.signing_id, context, value)
    return SignedMessage(message_id, request_id.encode(), value, headers)


def window_of(network: Network) -> SignatureWindow:
    """The network's signature window (``[network] signature_max_age_days`` and skew)."""
    info = network.network
    return SignatureWindow(info.signature_max_age_days, info.signature_clock_skew_seconds)


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else int(value)


def verify_message(
    codec: Codec,
    trust: TrustStore,
    headers: Sequence[tuple[str, bytes | None]] | None,
    value: bytes,
    window: SignatureWindow | None = None,
) -> dict[str, Any]:
    """The decoded envelope of a police message whose sender's signature holds; else an error.

    ``window``: the signature must also have been made within it (an old message replayed fails).
    """
    context = verify_signed(headers, value, trust, PoliceContext)
    if window is not None:
        window.check(context.signed_at_ms, what="police message signature")
    _, datum = codec.decode(value, expected=POLICE_MESSAGE)
    if (
        str(datum["message_id"]) != context.message_id
        or str(datum["request_id"]) != context.request_id
        or str(datum["kind"]) != context.kind
        or str(datum["from_org"]) != context.from_org
        or str(datum["to_org"]) != context.to_org
    ):
        raise SignatureInvalid("the police message does not match its signed context")
    datum["sent_at"] = _ms(datum["sent_at"])
    return datum


def open_message(datum: Mapping[str, Any], keys: OrgKeys) -> dict[str, Any]:
    """The content of a verified police message for ``keys``' organisation; SealError if not."""
    plaintext = open_sealed(
        datum["body"],
        referral_id=str(datum["message_id"]),
        origin=str(datum["from_org"]),
        org_id=keys.org_id,
        private_keys=keys.encryption,
    )
    try:
        content = json.loads(plaintext)
    except ValueError as exc:
        raise SealError("the sealed content is not a police message body") from exc
    if not isinstance(content, dict):
        raise SealError("the sealed content is not a police message body")
    check_content(MessageKind(str(datum["kind"])), content)
    return content
