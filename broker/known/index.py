"""A member's local match index (SQLite, ``<state_dir>/orgs/<org>/known.sqlite3``).

``tokens`` mirrors the compacted ``match.tokens`` topic (:meth:`MatchIndex.sync`
reads it on from the stored positions, checking each holder's signature); ``own``
holds the tokens of the items this organisation sent or received, so an item of
its inbox or outbox can be looked up without evaluating it again. Neither holds a
hash or a URL: a token cannot be computed without the evaluator's key. ``own_pdq``
holds the PDQ hashes of this organisation's own items (it holds their documents
anyway), with their chunk entries' reference, so a near-duplicate candidate is
confirmed with the real Hamming distance where both hashes are held here.
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
from broker.known.pdq import CHUNKS, MAX_DISTANCE, POSSIBLE_SHARED, hamming, is_chunk_kind
from broker.known.wire import MatchRecord, decode_match, reference, verify_known
from broker.security.keys import TrustStore
from broker.sqlite import Database

__all__ = ["EXACT", "NEAR", "POSSIBLE", "MatchIndex", "OwnPdq", "OwnToken", "PreviouslyAssessed"]

#: What a mark says: the same hash or URL; a PDQ hash within 31 bits (confirmed with both
#: hashes held here); a PDQ candidate only its holder can confirm.
EXACT, NEAR, POSSIBLE = "exact", "near-duplicate", "possible-near-duplicate"

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
CREATE TABLE IF NOT EXISTS own_pdq (
    referral_id TEXT NOT NULL,
    item_id     TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    ref         TEXT NOT NULL,
    pdq         BLOB NOT NULL,
    PRIMARY KEY (referral_id, item_id, key_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS own_pdq_ref ON own_pdq (ref);
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
class OwnPdq:
    """The PDQ hash of one item this organisation holds, and its chunk entries' reference."""

    referral_id: str
    item_id: str
    key_id: str
    ref: str
    pdq: bytes

    def __repr__(self) -> str:
        return f"OwnPdq({self.referral_id}, {self.item_id}, {self.key_id})"


@dataclass(frozen=True)
class PreviouslyAssessed:
    """The earliest other holder of an item: who, when, what they said (their TLP applied).

    ``kind`` is :data:`EXACT`, :data:`NEAR` (``distance`` bits apart, confirmed) or
    :data:`POSSIBLE` (``shared`` chunk tokens; only the holder can confirm: ask them).
    """

    holder: str
    tlp: str
    assessed_at_ms: int
    matched_on: tuple[str, ...]
    classification: str | None
    case_status: str | None
    kind: str = EXACT
    distance: int | None = None
    shared: int | None = None

    @property
    def restricted(self) -> bool:
        """TLP RED: only that a match exists and whom to ask."""
        return self.tlp == "RED"

    @property
    def assessed(self) -> bool:
        """True for a match that stands (exact or a confirmed near-duplicate); a possible
        near-duplicate is not one until its holder confirms it."""
        return self.kind != POSSIBLE

    def to_json(self) -> dict[str, object]:
        """The ``previously_assessed`` object of ``inbox --json``."""
        out: dict[str, object] = {"holder": self.holder, "ask": self.holder, "tlp": self.tlp}
        out["kind"] = self.kind
        out["matched_on"] = list(self.matched_on)
        if self.kind == NEAR:
            out["distance"] = self.distance
        if self.kind == POSSIBLE:
            out["shared_chunks"] = self.shared
        elif not self.restricted:
            out["classification"] = self.classification
            out["case_status"] = self.case_status
            out["assessed_at_ms"] = self.assessed_at_ms
        return out

    def line(self) -> str:
        """``previously assessed by hl-de as BASELINE on 2026-11-02 (case status REMOVED)``."""
        if self.kind == POSSIBLE:
            return f"possible near-duplicate held by {self.holder} \u2014 ask them"
        near = (
            f"near-duplicate (distance {self.distance} of 256) of an item "
            if self.kind == NEAR
            else ""
        )
        if self.restricted:
            return f"{near}known to {self.holder} (TLP:RED): ask {self.holder}"
        day = time.strftime("%Y-%m-%d", time.gmtime(self.assessed_at_ms / 1000))
        status = f" (case status {self.case_status})" if self.case_status else ""
        said = f"previously assessed by {self.holder} as {self.classification} on {day}{status}"
        return near + said


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
        """Per holder: its exact entries (PDQ chunks aside), and how many of them another
        holder had (not later)."""
        rows = self._db.query(
            "SELECT t.holder AS holder, COUNT(*) AS entries, SUM(EXISTS(SELECT 1 FROM tokens o"
            " WHERE o.token = t.token AND o.key_id = t.key_id AND o.holder <> t.holder"
            " AND o.assessed_at_ms <= t.assessed_at_ms)) AS known"
            " FROM tokens t WHERE t.kind <> 'pdq' GROUP BY t.holder ORDER BY t.holder"
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

    def add_own_pdq(self, hashes: Sequence[OwnPdq]) -> None:
        """Remember the PDQ hashes of items this organisation holds (to confirm candidates)."""
        with self._db.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO own_pdq VALUES (?,?,?,?,?)",
                [(h.referral_id, h.item_id, h.key_id, h.ref, h.pdq) for h in hashes],
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
            conn.executemany(
                "DELETE FROM own_pdq WHERE referral_id = ? AND item_id = ? AND key_id = ?",
                list({(t.referral_id, t.item_id, t.key_id) for t in tokens}),
            )
            self._delete(conn, entry_keys)

    def forget_own(self, referral_id: str) -> int:
        """Forget the tokens of one referral's items (it was erased); how many."""
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM own_pdq WHERE referral_id = ?", (referral_id,))
            cur = conn.execute("DELETE FROM own WHERE referral_id = ?", (referral_id,))
            return int(cur.rowcount)

    def has_own(self, referral_id: str) -> bool:
        """True if the items of ``referral_id`` were tokenised here."""
        rows = self._db.query("SELECT 1 FROM own WHERE referral_id = ? LIMIT 1", (referral_id,))
        return bool(rows)

    def lookup(self, referral_id: str, item_id: str) -> PreviouslyAssessed | None:
        """The earliest other holder of any of the item's exact tokens, else its nearest
        near-duplicate by PDQ (None: not known)."""
        own = self._db.query(
            "SELECT kind, key_id, token, at_ms FROM own WHERE referral_id = ? AND item_id = ?",
            (referral_id, item_id),
        )
        if not own:
            return None
        before = min(int(r["at_ms"]) for r in own)
        exact = [
            (str(r["kind"]), str(r["key_id"]), bytes(r["token"]))
            for r in own
            if not is_chunk_kind(str(r["kind"]))
        ]
        hit = self.match(exact, referral_id, item_id, before)
        if hit is not None:
            return hit
        for p in self._db.query(
            "SELECT key_id, ref, pdq FROM own_pdq WHERE referral_id = ? AND item_id = ?",
            (referral_id, item_id),
        ):
            chunks = sorted(
                (str(r["kind"]), bytes(r["token"]))
                for r in own
                if is_chunk_kind(str(r["kind"])) and r["key_id"] == p["key_id"]
            )
            if len(chunks) == CHUNKS:
                tokens = [t for _, t in chunks]
                near = self.near(str(p["key_id"]), tokens, bytes(p["pdq"]), str(p["ref"]), before)
                if near is not None:
                    return near
        return None

    def near(
        self, key_id: str, chunks: Sequence[bytes], pdq: bytes, mine: str, before_ms: int
    ) -> PreviouslyAssessed | None:
        """The nearest earlier PDQ entry sharing a chunk token with ``chunks`` (the item whose
        entries have reference ``mine`` aside): confirmed at distance ≤ 31 where this index
        holds its hash too, else possible when it shares :data:`POSSIBLE_SHARED` chunks."""
        marks = ",".join("?" * len(chunks))
        # Two queries (one with a subquery per group is 4x slower): the candidates held here,
        # with their hash, then those sharing enough chunks.
        where = (
            f" WHERE t.token IN ({marks}) AND t.key_id = ? AND t.kind = 'pdq'"
            " AND t.assessed_at_ms <= ? AND t.ref <> ?"
        )
        fields = (
            "SELECT t.holder AS holder, t.ref AS ref, MIN(t.tlp) AS tlp,"
            " MIN(t.assessed_at_ms) AS at, MIN(t.classification) AS classification,"
            " MIN(t.case_status) AS case_status, COUNT(*) AS shared"
        )
        args = (*chunks, key_id, before_ms, mine)
        held = self._db.query(
            f"{fields}, MIN(o.pdq) AS held FROM tokens t JOIN own_pdq o ON o.ref = t.ref{where}"
            " GROUP BY t.holder, t.ref",
            args,
        )
        seen = {str(r["ref"]) for r in held}
        rows = list(held)
        for r in self._db.query(  # counts only: the labels of the few that share enough next
            f"SELECT t.ref AS ref, COUNT(*) AS shared FROM tokens t{where}"
            " GROUP BY t.ref HAVING shared >= ?",
            (*args, POSSIBLE_SHARED),
        ):
            if str(r["ref"]) not in seen:
                rows += self._db.query(
                    f"{fields}, NULL AS held FROM tokens t{where} AND t.ref = ?"
                    " GROUP BY t.holder, t.ref",
                    (*args, r["ref"]),
                )
        best: tuple[tuple[int, int, int], PreviouslyAssessed] | None = None
        for r in rows:
            shared, at = int(r["shared"]), int(r["at"])
            if r["held"] is not None:
                distance = hamming(pdq, bytes(r["held"]))
                if distance > MAX_DISTANCE:
                    continue  # confirmed not a near-duplicate
                kind, rank = NEAR, (0, distance, at)
            elif shared >= POSSIBLE_SHARED:
                distance, kind, rank = -1, POSSIBLE, (1, -shared, at)
            else:
                continue
            hit = PreviouslyAssessed(
                str(r["holder"]),
                str(r["tlp"]),
                at,
                ("pdq",),
                None if kind == POSSIBLE else r["classification"],
                None if kind == POSSIBLE else r["case_status"],
                kind,
                distance if kind == NEAR else None,
                shared,
            )
            if best is None or rank < best[0]:
                best = (rank, hit)
        return None if best is None else best[1]

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
