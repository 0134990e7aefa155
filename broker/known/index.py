"""A member's local match index (SQLite, ``<state_dir>/orgs/<org>/known.sqlite3``).

``tokens`` mirrors the compacted ``match.tokens`` topic (:meth:`MatchIndex.sync`
reads it on from the stored positions, checking each holder's signature); ``own``
holds the tokens of the items this organisation sent or received, so an item of
its inbox or outbox can be looked up without evaluating it again. Neither holds a
hash or a URL: a token cannot be computed without the evaluator's key.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from broker.config import Settings
from broker.errors import SignatureInvalid
from broker.kafka.reader import TopicReader
from broker.known.errors import OprfError
from broker.known.wire import MatchRecord, decode_match, reference, verify_known
from broker.security.keys import TrustStore
from broker.sqlite import Database

__all__ = ["MatchIndex", "OwnToken", "PreviouslyAssessed"]

log = logging.getLogger("referral.known.index")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token           BLOB NOT NULL,
    key_id          TEXT NOT NULL,
    holder          TEXT NOT NULL,
    ref             TEXT NOT NULL,
    kind            TEXT NOT NULL,
    tlp             TEXT NOT NULL,
    assessed_at_ms  INTEGER NOT NULL,
    classification  TEXT,
    case_status     TEXT,
    PRIMARY KEY (token, key_id, holder, ref)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS own (
    referral_id TEXT NOT NULL,
    item_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    token       BLOB NOT NULL,
    at_ms       INTEGER NOT NULL,
    PRIMARY KEY (referral_id, item_id, kind, key_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS positions (
    topic     TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next      INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""


@dataclass(frozen=True)
class OwnToken:
    """The token of one input of one item this organisation holds."""

    referral_id: str
    item_id: str
    kind: str
    key_id: str
    token: bytes
    #: When the item was assessed (the referral's creation): only earlier entries match.
    at_ms: int


@dataclass(frozen=True)
class PreviouslyAssessed:
    """The earliest other holder of an item: who, when, what they said (their TLP applied)."""

    holder: str
    tlp: str
    assessed_at_ms: int
    matched_on: tuple[str, ...]
    classification: str | None
    case_status: str | None

    @property
    def restricted(self) -> bool:
        """TLP RED: only that a match exists and whom to ask."""
        return self.tlp == "RED"

    def to_json(self) -> dict[str, object]:
        """The ``previously_assessed`` object of ``inbox --json``."""
        out: dict[str, object] = {"holder": self.holder, "ask": self.holder, "tlp": self.tlp}
        out["matched_on"] = list(self.matched_on)
        if not self.restricted:
            out["classification"] = self.classification
            out["case_status"] = self.case_status
            out["assessed_at_ms"] = self.assessed_at_ms
        return out

    def line(self) -> str:
        """``previously assessed by hl-de as BASELINE on 2026-11-02 (case status REMOVED)``."""
        if self.restricted:
            return f"known to {self.holder} (TLP:RED): ask {self.holder}"
        day = time.strftime("%Y-%m-%d", time.gmtime(self.assessed_at_ms / 1000))
        status = f" (case status {self.case_status})" if self.case_status else ""
        return f"previously assessed by {self.holder} as {self.classification} on {day}{status}"


class MatchIndex:
    """The match tokens of the network, and this organisation's own, in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self._db = Database(path, _SCHEMA)

    @classmethod
    def for_org(cls, settings: Settings, org_id: str) -> MatchIndex:
        """The index file of ``org_id`` in the state directory."""
        return cls(settings.org_dir(org_id) / "known.sqlite3")

    def close(self) -> None:
        """Close the file."""
        self._db.close()

    def __len__(self) -> int:
        return int(self._db.query("SELECT COUNT(*) AS n FROM tokens")[0]["n"])

    # -- the topic's entries --------------------------------------------------------------------
    @staticmethod
    def _delete(conn: sqlite3.Connection, rkeys: Sequence[str]) -> None:
        """Drop entries by their topic keys (``key id:token:holder:ref``)."""
        rows = []
        for rkey in rkeys:
            parts = rkey.split(":")
            if len(parts) == 4:
                try:
                    rows.append((bytes.fromhex(parts[1]), parts[0], parts[2], parts[3]))
                except ValueError:
                    continue
        conn.executemany(
            "DELETE FROM tokens WHERE token = ? AND key_id = ? AND holder = ? AND ref = ?", rows
        )

    def put(self, conn: sqlite3.Connection, rkey: str, record: MatchRecord | None) -> None:
        """Store (or, for a tombstone, drop) one entry, in the caller's transaction."""
        if record is None:
            self._delete(conn, [rkey])
            return
        conn.execute(
            "INSERT OR REPLACE INTO tokens VALUES (?,?,?,?,?,?,?,?,?)",
            (
                bytes.fromhex(record.token),
                record.key,
                record.holder,
                record.ref,
                record.kind,
                record.tlp,
                record.assessed_at_ms,
                record.classification,
                record.case_status,
            ),
        )

    def add(self, records: Iterable[MatchRecord]) -> None:
        """Store entries directly (an origin's own, before the topic brings them back)."""
        with self._db.transaction() as conn:
            for r in records:
                self.put(conn, r.record_key().decode(), r)

    def sync(
        self,
        consumer: KafkaConsumer,
        topic: str,
        trust: TrustStore,
        allow_plain: bool,
        *,
        idle: float = 0.5,
    ) -> int:
        """Read ``topic`` on from the stored positions; the entries taken (bad ones skipped).

        The end is an ``idle`` s quiet poll past the listed end offsets (Tansu lists late).
        """
        reader = TopicReader(consumer, topic, timeout=120.0, idle=idle, wait_for_topic=5.0)
        start = {
            TopicPartition(topic, int(r["partition"])): int(r["next"])
            for r in self._db.query(
                "SELECT partition, next FROM positions WHERE topic = ?", (topic,)
            )
        }
        taken = 0
        for batch in reader.batches(start, max_records=5000):
            with self._db.transaction() as conn:
                for rec in batch:
                    taken += self._take(conn, rec, trust, allow_plain)
                    conn.execute(
                        "INSERT OR REPLACE INTO positions VALUES (?,?,?)",
                        (topic, rec.partition, rec.offset + 1),
                    )
        return taken

    def _take(
        self, conn: sqlite3.Connection, rec: object, trust: TrustStore, allow_plain: bool
    ) -> int:
        key = getattr(rec, "key", None) or b""
        value = getattr(rec, "value", None)
        rkey = key.decode("ascii", "replace")
        if value is None:
            self.put(conn, rkey, None)
            return 1
        try:
            record = decode_match(value)
            verify_known(
                getattr(rec, "headers", None), value, trust, "token", record.holder, allow_plain
            )
        except (OprfError, SignatureInvalid) as exc:
            log.warning("match token record skipped: %s", type(exc).__name__)
            return 0
        if record.record_key().decode() != rkey:
            log.warning("match token record skipped: its key does not match its content")
            return 0
        self.put(conn, rkey, record)
        return 1

    def shares(self) -> list[tuple[str, int, int]]:
        """Per holder: its entries, and how many of them another holder had (not later)."""
        rows = self._db.query(
            "SELECT t.holder AS holder, COUNT(*) AS entries, SUM(EXISTS(SELECT 1 FROM tokens o"
            " WHERE o.token = t.token AND o.key_id = t.key_id AND o.holder <> t.holder"
            " AND o.assessed_at_ms <= t.assessed_at_ms)) AS known"
            " FROM tokens t GROUP BY t.holder ORDER BY t.holder"
        )
        return [(str(r["holder"]), int(r["entries"]), int(r["known"] or 0)) for r in rows]

    # -- this organisation's items ---------------------------------------------------------------
    def add_own(self, tokens: Sequence[OwnToken]) -> None:
        """Remember the tokens of items this organisation holds."""
        with self._db.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO own VALUES (?,?,?,?,?,?)",
                [(t.referral_id, t.item_id, t.kind, t.key_id, t.token, t.at_ms) for t in tokens],
            )

    def own_tokens(self, referral_ids: Sequence[str]) -> list[OwnToken]:
        """The tokens held of the items of ``referral_ids`` (under every key id)."""
        out: list[OwnToken] = []
        for rid in referral_ids:
            for r in self._db.query("SELECT * FROM own WHERE referral_id = ?", (rid,)):
                out.append(
                    OwnToken(
                        rid,
                        str(r["item_id"]),
                        str(r["kind"]),
                        str(r["key_id"]),
                        bytes(r["token"]),
                        int(r["at_ms"]),
                    )
                )
        return out

    def drop_own(self, tokens: Sequence[OwnToken], entry_keys: Sequence[str]) -> None:
        """Forget own tokens (of a retired key) and the entries they made."""
        with self._db.transaction() as conn:
            conn.executemany(
                "DELETE FROM own WHERE referral_id = ? AND item_id = ? AND kind = ? AND key_id = ?",
                [(t.referral_id, t.item_id, t.kind, t.key_id) for t in tokens],
            )
            self._delete(conn, entry_keys)

    def forget_own(self, referral_id: str) -> int:
        """Forget the tokens of one referral's items (it was erased); how many."""
        with self._db.transaction() as conn:
            cur = conn.execute("DELETE FROM own WHERE referral_id = ?", (referral_id,))
            return int(cur.rowcount)

    def has_own(self, referral_id: str) -> bool:
        """True if the items of ``referral_id`` were tokenised here."""
        rows = self._db.query("SELECT 1 FROM own WHERE referral_id = ? LIMIT 1", (referral_id,))
        return bool(rows)

    def lookup(self, referral_id: str, item_id: str) -> PreviouslyAssessed | None:
        """The earliest other holder of any of the item's tokens (None: not known)."""
        own = self._db.query(
            "SELECT kind, key_id, token, at_ms FROM own WHERE referral_id = ? AND item_id = ?",
            (referral_id, item_id),
        )
        if not own:
            return None
        return self.match(
            [(str(r["kind"]), str(r["key_id"]), bytes(r["token"])) for r in own],
            referral_id,
            item_id,
            min(int(r["at_ms"]) for r in own),
        )

    def match(
        self,
        tokens: Sequence[tuple[str, str, bytes]],
        referral_id: str,
        item_id: str,
        before_ms: int,
    ) -> PreviouslyAssessed | None:
        """The earliest entry not after ``before_ms`` of any ``(kind, key id, token)``, not of
        this very item."""
        if not tokens:
            return None
        wanted = {(token, key_id): kind for kind, key_id, token in tokens}
        mine = {token: reference(token, referral_id, item_id) for _, _, token in tokens}
        marks = ",".join("?" * len(tokens))
        best: sqlite3.Row | None = None
        kinds: list[str] = []
        for row in self._db.query(
            f"SELECT * FROM tokens WHERE token IN ({marks}) AND assessed_at_ms <= ?",
            (*(t for _, _, t in tokens), before_ms),
        ):
            token = bytes(row["token"])
            kind = wanted.get((token, str(row["key_id"])))
            if kind is None or row["ref"] == mine[token]:
                continue
            kinds.append(kind)
            if best is None or row["assessed_at_ms"] < best["assessed_at_ms"]:
                best = row
        if best is None:
            return None
        return PreviouslyAssessed(
            str(best["holder"]),
            str(best["tlp"]),
            int(best["assessed_at_ms"]),
            tuple(k for k, _, _ in tokens if k in kinds),  # in the order asked
            best["classification"],
            best["case_status"],
        )
