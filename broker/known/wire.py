"""The known-content messages on Kafka: evaluation requests and answers, match-token records.

All three are compact JSON (they carry group elements, tokens and labels, never a hash
or a URL), signed with the sender's organisation key under :class:`KnownContext`:

* ``known.evaluate``: ``{"v":1,"request":id,"org":org,"key":kid|null,"blinded":[b64]}``,
  signed by the requesting organisation (the evaluator rate-limits the signer);
* ``known.evaluated``: ``{"v":1,"request":id,"org":org,"key":kid,"evaluated":[b64]}``
  or ``{..., "refused": reason}``, signed by the evaluator;
* ``match.tokens``: :class:`MatchRecord`, keyed by key id, token, holder and reference
  (compaction keeps the latest per key), signed by the holder.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from broker.errors import SignatureInvalid
from broker.known.errors import OprfError
from broker.security.keys import OrgKeys, TrustStore
from broker.security.signing import sign, verify_signed
from broker.security.window import now_ms

__all__ = [
    "Answer",
    "KnownContext",
    "MatchRecord",
    "Request",
    "decode_answer",
    "decode_match",
    "decode_request",
    "encode_answer",
    "encode_match",
    "encode_request",
    "reference",
    "sign_known",
    "verify_known",
]

KNOWN_DOMAIN = b"referral-broker/v1/known\n"
_KINDS = frozenset({"request", "answer", "token"})
_MAX_ELEMENTS = 10_000


@dataclass(frozen=True)
class KnownContext:
    """What a known-content signature binds: who signed, when, and which message kind."""

    DOMAIN: ClassVar[bytes] = KNOWN_DOMAIN

    by: str
    signed_at_ms: int
    what: str

    @property
    def signer(self) -> str:
        """Whose key must have made the signature."""
        return self.by

    def encode(self) -> bytes:
        """The canonical ASCII text of the context."""
        return f"known-v1;by={self.by};signed={self.signed_at_ms};what={self.what}".encode()

    @classmethod
    def parse(cls, data: bytes) -> KnownContext:
        """Parse a known-content context header; SignatureInvalid if it is not one."""
        try:
            version, *parts = data.decode("ascii").split(";")
            fields = dict(p.split("=", 1) for p in parts)
            if version != "known-v1" or set(fields) != {"by", "signed", "what"}:
                raise ValueError("fields")
            if fields["what"] not in _KINDS:
                raise ValueError("kind")
            return cls(fields["by"], int(fields["signed"]), fields["what"])
        except (UnicodeDecodeError, ValueError) as exc:
            raise SignatureInvalid("known-content signature context header is malformed") from exc


def sign_known(keys: OrgKeys | None, what: str, value: bytes) -> list[tuple[str, bytes]]:
    """Signature headers of ``value`` (a ``what`` message) by ``keys`` ([] without keys)."""
    if keys is None:
        return []
    context = KnownContext(keys.org_id, now_ms(), what)
    return sign(keys.signing, keys.signing_id, context, value)


def verify_known(
    headers: Any, value: bytes, trust: TrustStore, what: str, signer: str, allow_plain: bool
) -> None:
    """SignatureInvalid unless ``value`` is a ``what`` message signed by ``signer``.

    Unsigned is accepted only when ``allow_plain`` and ``signer`` has no signing key.
    """
    if not headers or not any(k == "referral.sig" for k, _ in headers):
        if allow_plain and not trust.has_signing_keys(signer):
            return
        raise SignatureInvalid(f"unsigned {what} from {signer}")
    context = verify_signed(headers, value, trust, KnownContext)
    if context.by != signer or context.what != what:
        raise SignatureInvalid(f"the {what} is not signed by {signer} as a {what}")


def _b64(items: Sequence[bytes]) -> list[str]:
    return [base64.b64encode(x).decode("ascii") for x in items]


def _unb64(items: Any) -> tuple[bytes, ...]:
    if not isinstance(items, list) or len(items) > _MAX_ELEMENTS:
        raise OprfError("not a list of at most 10,000 elements")
    try:
        return tuple(base64.b64decode(str(x), validate=True) for x in items)
    except (binascii.Error, ValueError) as exc:
        raise OprfError("an element is not base64") from exc


def _load(value: bytes) -> dict[str, Any]:
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, ValueError) as exc:
        raise OprfError("not a known-content message (JSON expected)") from exc
    if not isinstance(data, dict) or data.get("v") != 1:
        raise OprfError("not a version-1 known-content message")
    return data


@dataclass(frozen=True)
class Request:
    """An evaluation request as it travels: request id, organisation, key id, blinded elements."""

    request: str
    org: str
    key: str | None
    blinded: tuple[bytes, ...]


@dataclass(frozen=True)
class Answer:
    """The evaluator's answer: evaluated elements under ``key``, or a refusal's reason."""

    request: str
    org: str
    key: str | None
    evaluated: tuple[bytes, ...] = ()
    refused: str | None = None


def encode_request(req: Request) -> bytes:
    """The JSON bytes of a request."""
    body = {"v": 1, "request": req.request, "org": req.org, "key": req.key}
    return json.dumps({**body, "blinded": _b64(req.blinded)}, separators=(",", ":")).encode()


def decode_request(value: bytes) -> Request:
    """A request from its bytes; OprfError if malformed."""
    data = _load(value)
    key = data.get("key")
    return Request(
        str(data.get("request", "")),
        str(data.get("org", "")),
        None if key is None else str(key),
        _unb64(data.get("blinded")),
    )


def encode_answer(answer: Answer) -> bytes:
    """The JSON bytes of an answer."""
    body: dict[str, Any] = {"v": 1, "request": answer.request, "org": answer.org}
    body["key"] = answer.key
    if answer.refused is not None:
        body["refused"] = answer.refused
    else:
        body["evaluated"] = _b64(answer.evaluated)
    return json.dumps(body, separators=(",", ":")).encode()


def decode_answer(value: bytes) -> Answer:
    """An answer from its bytes; OprfError if malformed."""
    data = _load(value)
    key = data.get("key")
    refused = data.get("refused")
    return Answer(
        str(data.get("request", "")),
        str(data.get("org", "")),
        None if key is None else str(key),
        () if refused is not None else _unb64(data.get("evaluated")),
        None if refused is None else str(refused)[:300],
    )


def reference(token: bytes, referral_id: str, item_id: str) -> str:
    """Which referral item a token record is of, readable only by who holds the token."""
    mac = hmac.new(token, f"{referral_id}/{item_id}".encode(), hashlib.sha256)
    return mac.hexdigest()[:32]


@dataclass(frozen=True)
class MatchRecord:
    """One entry of ``match.tokens``: a token, who holds the item, and what they said of it.

    Under TLP RED the holder publishes neither classification nor case status.
    """

    key: str
    token: str
    holder: str
    ref: str
    kind: str
    tlp: str
    assessed_at_ms: int
    classification: str | None = None
    case_status: str | None = None

    def record_key(self) -> bytes:
        """The compaction key: one live entry per key id, token, holder and item."""
        return f"{self.key}:{self.token}:{self.holder}:{self.ref}".encode("ascii")


def encode_match(record: MatchRecord) -> bytes:
    """The JSON bytes of a match-token record."""
    return json.dumps({"v": 1, **asdict(record)}, separators=(",", ":")).encode()


def decode_match(value: bytes) -> MatchRecord:
    """A match-token record from its bytes; OprfError if malformed."""
    data = _load(value)
    try:
        return MatchRecord(
            str(data["key"]),
            str(data["token"]),
            str(data["holder"]),
            str(data["ref"]),
            str(data["kind"]),
            str(data["tlp"]),
            int(data["assessed_at_ms"]),
            None if data.get("classification") is None else str(data["classification"]),
            None if data.get("case_status") is None else str(data["case_status"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise OprfError("a match-token record lacks a field") from exc
