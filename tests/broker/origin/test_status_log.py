"""The origin's status log: its batch write, and the once-only import from an older inbox file."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from broker.config import Settings
from broker.origin.status_log import STATUS_DUPLICATES, Settled, StatusLog
from broker.wire.models import ItemOutcome, ItemOutcomeKind

RID = "7f0c2a57-3b1e-4c49-9a51-0d9f3c2b8e01"
ITEM = "2b4f6e8a-0c1d-4e3f-8a5b-6c7d8e9f0a1b"
NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def test_a_batch_is_settled_in_one_write(tmp_path: Path) -> None:
    log = StatusLog(tmp_path / "status_log.sqlite3")
    removed = ItemOutcome(item_id=ITEM, outcome=ItemOutcomeKind.REMOVED, observed_at=NOW)
    log.settle(
        [
            Settled("k1", RID, "police-nl", "RECEIVED", 1),
            Settled("k2", RID, "police-nl", "NTD_SENT", 1, (removed,), 2000),
            Settled("k3", RID, "police-de", None, 1),
        ],
        duplicates=2,
    )
    assert log.has_status("k1")
    assert log.has_status("k3")
    assert log.status_state(RID, "police-nl") == "NTD_SENT"
    assert log.status_state(RID, "police-de") is None
    [state] = log.item_states(RID)
    assert state.outcome.outcome is ItemOutcomeKind.REMOVED
    assert log.counter(STATUS_DUPLICATES) == 2


def test_an_older_inbox_file_hands_over_the_origin_tables_once(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", bootstrap_servers="127.0.0.1:9")
    folder = settings.org_dir("hl-nl")
    folder.mkdir(parents=True, exist_ok=True)
    old = sqlite3.connect(folder / "inbox.sqlite3")
    old.executescript(
        """
        CREATE TABLE statuses (key TEXT PRIMARY KEY, referral_id TEXT NOT NULL, at REAL NOT NULL);
        CREATE TABLE status_state (referral_id TEXT NOT NULL, emitter TEXT NOT NULL,
            state TEXT NOT NULL, PRIMARY KEY (referral_id, emitter));
        CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        """
    )
    old.execute("INSERT INTO statuses VALUES ('k-old', ?, 1.0)", (RID,))
    old.execute("INSERT INTO status_state VALUES (?, 'police-nl', 'ACCEPTED')", (RID,))
    old.execute("INSERT INTO counters VALUES ('inbox.duplicates', 9), (?, 4)", (STATUS_DUPLICATES,))
    old.commit()
    old.close()

    log = StatusLog.for_org(settings, "hl-nl")
    assert log.has_status("k-old")
    assert log.status_state(RID, "police-nl") == "ACCEPTED"
    assert log.counter(STATUS_DUPLICATES) == 4
    assert log.counter("inbox.duplicates") == 0, "the receiver's counter stays in the inbox"
    log.set_status_state(RID, "police-nl", "CLOSED")
    log.close()

    again = StatusLog.for_org(settings, "hl-nl")  # an existing log is never imported over
    assert again.status_state(RID, "police-nl") == "CLOSED"
    again.close()
