"""Referrals left untokenised (the evaluator unreachable or refusing), kept on disk to retry.

``<state_dir>/orgs/<org>/known-pending.sqlite3`` holds, per side (``sent`` by the
origin, ``received`` by a recipient), the plain documents of referrals this
organisation already holds whose items could not be tokenised yet. A row is
deleted (secure delete) once its tokens are made; the file never leaves the
organisation, like its outbox and sinks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from broker.config import Settings
from broker.sqlite import Database

__all__ = ["Untokenised"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    side        TEXT NOT NULL,
    referral_id TEXT NOT NULL,
    document    TEXT NOT NULL,
    since       REAL NOT NULL,
    PRIMARY KEY (side, referral_id)
) WITHOUT ROWID;
"""


class Untokenised:
    """The persisted retry queue of referrals not yet tokenised, per side."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = Database(path, _SCHEMA)

    @classmethod
    def for_org(cls, settings: Settings, org_id: str) -> Untokenised:
        """The queue file of ``org_id`` in the state directory."""
        return cls(settings.org_dir(org_id) / "known-pending.sqlite3")

    def keep(
        self,
        side: str,
        referrals: Sequence[tuple[str, Mapping[str, Any]]],
        now: float | None = None,
    ) -> None:
        """Queue referrals to tokenise later (one queued again keeps its place, new document)."""
        at = time.time() if now is None else now
        with self._db.transaction() as conn:
            conn.executemany(
                "INSERT INTO pending VALUES (?,?,?,?) ON CONFLICT (side, referral_id)"
                " DO UPDATE SET document = excluded.document",
                [(side, rid, json.dumps(doc, default=str), at) for rid, doc in referrals],
            )
        self._db.sync()

    def waiting(self, side: str) -> list[tuple[str, dict[str, Any]]]:
        """The queued referrals of ``side``, oldest first."""
        rows = self._db.query(
            "SELECT referral_id, document FROM pending WHERE side = ? ORDER BY since, referral_id",
            (side,),
        )
        return [(str(r["referral_id"]), json.loads(r["document"])) for r in rows]

    def done(self, side: str, referral_ids: Sequence[str]) -> int:
        """Forget referrals (tokenised now, or erased); how many were queued."""
        with self._db.transaction() as conn:
            gone = 0
            for rid in referral_ids:
                cur = conn.execute(
                    "DELETE FROM pending WHERE side = ? AND referral_id = ?", (side, rid)
                )
                gone += cur.rowcount
        return gone

    def count(self, side: str | None = None) -> int:
        """How many referrals wait (of ``side``, or of both)."""
        if side is None:
            rows = self._db.query("SELECT COUNT(*) AS n FROM pending")
        else:
            rows = self._db.query("SELECT COUNT(*) AS n FROM pending WHERE side = ?", (side,))
        return int(rows[0]["n"])

    def close(self) -> None:
        """Close the file."""
        self._db.close()
