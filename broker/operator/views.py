"""The flows, trace and ledger-verification entry points both faces call.

The records come from the local ledger store (the caller syncs it as it sees fit);
the views themselves are the pure ones of :mod:`broker.ledger.views`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from broker.config import Settings
from broker.ledger.store import LedgerStore, Verification
from broker.ledger.views import Flows, HandoverRecord, RoleRoute, Trace, flows, role_routes, trace
from broker.ledger.witness import WitnessBook, Witnessing, witnessing
from broker.network import Network
from broker.operator.heads import held_heads, topic_heads
from broker.security.keys import load_trust
from broker.wire.codec import Codec

__all__ = ["flows_view", "role_routes_since", "trace_view", "verify_ledger"]


def flows_view(
    settings: Settings,
    network: Network,
    records: Sequence[HandoverRecord],
    now: datetime,
    since: datetime | None,
) -> Flows:
    """The network's flows since ``since`` (None: all), as ``referral flows`` shows them."""
    return flows(records, network.deadlines, settings.topic_names(), now, since=since)


def role_routes_since(
    network: Network, records: Sequence[HandoverRecord], since: datetime | None
) -> list[RoleRoute]:
    """Who received what by role, over the records since ``since`` (None: all)."""
    return role_routes((r for r in records if since is None or r.at >= since), network.role_of)


def trace_view(
    settings: Settings,
    network: Network,
    records: Sequence[HandoverRecord],
    referral_id: str,
    now: datetime,
) -> Trace:
    """The timeline of ``referral_id`` and what is still awaited."""
    return trace(records, referral_id, network.deadlines, settings.topic_names(), now)


def verify_ledger(
    settings: Settings, network: Network, codec: Codec, *, offline: bool
) -> Verification:
    """Signatures, chain and checkpoints of the local store: those held here, and unless
    ``offline`` those on the checkpoints topic and the ledger topic's records as reference."""
    trust = load_trust(network, settings.network_file)
    heads = held_heads(settings)
    reference = None
    if not offline:
        heads += topic_heads(settings)
        reference = LedgerStore.reference(settings, codec)
    with LedgerStore.for_settings(settings) as store:
        return store.verify(
            trust,
            codec=codec,
            allow_plain=network.network.allow_plain,
            heads=heads,
            reference=reference,
        )


def witness_report(settings: Settings, network: Network) -> Witnessing:
    """The router's tree heads in the local store, who cosigned each, and any split view
    (two roots for one size), with the heads each member refused as evidence."""
    trust = load_trust(network, settings.network_file)
    evidence: list[tuple[str, bytes, str]] = []
    for path in sorted((Path(settings.state_dir) / "orgs").glob("*/heads.sqlite3")):
        book = WitnessBook(path, path.parent.name)
        try:
            evidence += [(book.org, note, why) for note, why in book.evidence()]
        finally:
            book.close()
    with LedgerStore.for_settings(settings) as store:
        return witnessing(store.notes(), trust, evidence)
