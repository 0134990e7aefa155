"""Erasure on request: the origin asks every recipient to erase a referral, signed.

``referral erase ID --as ORIGIN --reason CODE`` sends each organisation the
referral was routed to an **ERASE**: a ``StatusUpdate`` emitted by the origin
(``emitted_by == origin_org``), status ``CLOSED``, reason code ``ERASE``,
``destination_org`` the recipient, signed like a withdrawal. The router sends
it to the recipient's referral lane (:mod:`broker.routing.router`); its sink
driver verifies it and erases every copy (:mod:`broker.receiver.erase_requests`),
then answers with a signed **ERASED** (status ``CLOSED``, reason ``ERASED``),
which the origin's status feed verifies like any status. The origin's
:class:`ErasureBook` holds who was asked and who answered; once every recipient
answered, the origin erases its own outbox entry, status log and status sinks'
copies. The ledger records ``STATUS_SENT`` (reason ``ERASE <code>``) per
recipient here, ``DELIVERED`` (``ERASE <code>``) at the recipient and the
origin's ``DELIVERED`` (``ERASED``) of the answer: ids, parties and codes only.
A request not answered is sent again (:meth:`EraseRequester.resend_due`, every
``[organisations.connectors.outbox] erase_resend_after`` seconds) until it is.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from broker.config import Settings
from broker.errors import ReferralError
from broker.ledger.events import HandoverEventType, LedgerEmitter, handover_event
from broker.network import Network
from broker.origin.outbox import OutboxEntry
from broker.routing.decide import decide
from broker.security.rules import OriginSecurity
from broker.sqlite import Database
from broker.wire.codec import Codec
from broker.wire.models import ReferralStatus, StatusUpdate, utc_now_ms
from broker.wire.registry import STATUS_UPDATE
from broker.wire.topics import Headers, TopicNames

__all__ = [
    "ERASE",
    "ERASED",
    "ERASE_KIND",
    "EraseRequester",
    "ErasureBook",
    "ErasureState",
    "erase_code",
    "erase_reason",
    "erase_update",
    "erased_update",
    "erasure_rows",
    "is_erase_request",
    "is_erased_answer",
    "recipients_of",
]

log = logging.getLogger("referral.origin.erase_request")

#: The reason code of an erase request (a CLOSED emitted by the referral's origin).
ERASE = "ERASE"
#: The reason code of a recipient's answer that it erased the referral.
ERASED = "ERASED"
#: The ``referral.kind`` header of an erase request on a referral topic (a hint; verified).
ERASE_KIND = b"erase"
_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,31}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS erasures (
    referral_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    case_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    asked_at REAL NOT NULL,
    answered_at REAL,
    PRIMARY KEY (referral_id, recipient)
);
CREATE TABLE IF NOT EXISTS erased_here (
    referral_id TEXT PRIMARY KEY,
    erased_at REAL NOT NULL
);
"""

#: Columns later versions added to ``erasures``: when last sent, how many times.
_SEND_COLUMNS = {"sent_at": "REAL", "sends": "INTEGER NOT NULL DEFAULT 1"}


def is_erase_request(status: Mapping[str, Any]) -> bool:
    """True if a status datum is shaped as an erase request (says nothing of its signature)."""
    return (
        status.get("status") == ReferralStatus.CLOSED
        and status.get("reason_code") == ERASE
        and status.get("emitted_by") == status.get("origin_org")
        and isinstance(status.get("destination_org"), str)
    )


def is_erased_answer(status: Mapping[str, Any]) -> bool:
    """True if a status datum is a recipient's ERASED answer."""
    return (
        status.get("status") == ReferralStatus.CLOSED
        and status.get("reason_code") == ERASED
        and status.get("emitted_by") != status.get("origin_org")
    )


def erase_code(code: object) -> str:
    """``code`` if it is a reason code (``INCORRECT``, ``UNLAWFUL``…), else ``UNSPECIFIED``."""
    text = str(code or "")
    return text if _CODE.fullmatch(text) else "UNSPECIFIED"


def erase_reason(code: object) -> str:
    """The ledger reason of an erase request with reason ``code`` (a code, never free text)."""
    return f"{ERASE} {erase_code(code)}"


def erase_update(
    referral_id: str, case_id: str, origin: str, recipient: str, code: str
) -> StatusUpdate:
    """The erase request of ``referral_id`` from ``origin`` to ``recipient`` (``code`` in note)."""
    return StatusUpdate(
        referral_id=referral_id,
        case_id=case_id,
        emitted_by=origin,
        emitted_at=utc_now_ms(),
        status=ReferralStatus.CLOSED,
        reason_code=ERASE,
        note=code,
        destination_org=recipient,
        origin_org=origin,
    )


def erased_update(referral_id: str, case_id: str, origin: str, recipient: str) -> StatusUpdate:
    """The recipient's answer that it erased ``referral_id``."""
    return StatusUpdate(
        referral_id=referral_id,
        case_id=case_id,
        emitted_by=recipient,
        emitted_at=utc_now_ms(),
        status=ReferralStatus.CLOSED,
        reason_code=ERASED,
        origin_org=origin,
    )


@dataclass(frozen=True)
class ErasureState:
    """One recipient's part in an erasure: asked when, answered when (None: not yet)."""

    referral_id: str
    recipient: str
    case_id: str
    reason: str
    asked_at: float
    answered_at: float | None
    #: How many times it was sent (re-sent until answered).
    sends: int = 1

    def to_json(self) -> dict[str, Any]:
        """The state as JSON (ids, parties, code and times only)."""
        return {
            "referral_id": self.referral_id,
            "recipient": self.recipient,
            "reason": self.reason,
            "asked_at": self.asked_at,
            "erased": self.answered_at is not None,
            "answered_at": self.answered_at,
            "sends": self.sends,
        }


class ErasureBook:
    """The origin's record of erase requests: who was asked, who answered ERASED."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = Database(self.path, _SCHEMA)
        self._db.add_columns("erasures", _SEND_COLUMNS)

    @classmethod
    def for_org(cls, settings: Settings, org_id: str) -> ErasureBook:
        """The book at ``<state_dir>/orgs/<org>/erasures.sqlite3``."""
        return cls(settings.org_dir(org_id) / "erasures.sqlite3")

    def ask(
        self, referral_id: str, case_id: str, recipient: str, reason: str, now: float | None = None
    ) -> None:
        """Record that ``recipient`` was asked (a repeat keeps the first time and answer, and
        counts the send)."""
        at = time.time() if now is None else now
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO erasures (referral_id, recipient, case_id, reason, asked_at,"
                " sent_at, sends) VALUES (?, ?, ?, ?, ?, ?, 1)"
                " ON CONFLICT (referral_id, recipient) DO UPDATE SET sent_at = excluded.sent_at,"
                " sends = sends + 1",
                (referral_id, recipient, case_id, reason, at, at),
            )

    def due(self, every: float, now: float | None = None) -> list[ErasureState]:
        """The requests unanswered ``every`` seconds after they were last sent."""
        at = time.time() if now is None else now
        rows = self._db.query(
            "SELECT * FROM erasures WHERE answered_at IS NULL"
            " AND COALESCE(sent_at, asked_at) + ? <= ? ORDER BY referral_id, recipient",
            (every, at),
        )
        return [_state(r) for r in rows]

    def answer(self, referral_id: str, recipient: str) -> bool:
        """Record ``recipient``'s ERASED; False if it was never asked (or answered before)."""
        with self._db.transaction() as conn:
            cur = conn.execute(
                "UPDATE erasures SET answered_at = ? WHERE referral_id = ? AND recipient = ?"
                " AND answered_at IS NULL",
                (time.time(), referral_id, recipient),
            )
            return cur.rowcount > 0

    def states(self, referral_id: str | None = None) -> list[ErasureState]:
        """Every recipient's state (of one referral, or all), by referral then recipient."""
        sql = "SELECT * FROM erasures"
        params: tuple[object, ...] = ()
        if referral_id is not None:
            sql, params = sql + " WHERE referral_id = ?", (referral_id,)
        rows = self._db.query(sql + " ORDER BY referral_id, recipient", params)
        return [_state(r) for r in rows]

    def was_asked(self, referral_id: str, recipient: str) -> bool:
        """True if ``recipient`` was asked to erase ``referral_id``."""
        rows = self._db.query(
            "SELECT 1 FROM erasures WHERE referral_id = ? AND recipient = ?",
            (referral_id, recipient),
        )
        return bool(rows)

    def all_answered(self, referral_id: str) -> bool:
        """True once every recipient asked has answered ERASED."""
        states = self.states(referral_id)
        return bool(states) and all(s.answered_at is not None for s in states)

    def mark_erased_here(self, referral_id: str) -> None:
        """Record that the origin erased its own copies."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO erased_here (referral_id, erased_at) VALUES (?, ?)",
                (referral_id, time.time()),
            )

    def erased_here(self, referral_id: str) -> bool:
        """True once the origin erased its own copies of ``referral_id``."""
        rows = self._db.query("SELECT 1 FROM erased_here WHERE referral_id = ?", (referral_id,))
        return bool(rows)

    def close(self) -> None:
        """Close the database."""
        self._db.close()


def _state(r: Any) -> ErasureState:
    return ErasureState(
        str(r["referral_id"]),
        str(r["recipient"]),
        str(r["case_id"]),
        str(r["reason"]),
        float(r["asked_at"]),
        None if r["answered_at"] is None else float(r["answered_at"]),
        int(r["sends"] or 1),
    )


class EraseRequester:
    """Signs and sends an origin's erase requests and records each in the ledger and book."""

    def __init__(
        self,
        producer: KafkaProducer,
        codec: Codec,
        names: TopicNames,
        security: OriginSecurity,
        ledger: LedgerEmitter,
        book: ErasureBook,
        *,
        ack_timeout: float = 30.0,
    ) -> None:
        self.producer = producer
        self.codec = codec
        self.names = names
        self.security = security
        self.ledger = ledger
        self.book = book
        self.ack_timeout = ack_timeout

    def resend_due(self, every: float, now: float | None = None) -> list[tuple[str, str]]:
        """Send again each request unanswered ``every`` seconds after its last send;
        (referral id, recipient) of those sent."""
        out = []
        for s in self.book.due(every, now):
            if self.request(s.referral_id, s.case_id, [s.recipient], s.reason, now):
                out.append((s.referral_id, s.recipient))
        if out:
            log.info("%d erase request(s) sent again", len(out))
        return out

    def request(
        self,
        referral_id: str,
        case_id: str,
        recipients: Sequence[str],
        code: str,
        now: float | None = None,
    ) -> list[str]:
        """Ask each of ``recipients`` to erase ``referral_id``; those the request reached."""
        sent = []
        origin = self.security.org_id
        for org in recipients:
            datum = erase_update(referral_id, case_id, origin, org, code).to_avro()
            value = self.codec.encode(STATUS_UPDATE, datum)
            headers = [
                (Headers.REFERRAL_ID, referral_id.encode()),
                (Headers.CASE_ID, case_id.encode()),
                (Headers.ORIGIN, origin.encode()),
                (Headers.RECORD_KIND, ERASE_KIND),
                *self.security.sign_status(value, datum),
            ]
            try:
                meta = self.producer.send(
                    self.names.status_intake, key=referral_id.encode(), value=value, headers=headers
                ).get(timeout=self.ack_timeout)
            except KafkaError as exc:
                log.warning(
                    "erase request of %s to %s not sent: %s", referral_id, org, type(exc).__name__
                )
                continue
            self.book.ask(referral_id, case_id, org, code, now)
            self.ledger.emit(
                handover_event(
                    HandoverEventType.STATUS_SENT,
                    referral_id=referral_id,
                    case_id=case_id,
                    actor=origin,
                    from_party=origin,
                    to_party=org,
                    topic=self.names.status_intake,
                    partition=meta.partition,
                    offset=meta.offset,
                    reason=erase_reason(code),
                )
            )
            sent.append(org)
        return sent


def recipients_of(
    entry: OutboxEntry,
    codec: Codec,
    network: Network,
    names: TopicNames,
    earlier: Sequence[bytes] = (),
) -> list[str]:
    """The organisations ``entry``'s current version routes to, then those only an
    ``earlier`` version went to (an amendment dropped them; they still hold a copy)."""
    out: dict[str, None] = {}
    for value in (entry.value, *reversed(earlier)):
        try:
            out.update(dict.fromkeys(decide(codec.decode_envelope(value), network, names).orgs))
        except ReferralError:
            continue
    return list(out)


def erasure_rows(book: ErasureBook) -> list[dict[str, Any]]:
    """One row per referral in the book: who erased, who not yet, its state (for the outbox)."""
    by_referral: dict[str, list[ErasureState]] = {}
    for s in book.states():
        by_referral.setdefault(s.referral_id, []).append(s)
    rows = []
    for rid, states in by_referral.items():
        done = [s.recipient for s in states if s.answered_at is not None]
        waiting = [s.recipient for s in states if s.answered_at is None]
        here = book.erased_here(rid)
        rows.append(
            {
                "referral_id": rid,
                "case_id": states[0].case_id,
                "state": "erased" if here else "erasing",
                "reason": states[0].reason,
                "asked_at": min(s.asked_at for s in states),
                "erased_by": done,
                "waiting_for_erasure": waiting,
                "sends": {s.recipient: s.sends for s in states},
                "erased_at_origin": here,
            }
        )
    return rows
