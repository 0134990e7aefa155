"""Checkpoint heads the ledger is verified against: those the connectors hold, those on the topic.

Both faces verify the ledger against the same heads (``referral ledger verify``, the console).
"""

from __future__ import annotations

from pathlib import Path

from broker.config import Settings
from broker.ledger.checkpoint import NOTE_KINDS, HeadStore, HeldHead, read_checkpoints
from broker.wire.topics import Headers, header

__all__ = ["held_heads", "topic_heads"]


def held_heads(settings: Settings) -> list[HeldHead]:
    """The checkpoints every organisation's connector under the state directory holds."""
    out: list[HeldHead] = []
    for path in sorted((Path(settings.state_dir) / "orgs").glob("*/heads.sqlite3")):
        heads = HeadStore(path, path.parent.name)
        try:
            out += heads.heads()
        finally:
            heads.close()
    return out


def topic_heads(settings: Settings) -> list[HeldHead]:
    """The checkpoint records on the checkpoints topic, as the topic holds them."""
    return [
        HeldHead(value, headers, "the topic")
        for _, value, headers in read_checkpoints(settings, timeout=15)
        if header(headers, Headers.RECORD_KIND) not in NOTE_KINDS  # tree heads, cosignatures
    ]
