"""The security rules at both ends: the origin seals and signs, the receiver verifies and opens."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import fastavro

from broker.config import Settings
from broker.errors import (
    Misrouted,
    NotARecipient,
    ReferralError,
    SealError,
    SecurityError,
    SignatureInvalid,
    SignatureOutOfWindow,
)
from broker.kafka.deadletter import DeadLetterStage
from broker.network import Network
from broker.routing.check import check_arrival, check_recipient
from broker.routing.decide import DecisionCache
from broker.security.keys import LiveKeys, LiveTrust, OrgKeys, TrustStore, key_dir
from broker.security.sealing import is_sealed, open_sealed, seal, sealed_for
from broker.security.shredding import CACHE_FILE, ContentKeyCache
from broker.security.signing import (
    LedgerSigner,
    SignedContext,
    StatusContext,
    check_envelope,
    check_status,
    has_signature,
    ledger_signer,
    sign,
    verify,
    verify_signed,
)
from broker.security.status_seal import has_content, open_status, seal_status
from broker.security.window import SignatureWindow
from broker.sqlite import Database
from broker.wire.codec import Codec
from broker.wire.registry import REFERRAL, STATUS_UPDATE, Registry
from broker.wire.topics import TopicNames

__all__ = [
    "RESTRICTED_TLP",
    "BodyCodec",
    "HandlingLog",
    "OriginSecurity",
    "ReceiverSecurity",
    "network_window",
    "stage_of",
]

#: TLP labels whose cases may not leave the receiving organisation again; revealing
#: their bodies needs a reason and is recorded (ACCESSED).
RESTRICTED_TLP = frozenset({"AMBER_STRICT", "RED"})
#: Handling codes whose cases may not leave the receiving organisation again.
_NO_ONWARD_CODES = frozenset({"H2"})


def stage_of(exc: SecurityError) -> DeadLetterStage:
    """The dead-letter stage of a security refusal."""
    if isinstance(exc, SignatureOutOfWindow):
        return DeadLetterStage.SIGNATURE_WINDOW
    if isinstance(exc, SignatureInvalid):
        return DeadLetterStage.VERIFY
    if isinstance(exc, SealError):
        return DeadLetterStage.UNSEAL
    if isinstance(exc, Misrouted):
        return DeadLetterStage.ROUTE_CHECK
    if isinstance(exc, NotARecipient):
        return DeadLetterStage.STATUS_VERIFY
    return DeadLetterStage.HANDLING


def network_window(network: Network) -> SignatureWindow:
    """The signature window the network file sets (``[network] signature_*``)."""
    info = network.network
    return SignatureWindow(info.signature_max_age_days, info.signature_clock_skew_seconds)


class BodyCodec:
    """The CaseBody datum alone, with the CaseBody branch of a Referral schema version."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._parsed: dict[int, Any] = {}

    def _schema(self, schema_id: int) -> Any:
        parsed = self._parsed.get(schema_id)
        if parsed is None:
            schema = self.registry.by_id(schema_id).schema
            envelope_type, body_type = schema["fields"][0]["type"], schema["fields"][-1]["type"]
            branches = body_type if isinstance(body_type, list) else [body_type]
            case_body = next(b for b in branches if isinstance(b, dict) and b["name"] == "CaseBody")
            named: dict[str, Any] = {}
            fastavro.parse_schema(envelope_type, named_schemas=named)
            parsed = fastavro.parse_schema(case_body, named_schemas=named)
            self._parsed[schema_id] = parsed
        return parsed

    def current_id(self) -> int:
        """The schema id referrals are written with now."""
        return self.registry.latest(REFERRAL).id

    def encode(self, schema_id: int, body: Mapping[str, Any]) -> bytes:
        """The Avro binary datum of ``body``."""
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self._schema(schema_id), dict(body))
        return buf.getvalue()

    def decode(self, schema_id: int, data: bytes) -> dict[str, Any]:
        """A CaseBody datum written with ``schema_id``, in the current schema's shape."""
        current = self.current_id()
        reader = None if current == schema_id else self._schema(current)
        fo = io.BytesIO(data)
        try:
            datum = fastavro.schemaless_reader(fo, self._schema(schema_id), reader)
        except Exception as exc:  # corrupt plaintext despite an intact tag: refuse, never crash
            raise SealError(f"opened body does not decode: {type(exc).__name__}") from exc
        if fo.tell() != len(data) or not isinstance(datum, dict):
            raise SealError("opened body is not one CaseBody datum")
        return datum


class HandlingLog:
    """What an organisation received under restrictive handling, by case id (SQLite)."""

    def __init__(self, path: Path) -> None:
        # Keyed by (origin, referral id): another origin re-using an id cannot mask a case.
        self._db = Database(
            path,
            "CREATE TABLE IF NOT EXISTS handled (origin TEXT NOT NULL,"
            " referral_id TEXT NOT NULL, case_id TEXT NOT NULL, tlp TEXT NOT NULL,"
            " handling_code TEXT NOT NULL, at REAL NOT NULL,"
            " PRIMARY KEY (origin, referral_id));",
        )

    @classmethod
    def for_org(cls, settings: Settings, org_id: str) -> HandlingLog:
        """``<state_dir>/orgs/<org>/handling.sqlite3``."""
        return cls(settings.org_dir(org_id) / "handling.sqlite3")

    def record(self, envelope: Mapping[str, Any]) -> None:
        """Remember the handling of a received referral."""
        handling = envelope.get("handling") or {}
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO handled VALUES (?, ?, ?, ?, ?, ?)",
                (
                    str(envelope.get("origin_org")),
                    str(envelope.get("referral_id")),
                    str(envelope.get("case_id")),
                    str(handling.get("tlp")),
                    str(handling.get("handling_code")),
                    time.time(),
                ),
            )

    def restrictions(self, case_id: str) -> list[tuple[str, str, str]]:
        """(origin, tlp, handling code) of each received referral of ``case_id``."""
        rows = self._db.query(
            "SELECT origin, tlp, handling_code FROM handled WHERE case_id = ?", (case_id,)
        )
        return [(str(o), str(t), str(h)) for o, t, h in rows]

    def erase(self, origin_org: str, referral_id: str) -> int:
        """Forget one referral's handling record; rows gone."""
        return self._db.erase(
            [
                (
                    "DELETE FROM handled WHERE origin = ? AND referral_id = ?",
                    (origin_org, referral_id),
                )
            ]
        )

    def close(self) -> None:
        """Close the database."""
        self._db.close()


def _describe(tlp: str, code: str) -> str:
    label = {"AMBER_STRICT": "TLP:AMBER+STRICT", "RED": "TLP:RED"}.get(tlp)
    return label if label is not None and tlp in RESTRICTED_TLP else f"handling code {code}"


class _OrgSecurity:
    """What both sides hold: the network, the organisation's keys, the trust store, its log.

    ``keys`` and ``trust`` may be fixed or live (re-read when their files change);
    the properties always give the current ones.
    """

    def __init__(
        self,
        network: Network,
        org_id: str,
        keys: OrgKeys | LiveKeys | None,
        trust: TrustStore | LiveTrust,
        handling: HandlingLog | None = None,
        *,
        names: TopicNames | None = None,
    ) -> None:
        self.network = network
        self.org_id = org_id
        self.live_keys = keys if isinstance(keys, LiveKeys) else LiveKeys.fixed(keys, org_id)
        self.live_trust = trust if isinstance(trust, LiveTrust) else LiveTrust.fixed(trust)
        self.handling = handling
        self.names = names or TopicNames()
        self.window = network_window(network)
        self._decisions = DecisionCache(network, self.names)
        self._bodies: BodyCodec | None = None

    @staticmethod
    def _live(settings: Settings, network: Network, org_id: str) -> tuple[LiveKeys, LiveTrust]:
        return (
            LiveKeys(key_dir(settings, org_id), org_id),
            LiveTrust(network, settings.network_file),
        )

    @property
    def keys(self) -> OrgKeys | None:
        """The organisation's private keys as they are now (None: it has none)."""
        return self.live_keys.current()

    @property
    def trust(self) -> TrustStore:
        """The network's trust store as the trust file says now."""
        return self.live_trust.current()

    def _body_codec(self, codec: Codec) -> BodyCodec:
        """The case-body codec on ``codec``'s registry (built once)."""
        if self._bodies is None:
            self._bodies = BodyCodec(codec.registry)
        return self._bodies

    def sign_status(self, value: bytes, status: Mapping[str, Any]) -> list[tuple[str, bytes]]:
        """The signature headers of a status update this organisation emits.

        Without keys the update goes plain, only where the network allows plain referrals.
        """
        keys = self.keys
        if keys is None:
            if not self.network.network.allow_plain:
                raise SecurityError(
                    f"plain status updates are not allowed in this network and {self.org_id} "
                    f"has no keys to sign them (run `referral keys init {self.org_id}`)"
                )
            return []
        return sign(keys.signing, keys.signing_id, StatusContext.of(status), value)

    def seal_status(self, codec: Codec, status: dict[str, Any]) -> dict[str, Any]:
        """The status datum with what it says sealed for its origin (:mod:`.status_seal`).

        As it is when it says nothing to seal, or when this organisation has no keys; plain
        also where the network allows plain referrals and the origin has no encryption key.
        """
        if self.keys is None or not has_content(status):
            return status
        try:
            key = self.trust.encryption_key(str(status["origin_org"]))
        except SealError:
            if self.network.network.allow_plain:
                return status
            raise
        return seal_status(codec, status, key)

    def ledger_signer(self) -> LedgerSigner:
        """Signs this organisation's ledger records with its current key (unsigned without)."""
        return ledger_signer(self.live_keys, self.org_id)

    def close(self) -> None:
        """Close the handling log."""
        if self.handling is not None:
            self.handling.close()


class OriginSecurity(_OrgSecurity):
    """What the publishing organisation does to each referral before it leaves, and to each
    status update about it before acting on one."""

    @classmethod
    def load(cls, settings: Settings, network: Network, org_id: str) -> OriginSecurity:
        """The origin's keys from its key directory, the network's trust store and its log."""
        keys, trust = cls._live(settings, network, org_id)
        return cls(
            network,
            org_id,
            keys,
            trust,
            HandlingLog.for_org(settings, org_id),
            names=settings.topic_names(),
        )

    def check_onward(self, envelope: Mapping[str, Any]) -> None:
        """SecurityError if this referral forwards a case received under no-onward handling."""
        if self.handling is None:
            return
        for origin, tlp, code in self.handling.restrictions(str(envelope.get("case_id"))):
            if tlp in RESTRICTED_TLP or code in _NO_ONWARD_CODES:
                raise SecurityError(
                    f"re-referral refused: {self.org_id} received this case from {origin} "
                    f"under {_describe(tlp, code)}, which may not be forwarded beyond {self.org_id}"
                )

    def encode(
        self, codec: Codec, datum: dict[str, Any], recipients: Iterable[str]
    ) -> tuple[bytes, list[tuple[str, bytes]]]:
        """The value bytes and signature headers: sealed and signed, or plain where allowed."""
        envelope = datum["envelope"]
        keys = self.keys
        if keys is None:
            if not self.network.network.allow_plain:
                raise SecurityError(
                    f"plain referrals are not allowed in this network and {self.org_id} has no "
                    f"keys to seal and sign (run `referral keys init {self.org_id}`)"
                )
            return codec.encode(REFERRAL, datum), []
        bodies = self._body_codec(codec)
        schema_id = bodies.current_id()
        to = sorted(set(recipients))
        trust = self.trust
        sealed_keys = {org: trust.encryption_key(org) for org in to}
        plaintext = bodies.encode(schema_id, datum["body"])
        body = seal(
            plaintext,
            referral_id=str(envelope["referral_id"]),
            origin=self.org_id,
            recipients=sealed_keys,
        )
        value = codec.encode(REFERRAL, {**datum, "body": body})
        context = SignedContext.of(envelope, schema_id, to)
        return value, sign(keys.signing, keys.signing_id, context, value)

    def receive_status(
        self, codec: Codec, value: bytes, headers: Any
    ) -> tuple[dict[str, Any], StatusContext | None]:
        """A status update addressed to this origin, its signature checked; SecurityError if not.

        The signature is checked before a byte is decoded; then its window, that the
        decoded update says what was signed, and that it is addressed to this
        organisation; a sealed content is opened (SealError if it does not open or
        differs from the update in clear). Unsigned updates pass only where the network allows plain
        referrals and the emitter has no signing key on record. Codec errors pass through.
        """
        context = None
        if has_signature(headers):
            context = verify_signed(headers, value, self.trust, StatusContext)
            self.window.check(context.signed_at_ms, what="status signature")
        _, datum = codec.decode(value, expected=STATUS_UPDATE)
        emitter = str(datum.get("emitted_by"))
        if context is not None:
            check_status(context, datum)
        elif not self.network.network.allow_plain or self.trust.has_signing_keys(emitter):
            raise SignatureInvalid(f"missing signature on a status update from {emitter}")
        if str(datum.get("origin_org")) != self.org_id:
            raise NotARecipient(
                f"status update for the referrals of {datum.get('origin_org')}, not {self.org_id}"
            )
        if datum.get("sealed") is not None:
            keys = self.keys
            if keys is None:
                raise SealError(f"sealed status update, but {self.org_id} has no private keys")
            datum = open_status(codec, datum, self.org_id, keys.encryption)
        return datum, context

    def check_status_sender(
        self, status: Mapping[str, Any], envelope: Mapping[str, Any] | None
    ) -> None:
        """NotARecipient unless ``envelope`` (as this origin signed and kept it) is the
        referral the update is about and routes it to the update's emitter."""
        rid = str(status.get("referral_id"))
        if (
            envelope is None
            or str(envelope.get("origin_org")) != self.org_id
            or str(envelope.get("referral_id")) != rid
        ):
            raise NotARecipient(f"status update about a referral {self.org_id} did not publish")
        try:
            decision = self._decisions.decide(envelope)
        except ReferralError as exc:
            raise NotARecipient("the referral's envelope no longer routes anywhere") from exc
        check_recipient(decision, str(status.get("emitted_by")))


class ReceiverSecurity(_OrgSecurity):
    """The checks a receiving organisation makes before a referral reaches its system."""

    def __init__(
        self,
        network: Network,
        org_id: str,
        names: TopicNames,
        keys: OrgKeys | LiveKeys | None,
        trust: TrustStore | LiveTrust,
        handling: HandlingLog | None = None,
    ) -> None:
        super().__init__(network, org_id, keys, trust, handling, names=names)

    @classmethod
    def load(cls, settings: Settings, network: Network, org_id: str) -> ReceiverSecurity:
        """The receiver's keys, the network's trust store and the receiver's handling log."""
        keys, trust = cls._live(settings, network, org_id)
        return cls(
            network,
            org_id,
            settings.topic_names(),
            keys,
            trust,
            HandlingLog.for_org(settings, org_id),
        )

    def receive(self, codec: Codec, topic: str, value: bytes, headers: Any) -> dict[str, Any]:
        """The referral datum with its body opened; SecurityError (see :func:`stage_of`) if not.

        Codec errors of the value pass through (the record is not a referral at all).
        """
        return self.receive_sealed(codec, topic, value, headers)[0]

    def receive_sealed(
        self, codec: Codec, topic: str, value: bytes, headers: Any
    ) -> tuple[dict[str, Any], Mapping[str, Any] | None]:
        """:meth:`receive`, and the sealed body as it arrived (None: a plain body)."""
        trust = self.trust
        context = verify(headers, value, trust) if has_signature(headers) else None
        if context is not None:
            self.window.check(context.signed_at_ms, what="referral signature")
        _, datum = codec.decode(value, expected=REFERRAL)
        envelope, body = datum["envelope"], datum["body"]
        schema_id = codec.schema_id_of(value)
        origin = str(envelope["origin_org"])
        if context is not None:
            check_envelope(context, envelope, schema_id)
        else:
            plain_ok = self.network.network.allow_plain and not trust.has_signing_keys(origin)
            if is_sealed(body) or not plain_ok:
                raise SignatureInvalid(f"missing signature on a referral from {origin}")
        self.check_route(envelope, topic)
        sealed = body if is_sealed(body) else None
        if is_sealed(body):
            plaintext = self._open(body, envelope, context)
            datum["body"] = self._body_codec(codec).decode(schema_id, plaintext)
        else:
            if not self.network.network.allow_plain:
                raise SealError("plain body refused: this network requires sealed referrals")
            if context is not None and self.org_id not in context.recipients:
                raise SignatureInvalid(
                    f"not addressed to {self.org_id}: signed recipients are "
                    f"{','.join(context.recipients)}"
                )
        handling = envelope.get("handling") or {}
        if handling.get("tlp") == "RED" and self.org_id not in (handling.get("recipients") or ()):
            raise SecurityError(
                f"TLP:RED referral for named recipients only; {self.org_id} is not one of them"
            )
        if self.handling is not None:
            self.handling.record(envelope)
        return datum, sealed

    def check_route(self, envelope: Mapping[str, Any], topic: str) -> None:
        """Misrouted unless the decision for ``envelope`` puts this organisation on ``topic``."""
        try:
            decision = self._decisions.decide(envelope)
        except ReferralError as exc:
            raise Misrouted(f"misrouted: the envelope cannot be routed ({exc})") from exc
        check_arrival(decision, topic, self.org_id, self.names)

    def _kept(self, origin: str, referral_id: str, version: int) -> Callable[[str], bytes | None]:
        """The content key kept for a body whose period key was destroyed (opened lazily)."""

        def get(kid: str) -> bytes | None:
            directory = self.live_keys.directory
            if directory is None or not (directory / CACHE_FILE).exists():
                return None
            cache = ContentKeyCache.in_key_dir(directory)
            try:
                return cache.lookup(origin, referral_id, version)(kid)
            finally:
                cache.close()

        return get

    def _open(
        self,
        body: Mapping[str, Any],
        envelope: Mapping[str, Any],
        context: SignedContext | None,
    ) -> bytes:
        keys = self.keys
        if keys is None:
            raise SealError(
                f"sealed body, but {self.org_id} has no private keys "
                f"(run `referral keys init {self.org_id}`)"
            )
        plaintext = open_sealed(
            body,
            referral_id=str(envelope["referral_id"]),
            origin=str(envelope["origin_org"]),
            org_id=self.org_id,
            private_keys=keys.encryption,
            cached=self._kept(
                str(envelope["origin_org"]),
                str(envelope["referral_id"]),
                int(envelope.get("version") or 1),
            ),
        )
        if context is not None and tuple(sorted(sealed_for(body))) != context.recipients:
            raise SignatureInvalid("the sealed recipients differ from the signed recipients")
        return plaintext
