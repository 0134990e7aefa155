"""``Idempotency-Key`` for the HTTP intake: a retried POST gets the first answer."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from broker.sqlite import Database

__all__ = ["Claim", "IdempotencyKeys", "valid_key"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency (
    key          TEXT PRIMARY KEY,
    body_sha256  TEXT NOT NULL,
    status       INTEGER,
    content_type TEXT,
    answer       BLOB,
    at           REAL NOT NULL
);
"""

_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
#: A claim left unanswered this long (a crashed request) may be taken over.
_ABANDONED_AFTER = 300.0


def valid_key(key: str) -> bool:
    """True if ``key`` is an acceptable Idempotency-Key (1-255 visible ASCII characters)."""
    return bool(_KEY.match(key))


@dataclass(frozen=True)
class Claim:
    """What the store says about a key: go ahead, replay an answer, or refuse."""

    #: ``new`` (process the request), ``replay`` (answer with ``status``/``answer``),
    #: ``mismatch`` (another body), ``busy`` (still being processed).
    state: str
    status: int = 0
    content_type: str = ""
    answer: bytes = b""


class IdempotencyKeys:
    """The answers given per Idempotency-Key (thread-safe)."""

    def __init__(self, path: Path, ttl: float = 86400.0) -> None:
        self.ttl = ttl
        self._db = Database(path, _SCHEMA)

    def claim(self, key: str, body_sha256: str, now: float | None = None) -> Claim:
        """Reserve ``key`` for this body, or say what was answered before."""
        now = time.time() if now is None else now
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM idempotency WHERE at < ?", (now - self.ttl,))
            row = conn.execute(
                "SELECT body_sha256, status, content_type, answer, at FROM idempotency"
                " WHERE key = ?",
                (key,),
            ).fetchone()
            if row is not None and row["body_sha256"] != body_sha256:
                return Claim("mismatch")
            if row is not None and row["status"] is not None:
                return Claim("replay", row["status"], row["content_type"], bytes(row["answer"]))
            if row is not None and now - row["at"] < _ABANDONED_AFTER:
                return Claim("busy")
            conn.execute(
                "INSERT OR REPLACE INTO idempotency (key, body_sha256, at) VALUES (?, ?, ?)",
                (key, body_sha256, now),
            )
        return Claim("new")

    def answer(self, key: str, status: int, content_type: str, answer: bytes) -> None:
        """Remember the answer given to the claimed key."""
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE idempotency SET status = ?, content_type = ?, answer = ? WHERE key = ?",
                (status, content_type, answer, key),
            )

    def release(self, key: str) -> None:
        """Forget a claim whose answer is not worth repeating (the client may try again)."""
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM idempotency WHERE key = ? AND status IS NULL", (key,))

    def close(self) -> None:
        """Close the database."""
        self._db.close()
