"""Item outcomes, re-referrals and amendments without a broker: the pure rules and the stores."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.config import Settings
from broker.contracts import Delivery
from broker.errors import ConfigError
from broker.ledger.views import HandoverRecord, trace
from broker.network import Deadlines
from broker.origin.outbox import Outbox, ReferralFacts
from broker.origin.publisher import child_referral, content_fingerprint
from broker.origin.status_log import StatusLog
from broker.outcomes import (
    ItemRef,
    Reroute,
    child_reason,
    child_referral_id,
    parent_reason,
    parse_item_specs,
    parse_reroute,
    reroutes,
    status_reason,
    summarise,
)
from broker.receiver.inbox import Inbox
from broker.wire import models as m
from broker.wire.topics import TopicNames
from connectors.inbox_folder import InboxFolderConfig, InboxFolderSink
from connectors.sqlite_sink import SqliteCaseConfig, SqliteCaseSink
from tests.support.connectors import make_network, referral_json
from tests.support.factories import make_referral

RID = "5c0f8a3e-0000-4000-8000-000000000001"
A, B, C = (f"{n * 8}-0000-5000-8000-000000000001" for n in "abc")
NOW = datetime.now(UTC) - timedelta(minutes=1)


# -- --item specifications -------------------------------------------------------------------


def test_item_specs_by_prefix_with_hosting_and_law() -> None:
    outcomes = parse_item_specs(
        [f"{A[:10]}=removed", f"{B}=STILL_ONLINE:country=fr,ip=8.8.8.8", f"{C}=NOT_ILLEGAL"],
        [A, B, C],
        NOW,
        assessed_under="de",
    )
    assert [(o.item_id, o.outcome.value) for o in outcomes] == [
        (A, "REMOVED"),
        (B, "STILL_ONLINE"),
        (C, "NOT_ILLEGAL"),
    ]
    assert outcomes[1].hosting == m.HostingEvidence(ip="8.8.8.8", country="FR")
    assert outcomes[2].assessed_under == "DE"
    assert summarise(outcomes) == "3 items: 1 removed, 1 moved to FR, 1 not illegal"


def test_new_country_applies_to_the_one_still_online_item_without_its_own() -> None:
    [moved] = parse_item_specs([f"{A}=STILL_ONLINE"], [A, B], NOW, new_country="FR")
    assert moved.hosting is not None
    assert moved.hosting.country == "FR"
    with pytest.raises(ConfigError, match="exactly one STILL_ONLINE item"):
        parse_item_specs([f"{A}=STILL_ONLINE", f"{B}=STILL_ONLINE"], [A, B], NOW, new_ip="8.8.8.8")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("REMOVED", "write ITEM_ID=OUTCOME"),
        (f"{A}=GONE", "outcome must be one of"),
        ("ffffffff=REMOVED", "no item of the referral"),
        (f"{A}=REMOVED:colour=red", "extras are key=value"),
        (f"{A}=REMOVED:country=FR", "hosting is only for STILL_ONLINE"),
        (f"{A}=NOT_ILLEGAL", "NOT_ILLEGAL needs assessed_under"),
    ],
)
def test_bad_item_specs_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_item_specs([spec], [A, B], NOW)
    assert message in str(info.value)
    assert str(info.value).startswith("--item #1: ")
    assert "\n" not in str(info.value)


def test_one_outcome_per_item() -> None:
    with pytest.raises(ConfigError, match="another outcome"):
        parse_item_specs([f"{A}=REMOVED", f"{A[:8]}=NOT_FOUND"], [A, B], NOW)


# -- the re-referral rule --------------------------------------------------------------------


def _moved(item: str, country: str | None = None, ip: str | None = None) -> m.ItemOutcome:
    return m.ItemOutcome(
        item_id=item,
        outcome=m.ItemOutcomeKind.STILL_ONLINE,
        observed_at=NOW,
        hosting=m.HostingEvidence(country=country, ip=ip),
    )


def test_only_items_moved_to_another_served_country_are_re_referred() -> None:
    items = {i: ItemRef(i, "DE") for i in (A, B, C)}
    still = m.ItemOutcome(item_id=C, outcome=m.ItemOutcomeKind.STILL_ONLINE, observed_at=NOW)
    out = reroutes(
        RID,
        [_moved(A, "FR"), _moved(B, "DE"), still, _moved(C, "US")],
        items,
        served=["DE", "FR", "NL"],
        routed_to=["DE"],
        country_of_ip=lambda ip: None,
    )
    assert out == [Reroute(RID, A, "FR", child_referral_id(RID, A, "FR"))]
    # By IP alone (resolved offline), not to a country the parent already went to.
    by_ip = reroutes(RID, [_moved(A, ip="192.0.2.7")], items, ["FR"], ["DE"], lambda ip: "FR")
    assert [(r.country, r.ip) for r in by_ip] == [("FR", "192.0.2.7")]
    assert reroutes(RID, [_moved(A, "FR")], items, ["FR"], ["DE", "FR"], lambda ip: None) == []
    # The child's id is stable: a repeated outcome re-refers once.
    assert child_referral_id(RID, A, "fr") == child_referral_id(RID, A, "FR") != RID


def test_reroute_reasons_round_trip_and_status_reasons_keep_the_status_first() -> None:
    r = Reroute(RID, A, "FR", child_referral_id(RID, A, "FR"))
    assert parse_reroute(RID, parent_reason(r)) == r
    assert parse_reroute(r.child_referral_id, child_reason(r)) == replace(r, country="")
    assert parse_reroute(RID, "ROUTED basis HOSTING") is None
    assert status_reason("NTD_SENT", "") == "NTD_SENT"
    assert status_reason("NTD_SENT", "1 item: 1 removed") == "NTD_SENT; 1 item: 1 removed"


def test_the_child_referral_carries_one_item_and_the_parent() -> None:
    raw = referral_json("hl-a", "DE")
    parent = m.Referral.model_validate(raw)
    assert isinstance(parent.body, m.CaseBody)
    item = parent.body.items[0]
    assert item.item_id is not None
    document = json.loads(parent.model_dump_json())
    reroute = Reroute(parent.referral_id, item.item_id, "FR", child_referral_id(RID, A, "FR"))
    network = make_network()
    child = m.Referral.model_validate(
        {
            **child_referral(document, reroute, network, TopicNames()),
            "envelope": {
                **child_referral(document, reroute, network, TopicNames())["envelope"],
                "origin_org": "hl-a",
                "origin_country": "NL",
                "created_at": NOW,
            },
        }
    )
    assert child.envelope.parent_referral_id == parent.referral_id
    assert child.envelope.case_id == parent.envelope.case_id
    assert [j.country for j in child.envelope.jurisdictions] == ["FR"]
    assert isinstance(child.body, m.CaseBody)
    [moved] = child.body.items
    assert moved.item_id == item.item_id
    assert moved.hosting is not None
    assert moved.hosting.country == "FR"
    assert moved.classification == parent.body.classification


# -- amendments in the stores ----------------------------------------------------------------


def test_the_fingerprint_ignores_the_version() -> None:
    referral = make_referral()
    v2 = referral.model_copy(
        update={"envelope": referral.envelope.model_copy(update={"version": 2})}
    )
    assert content_fingerprint(v2) == content_fingerprint(referral)


def test_outbox_amendment_keeps_history_and_waits_for_the_new_versions_receipt(
    tmp_path: Path,
) -> None:
    box = Outbox(tmp_path / "outbox.sqlite3")
    facts = ReferralFacts(items=(ItemRef(A, "DE"),), countries=("DE",))
    assert box.add(RID, "case-1", "intake", b"v1", [], ["police-de"], about=facts)
    assert box.mark_received(RID, "police-de")
    assert box.is_complete(RID)
    assert box.amend(RID, b"v2", [], ["police-de"], "sha-2", replace(facts, version=2))
    assert not box.amend(RID, b"v2", [], ["police-de"], "sha-2", replace(facts, version=2))
    entry = box.get(RID)
    assert entry is not None
    assert (entry.value, entry.version, entry.items) == (b"v2", 2, (ItemRef(A, "DE"),))
    assert not box.is_complete(RID)
    assert not box.mark_received(RID, "police-de", version=1), "a late receipt of version 1"
    assert box.mark_received(RID, "police-de", version=2)
    assert box.is_complete(RID)
    assert box.versions(RID) == [1, 2]
    assert [p.version for p in box.all()] == [2]


def test_outbox_queues_a_re_referral_once(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite3")
    box.add(RID, "case-1", "intake", b"v1", [], ["police-de"])
    r = Reroute(RID, A, "FR", child_referral_id(RID, A, "FR"), "192.0.2.7")
    assert box.request_reroute(r)
    assert not box.request_reroute(r)
    assert box.reroutes_due() == [r]
    box.finish_reroute(r.child_referral_id)
    assert box.reroutes_due() == []
    assert box.children(RID) == [(replace(r, ip=None), True)]


def test_status_log_keeps_the_latest_outcome_per_item_and_emitter(tmp_path: Path) -> None:
    inbox = StatusLog(tmp_path / "status_log.sqlite3")
    removed = m.ItemOutcome(item_id=A, outcome=m.ItemOutcomeKind.REMOVED, observed_at=NOW)
    assert inbox.record_outcomes(RID, "police-de", [_moved(A, "FR")], 1000) == 1
    assert inbox.record_outcomes(RID, "police-de", [removed], 2000) == 1
    assert inbox.record_outcomes(RID, "police-de", [_moved(A, "FR")], 1500) == 0, "older"
    [state] = inbox.item_states(RID)
    assert state.outcome.outcome is m.ItemOutcomeKind.REMOVED


def _delivery(version: int, previous: int | None = None, items: int = 1) -> Delivery:
    return Delivery(
        referral_id=RID,
        case_id="case-1",
        origin_org="hl-a",
        value=b"\x00",
        document={
            "envelope": {"referral_id": RID, "version": version},
            "body": {"items": [{"item_id": i} for i in (A, B, C)[:items]]},
        },
        topic="referrals.to.NL",
        partition=0,
        offset=7,
        version=version,
        previous_version=previous,
    )


def test_sinks_keep_the_current_version_and_the_history(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    folder = InboxFolderSink(InboxFolderConfig(path="inbox"), settings)
    folder.open()
    folder.deliver(_delivery(1))
    folder.deliver(_delivery(2, previous=1, items=2))
    current = json.loads((tmp_path / "inbox" / f"{RID}.json").read_text())
    assert (current["delivery"]["version"], current["delivery"]["previous_version"]) == (2, 1)
    old = json.loads((tmp_path / "inbox" / "history" / f"{RID}.v1.json").read_text())
    assert old["delivery"]["version"] == 1
    assert "previous_version" not in old["delivery"]
    # Handled again (its batch was not committed before a crash): the history keeps v1.
    folder.deliver(_delivery(2, previous=1, items=2))
    old = json.loads((tmp_path / "inbox" / "history" / f"{RID}.v1.json").read_text())
    assert old["delivery"]["version"] == 1
    folder.flush()

    table = SqliteCaseSink(SqliteCaseConfig(path="cases.sqlite3"), settings)
    table.open()
    table.deliver(_delivery(1))
    table.deliver(_delivery(2, previous=1))
    table.deliver(_delivery(1))  # a stale version never replaces the current one
    table.close()
    with sqlite3.connect(tmp_path / "cases.sqlite3") as db:
        assert db.execute("SELECT version FROM cases").fetchall() == [(2,)]
        kept = db.execute("SELECT version FROM cases_versions ORDER BY version").fetchall()
    assert kept == [(1,), (2,)]

    inbox = Inbox(tmp_path / "inbox.sqlite3")
    assert inbox.record(_delivery(1), "sqlite")
    assert inbox.record(_delivery(2, 1, items=3), "sqlite")
    assert not inbox.record(_delivery(2, 1, items=3), "sqlite")
    assert not inbox.record(_delivery(1), "sqlite")
    assert inbox.version("hl-a", RID, "sqlite") == 2
    assert inbox.item_ids("hl-a", RID) == [A, B, C]


# -- the trace -------------------------------------------------------------------------------


def test_trace_reads_outcomes_links_and_versions_from_the_ledger() -> None:
    names = TopicNames()
    r = Reroute(RID, A, "FR", child_referral_id(RID, A, "FR"))

    def rec(n: int, event: str, referral_id: str = RID, **kw: str) -> HandoverRecord:
        return HandoverRecord(
            event_id=f"e{n}",
            referral_id=referral_id,
            case_id="case-1",
            event=event,
            at=NOW + timedelta(seconds=n),
            index=n,
            **kw,
        )

    records = [
        rec(0, "PUBLISHED", actor="hl-a", from_party="hl-a", to_party="police-de"),
        rec(1, "AMENDED", actor="hl-a", from_party="hl-a", reason="version 2"),
        rec(
            2,
            "DELIVERED",
            actor="hl-a",
            from_party="police-de",
            to_party="hl-a",
            topic=names.status("hl-a"),
            reason="NTD_SENT; 2 items: 1 removed, 1 moved to FR",
        ),
        rec(3, "REROUTED", actor="hl-a", reason=parent_reason(r)),
        rec(4, "REROUTED", r.child_referral_id, actor="hl-a", reason=child_reason(r)),
    ]
    t = trace(records, RID, Deadlines(), names, NOW + timedelta(minutes=1))
    assert t.status == "NTD_SENT"
    assert t.outcomes == {"police-de": "2 items: 1 removed, 1 moved to FR"}
    assert t.children == (r,)
    assert t.amendments == (2,)
    assert t.to_json()["version"] == 2
    child = trace(records, r.child_referral_id, Deadlines(), names, NOW + timedelta(minutes=1))
    assert child.parent == replace(r, country="")


def test_the_origin_refuses_outcomes_of_items_its_referral_does_not_have(tmp_path: Path) -> None:
    """Every outcome must name an item of the referral the origin published."""
    from broker.errors import SecurityError
    from broker.origin.status_feed import verified_outcomes

    box = Outbox(tmp_path / "outbox.sqlite3")
    box.add(
        RID, "case-1", "intake", b"v1", [], ["police-de"], about=ReferralFacts(items=(ItemRef(A),))
    )
    datum = {
        "referral_id": RID,
        "emitted_by": "police-de",
        "item_outcomes": [
            {"item_id": A, "outcome": "REMOVED", "observed_at": NOW},
        ],
    }
    [ok] = verified_outcomes(datum, box.get(RID))
    assert ok.item_id == A
    datum["item_outcomes"] = [{"item_id": B, "outcome": "REMOVED", "observed_at": NOW}]
    with pytest.raises(SecurityError, match=f"names 1 item\\(s\\) not in referral {RID}"):
        verified_outcomes(datum, box.get(RID))
    datum["referral_id"] = "5c0f8a3e-0000-4000-8000-0000000000ff"  # not ours: nothing to act on
    assert verified_outcomes(datum, box.get(str(datum["referral_id"]))) == []


def test_a_refusal_of_an_amended_version_no_longer_counts(tmp_path: Path) -> None:
    from broker.origin.status_feed import superseded

    box = Outbox(tmp_path / "outbox.sqlite3")
    box.add(RID, "case-1", "intake", b"v1", [], ["police-fr"])
    assert box.mark_refused(RID, "police-fr", "HTTP_422")
    box.amend(RID, b"v2", [], ["police-fr"], "sha-2", ReferralFacts(version=2))
    assert not box.mark_refused(RID, "police-fr", "HTTP_422", version=1), "late, superseded"
    assert box.pending()[0].waiting_for == ("police-fr",)
    assert superseded(box.get(RID), "REJECTED", 1)
    assert not superseded(box.get(RID), "REJECTED", 2)
    assert not superseded(box.get(RID), "NTD_SENT", 1)

    inbox = StatusLog(tmp_path / "status_log.sqlite3")
    inbox.set_status_state(RID, "police-fr", "REJECTED", 1)
    assert inbox.status_state(RID, "police-fr") == "REJECTED"
    assert inbox.status_state(RID, "police-fr", 1) == "REJECTED"
    assert inbox.status_state(RID, "police-fr", 2) is None, "the amendment starts over"
    inbox.set_status_state(RID, "police-fr", "RECEIVED", 2)
    assert inbox.status_state(RID, "police-fr", 2) == "RECEIVED"
