"""Real referrals onto the desk: police statuses clear items, verified outcomes become steps."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.contracts import StatusDelivery, jsonable
from broker.origin.outbox import Outbox, ReferralFacts
from broker.outcomes import ItemRef
from broker.takedown.desk import Cadence, TakedownDesk
from broker.takedown.desk_store import DESK_FILE, DeskStore
from broker.takedown.intake import TakedownIntake, hosting_provider
from broker.takedown.notices import Notice
from broker.takedown.providers import parse_directory
from broker.takedown.trail import TrailWriter, fact_of
from tests.support.factories import make_referral
from tests.support.takedown import DAY, HOUR, MINUTE, T0, SimClock

SECRET = b"test-secret-not-for-production"
DIRECTORY = parse_directory(
    """
[providers.host-a]
name = "Example Hosting A"
country = "NL"
abuse_email = "abuse@host-a.example.org"
[providers.host-b]
name = "Example Hosting B"
country = "DE"
abuse_email = "abuse@host-b.example.org"
"""
)
ROLES = {"police-nl": "police", "hl-de": "hotline", "fallback-int": "fallback"}


class Recorder:
    """Keeps the notices it is asked to send."""

    def __init__(self) -> None:
        self.sent: list[Notice] = []

    def send(self, notice: Notice) -> None:
        self.sent.append(notice)


def _item(provider: str, country: str | None = "NL") -> dict[str, Any]:
    return {
        "url": f"https://files-{secrets.token_hex(4)}.example.org/{secrets.token_hex(8)}",
        "media_type": "IMAGE",
        "hashes": [],
        "hosting": {"ip": None, "asn": None, "provider": provider, "country": country},
    }


def _setup(tmp: Path, *, clearance: bool) -> tuple[Any, ...]:
    clock = SimClock()
    events: list[dict[str, Any]] = []
    sender = Recorder()
    desk = TakedownDesk(
        TrailWriter(events.append, "hl-nl", clock),
        DIRECTORY,
        sender,
        secret=SECRET,
        sender_address="desk@hl-nl.invalid",
        notifier="hl-nl",
        cadence=Cadence(clearance_required=clearance),
        store=DeskStore(tmp / DESK_FILE),
    )
    referral = make_referral(
        items=[_item("Example Hosting A"), _item("host-b", None), _item("Unlisted Hosting")]
    )
    items = referral.body.items  # type: ignore[union-attr]
    box = Outbox(tmp / "outbox.sqlite3")
    facts = ReferralFacts(
        items=tuple(ItemRef(str(i.item_id), "NL") for i in items),
        document=jsonable(referral.to_avro()),
    )
    rid = referral.referral_id
    box.add(rid, referral.envelope.case_id, "t", b"v", [], ["police-nl"], about=facts)
    intake = TakedownIntake(desk, box.get, ROLES.get, fallback="fallback-int")
    return clock, events, sender, desk, intake, referral


def _status(rid: str, by: str, status: str, at: int, outcomes: Any = ()) -> StatusDelivery:
    doc = {
        "referral_id": rid,
        "emitted_by": by,
        "status": status,
        "emitted_at": datetime.fromtimestamp(at / 1000, UTC),
        "item_outcomes": list(outcomes),
    }
    return StatusDelivery(rid, status, by, jsonable(doc))


def _steps(events: list[dict[str, Any]]) -> list[tuple[str, str, str, int]]:
    out = []
    for e in events:
        f = fact_of(
            e["event_id"], e["referral_id"], e["actor"], e["to_party"], e["reason"], e["at"]
        )
        assert f is not None
        out.append((f.step.value, f.item_id, f.provider, f.at_ms))
    return out


def test_provider_matched_by_id_or_name() -> None:
    """The hosting evidence's provider is matched to a directory id, by id or by name."""
    assert hosting_provider(DIRECTORY, {"provider": "example hosting a"}) == "host-a"
    assert hosting_provider(DIRECTORY, {"provider": "host-b"}) == "host-b"
    assert hosting_provider(DIRECTORY, {"provider": "Unlisted"}) is None
    assert hosting_provider(DIRECTORY, None) is None


def test_police_clearance_puts_the_items_on_the_desk_then_outcomes_end_them(
    tmp_path: Path,
) -> None:
    """RECEIVED by police informs, ACCEPTED clears: notices within a minute, per provider."""
    clock, events, sender, desk, intake, referral = _setup(tmp_path, clearance=True)
    rid = referral.referral_id
    a, b, unlisted = (str(i.item_id) for i in referral.body.items)
    intake.deliver_status(_status(rid, "hl-de", "ACCEPTED", clock.now))  # not police: nothing
    assert desk.items() == []
    intake.deliver_status(_status(rid, "police-nl", "RECEIVED", clock.now))
    assert {s.item.item_id: s.item.provider for s in desk.items()} == {a: "host-a", b: "host-b"}
    assert intake.counts.unknown_provider == 1
    assert not desk.has(unlisted)
    assert [s.item.country for s in desk.items()] == ["NL", "DE"]  # b: the provider's country
    clock.now += HOUR
    desk.tick()
    assert sender.sent == []  # informed, not yet cleared
    cleared_at = clock.now
    intake.deliver_status(_status(rid, "police-nl", "ACCEPTED", cleared_at))
    intake.deliver_status(_status(rid, "police-nl", "ACCEPTED", cleared_at))  # redelivered
    clock.now += MINUTE
    desk.tick()
    assert sorted(n.provider_id for n in sender.sent) == ["host-a", "host-b"]
    removed_at = clock.now + 5 * HOUR
    clock.now += DAY - 2 * MINUTE
    outcomes = [
        {"item_id": a, "outcome": "REMOVED", "observed_at": removed_at},
        {
            "item_id": b,
            "outcome": "STILL_ONLINE",
            "observed_at": clock.now,
            "hosting": {"ip": None, "asn": None, "provider": None, "country": "FR"},
        },
    ]
    intake.deliver_status(_status(rid, "police-nl", "REMOVED", clock.now, outcomes))
    clock.now += 2 * DAY
    desk.tick()
    assert len(sender.sent) == 2  # both ended: no repeat
    steps = _steps(events)
    kinds = [s[0] for s in steps]
    assert kinds.count("POLICE_INFORMED") == 2
    assert kinds.count("LEA_CLEARED") == 2
    assert ("REMOVED", a, "host-a", removed_at) in steps
    assert ("MOVED", b, "host-b", cleared_at + DAY - MINUTE) in steps
    assert "Unlisted" not in repr(events)
    assert "example.org" not in repr(events)


def test_without_clearance_police_informed_is_enough_and_still_online_resumes(
    tmp_path: Path,
) -> None:
    """A hotline's REFERRED_TO_LE informs; STILL_ONLINE keeps the cadence; after a restart too."""
    clock, events, sender, desk, intake, referral = _setup(tmp_path, clearance=False)
    rid = referral.referral_id
    a = str(referral.body.items[0].item_id)
    intake.deliver_status(_status(rid, "fallback-int", "REFERRED_TO_LE", clock.now))
    assert {s.item.route for s in desk.items()} == {"fallback"}
    desk.tick()
    assert len(sender.sent) == 2
    clock.now += 2 * HOUR
    still = [{"item_id": a, "outcome": "STILL_ONLINE", "observed_at": clock.now}]
    intake.deliver_status(_status(rid, "fallback-int", "STILL_ONLINE", clock.now, still))
    assert desk.store is not None
    desk.store.close()
    again = TakedownDesk(
        TrailWriter(events.append, "hl-nl", clock),
        DIRECTORY,
        sender,
        secret=SECRET,
        sender_address="desk@hl-nl.invalid",
        notifier="hl-nl",
        store=DeskStore(tmp_path / DESK_FILE),
    )
    clock.now = T0 + DAY
    again.tick()
    assert [n.repeat for n in sender.sent[2:]] == [1, 1]
    assert ("STILL_ONLINE", a, "host-a", T0 + 2 * HOUR) in _steps(events)
