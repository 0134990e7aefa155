"""Retention on a simulated clock: a 30-day rule erases every due referral from every store of
its recipient — inbox folder and history, case table and versions, inbox, handling log — and
nothing else; the bytes are gone from the state directory, and an erased referral never comes
back."""

from __future__ import annotations

import dataclasses
import random
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.config import Settings
from broker.contracts import Delivery, jsonable
from broker.receiver.erasure import ReceiverEraser, RetentionSweep
from broker.receiver.inbox import Inbox
from broker.retention import Retention, RetentionRule
from broker.wire.models import ItemOutcome, ItemOutcomeKind
from connectors.inbox_folder import InboxFolderConfig, InboxFolderSink
from connectors.sqlite_sink import SqliteCaseConfig, SqliteCaseSink
from tests.support.factories import make_referral

ORG = "police-nl"
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
RULES = Retention(rules=(RetentionRule(outcome=("NOT_ILLEGAL",), after_days=30),))


@dataclasses.dataclass
class Held:
    """One referral the test delivered, with what the test itself knows of it."""

    delivery: Delivery
    canary: bytes
    not_illegal_at: datetime | None


def _deliver(settings: Settings, n: int, seed: int) -> list[Held]:
    rng = random.Random(seed)
    sinks = [
        InboxFolderSink(InboxFolderConfig(path=f"orgs/{ORG}/inbox"), settings),
        SqliteCaseSink(SqliteCaseConfig(path=f"orgs/{ORG}/cases.sqlite3"), settings),
    ]
    inbox = Inbox.for_org(settings, ORG)
    held = []
    for s in sinks:
        s.open()
    for i in range(n):
        canary = f"canary-{secrets.token_hex(8)}.example.org"
        ref = make_referral(summary=f"summary {canary}")
        doc = jsonable(ref.to_avro())
        doc["body"]["items"][0]["url"] = f"https://{canary}/item"
        env = ref.envelope
        base = Delivery(env.referral_id, env.case_id, "hl-a", b"", doc, "referrals.to.NL", 0, i)
        delivered_at = START + timedelta(hours=rng.randrange(0, 24 * 20))
        amended = rng.random() < 0.3  # its version 1 is kept in the history and the versions
        for version in (1, 2) if amended else (1,):
            d = dataclasses.replace(base, version=version, previous_version=version - 1 or None)
            for s in sinks:
                s.deliver(d)
                inbox.record(d, s.kind, delivered_at.timestamp())
        fate = rng.choice(["not_illegal", "removed", "open"])
        when = delivered_at + timedelta(days=rng.randrange(1, 20), minutes=rng.randrange(60))
        item = doc["body"]["items"][0]["item_id"]
        if fate != "open":
            legal = fate == "not_illegal"
            kind = ItemOutcomeKind.NOT_ILLEGAL if legal else ItemOutcomeKind.REMOVED
            outcome = ItemOutcome(
                item_id=item, outcome=kind, observed_at=when, assessed_under="NL" if legal else None
            )
            status = "ASSESSED" if fate == "not_illegal" else "REMOVED"
            inbox.record_sent_status("hl-a", base.referral_id, status, when.timestamp(), [outcome])
        held.append(Held(base, canary.encode(), when if fate == "not_illegal" else None))
    for s in sinks:
        s.flush()
        s.close()
    inbox.close()
    return held


def _state_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_a_30_day_rule_erases_every_due_referral_and_nothing_else(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", bootstrap_servers="127.0.0.1:9")
    held = _deliver(settings, 80, seed=7)
    now = [START]
    inbox = Inbox.for_org(settings, ORG)
    sinks = [
        InboxFolderSink(InboxFolderConfig(path=f"orgs/{ORG}/inbox"), settings),
        SqliteCaseSink(SqliteCaseConfig(path=f"orgs/{ORG}/cases.sqlite3"), settings),
    ]
    for s in sinks:
        s.open()
    sweep = RetentionSweep(ReceiverEraser(settings, ORG, sinks, inbox), RULES, lambda: now[0])
    erased: set[str] = set()
    try:
        for day in range(0, 60):
            now[0] = START + timedelta(days=day, hours=12)
            erased |= {e.referral_id for e in sweep.sweep()}
            # The test's own reference: NOT_ILLEGAL at least 30 days ago, by the simulated clock.
            expected = {
                h.delivery.referral_id
                for h in held
                if h.not_illegal_at is not None and now[0] >= h.not_illegal_at + timedelta(days=30)
            }
            assert erased == expected, f"day {day}: erased differs from the rule"
    finally:
        for s in sinks:
            s.close()
    assert 10 < len(erased) < len(held), "the seed gives some of each"
    kept = [h for h in held if h.delivery.referral_id not in erased]
    remaining = {c.referral_id for c in inbox.retention_candidates()}
    assert remaining == {h.delivery.referral_id for h in kept}, "nothing else touched"
    assert {rid for _, rid, _, why in inbox.erased()} == erased
    assert {why for *_, why in inbox.erased()} == {"retention:30d"}
    inbox.close()
    raw = _state_bytes(settings.state_dir)
    assert [h.canary for h in held if h.delivery.referral_id in erased if h.canary in raw] == []
    assert all(h.canary in raw for h in kept), "the scan sees what is still kept"


def test_an_erased_referral_is_remembered_as_erased_and_never_delivered_again(
    tmp_path: Path,
) -> None:
    settings = Settings(state_dir=tmp_path / "state", bootstrap_servers="127.0.0.1:9")
    (first, *_) = _deliver(settings, 3, seed=3)
    inbox = Inbox.for_org(settings, ORG)
    sink = InboxFolderSink(InboxFolderConfig(path=f"orgs/{ORG}/inbox"), settings)
    sink.open()
    eraser = ReceiverEraser(settings, ORG, [sink], inbox)
    gone = eraser.erase("hl-a", first.delivery.referral_id, "request")
    assert gone.removed["inbox_folder"] >= 1
    assert gone.removed["inbox"] >= 1
    state = inbox.state("hl-a", first.delivery.referral_id)
    assert state.erased
    assert state.versions == {}
    assert not inbox.state("hl-b", first.delivery.referral_id).erased, "keyed by origin too"
    again = eraser.erase("hl-a", first.delivery.referral_id, "request")
    assert again.removed == {"inbox_folder": 0, "handling_log": 0, "inbox": 0}
    inbox.close()
    sink.close()
