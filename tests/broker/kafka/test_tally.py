"""The summary of unattributable dead letters: grouped, counted, and read back."""

from __future__ import annotations

from broker.errors import CorruptDatum, NotARecipient, SignatureInvalid, SignatureOutOfWindow
from broker.kafka.tally import (
    UNATTRIBUTED_REFERRAL,
    DeadLetterTally,
    attributable,
    summarised,
    summary_reason,
)
from broker.security.signing import SIGNATURE_HEADERS
from tests.support.security import FakeRecord

SIGNED = [(name, b"x") for name in sorted(SIGNATURE_HEADERS)]


def test_a_batch_of_junk_is_one_event_per_topic_partition_stage_and_error() -> None:
    tally = DeadLetterTally()
    for offset in (7, 3, 9):
        tally.add(
            FakeRecord("status.to.hl-a", b"", [], 1, offset), "STATUS_VERIFY", "SignatureInvalid"
        )
    tally.add(FakeRecord("status.to.hl-a", b"", [], 1, 5), "SINK_DECODE", "NotFramed")
    tally.add(FakeRecord("status.to.hl-a", b"", [], 0, 2), "SINK_DECODE", "NotFramed")
    events = tally.events(1_000)
    assert len(tally) == 5
    assert [(e.partition, e.offset, e.reason) for e in events] == [
        (1, 3, "STATUS_VERIFY: SignatureInvalid x3, offsets 3-9"),
        (1, 5, "SINK_DECODE: NotFramed x1, offsets 5-5"),
        (0, 2, "SINK_DECODE: NotFramed x1, offsets 2-2"),
    ]
    assert {(e.kind, e.referral_id, e.topic) for e in events} == {
        ("DEAD_LETTERED", UNATTRIBUTED_REFERRAL, "status.to.hl-a")
    }


def test_a_summary_reason_reads_back_and_no_other_does() -> None:
    reason = summary_reason("STATUS_ROUTE", "NotFramed", 812, 100, 911)
    assert summarised(reason) == ("STATUS_ROUTE: NotFramed", 812)
    assert summarised("STATUS_ROUTE: NotFramed") is None
    assert summarised(None) is None


def test_only_a_record_whose_signature_held_is_attributable() -> None:
    assert not attributable(SignatureInvalid("x"), [])
    assert not attributable(CorruptDatum("x"), [])  # unsigned: nobody to hold to it
    assert not attributable(SignatureInvalid("x"), SIGNED)
    assert not attributable(SignatureOutOfWindow("x"), SIGNED)  # a replay, by anyone
    assert attributable(NotARecipient("x"), SIGNED)
    assert attributable(CorruptDatum("x"), SIGNED)
    assert not attributable(NotARecipient("x"), SIGNED, verified=False)
