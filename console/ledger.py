"""The console's one way to the handover ledger: synced from its topic, one sync at a time.

Both desks read the materialised ledger (``<state_dir>/ledger.sqlite3``); syncing
it from the topic is serialised within the process and done at most every
:data:`SYNC_EVERY` seconds (the live pages poll).
"""

from __future__ import annotations

import threading
import time
from contextlib import suppress
from pathlib import Path

from broker.config import Settings
from broker.errors import ReferralError
from broker.ledger.store import LedgerStore
from broker.ledger.views import HandoverRecord
from broker.wire.codec import Codec

__all__ = ["SYNC_EVERY", "records", "referral_ids", "synced_path"]

#: The ledger is synced from its topic at most this often (seconds).
SYNC_EVERY = 1.0

_LOCK = threading.Lock()
_SYNCED: dict[str, float] = {}


def _sync(settings: Settings, codec: Codec, store: LedgerStore) -> None:
    key = str(settings.state_dir)
    if time.monotonic() - _SYNCED.get(key, 0.0) < SYNC_EVERY:
        return
    with suppress(ReferralError):  # the broker away: the local copy still answers
        store.sync(settings, codec)
        _SYNCED[key] = time.monotonic()


def records(
    settings: Settings, codec: Codec, referral_id: str | None = None
) -> list[HandoverRecord]:
    """Handover records (of one referral, or all), after a sync that is due."""
    with _LOCK, LedgerStore.for_settings(settings) as store:
        _sync(settings, codec, store)
        return store.records(referral_id)


def referral_ids(settings: Settings, codec: Codec) -> list[str]:
    """Every referral id in the ledger (the candidates for a short id)."""
    with _LOCK, LedgerStore.for_settings(settings) as store:
        _sync(settings, codec, store)
        return store.referral_ids()


def synced_path(settings: Settings, codec: Codec) -> Path:
    """The ledger store's file, after a sync that is due (for readers of its SQLite)."""
    with _LOCK, LedgerStore.for_settings(settings) as store:
        _sync(settings, codec, store)
        return store.path
