"""The evaluator's per-organisation rate windows on disk, so a restart does not refill them.

One row per organisation: its allowance left and when it was last charged (epoch
seconds). Only counts and organisation ids are stored, never an element.
"""

from __future__ import annotations

from pathlib import Path

from broker.config import Settings
from broker.sqlite import Database

__all__ = ["RateStore", "rate_path"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (
    organisation TEXT PRIMARY KEY,
    allowance    REAL NOT NULL,
    at           REAL NOT NULL
);
"""


def rate_path(settings: Settings, evaluator: str) -> Path:
    """Where the evaluator keeps its rate windows."""
    return settings.org_dir(evaluator) / "known-rate.sqlite3"


class RateStore:
    """Per-organisation token buckets (allowance, at) in one SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = Database(path, _SCHEMA)

    def load(self) -> dict[str, tuple[float, float]]:
        """Every organisation's bucket as last saved."""
        rows = self._db.query("SELECT organisation, allowance, at FROM buckets")
        return {str(r["organisation"]): (float(r["allowance"]), float(r["at"])) for r in rows}

    def save(self, organisation: str, allowance: float, at: float) -> None:
        """Record what ``organisation`` has left after a charge at ``at``."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO buckets VALUES (?,?,?)", (organisation, allowance, at)
            )
        self._db.sync()

    def close(self) -> None:
        """Close the file."""
        self._db.close()
