"""The figures' definitions on small hand-made trails, the trail's reason, the directory."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from broker.errors import ConfigError
from broker.takedown.desk import DAY_MS, Cadence, TakedownDesk
from broker.takedown.figures import art22_report, summarise
from broker.takedown.notices import Answer
from broker.takedown.providers import Provider, ProviderDirectory, parse_directory
from broker.takedown.stats import AlteredEvent, StatsVerification
from broker.takedown.trail import TakedownStep, TrailFact, TrailItem, TrailWriter, fact_of
from cli.main import app
from tests.support.takedown import HOUR, T0, SimClock, synthetic_id

S = TakedownStep


def _trail(
    plan: list[tuple[str, str, list[tuple[TakedownStep, int, str | None, int]]]],
) -> list[TrailFact]:
    events: list[dict[str, Any]] = []
    for name, provider, steps in plan:
        item = TrailItem(synthetic_id("r"), "case", synthetic_id(name), provider, "NL")
        writer = TrailWriter(events.append, "hl-a", lambda: 0)
        for step, n, to, at in steps:
            writer.record(step, item, n=n, to_party=to, at_ms=at)
    facts = [
        fact_of(e["event_id"], e["referral_id"], e["actor"], e["to_party"], e["reason"], e["at"])
        for e in events
    ]
    return [f for f in facts if f is not None]


def _removed_after(name: str, hours: int, provider: str = "p") -> tuple[str, str, list[Any]]:
    return (name, provider, [(S.OPENED, 0, None, T0), (S.REMOVED, 0, provider, T0 + hours * HOUR)])


def test_median_of_an_even_count_is_the_mean_of_the_middle_two_and_p90_is_nearest_rank() -> None:
    facts = _trail(
        [_removed_after(f"i{k}", h) for k, h in enumerate([1, 2, 3, 4, 5, 6, 7, 8, 9, 100])]
    )
    overall = summarise(facts)["overall"]
    assert overall["median_hours"] == 5.5
    assert overall["p90_hours"] == 9.0  # the 9th of 10
    assert overall["removed_within_2_5d"] == 90.0


def test_a_recheck_that_finds_it_back_online_undoes_the_removal() -> None:
    steps = [
        (S.OPENED, 0, None, T0),
        (S.REMOVED, 0, "p", T0 + 2 * HOUR),
        (S.STILL_ONLINE, 1, None, T0 + 30 * HOUR),
    ]
    assert summarise(_trail([("a", "p", steps)]))["overall"]["removed"] == 0
    steps.append((S.REMOVED, 2, None, T0 + 50 * HOUR))
    overall = summarise(_trail([("a", "p", steps)]))["overall"]
    assert overall["median_hours"] == 50.0
    assert overall["still_online"] == 0


def test_since_counts_items_opened_since_and_unopened_items_not_at_all() -> None:
    facts = _trail(
        [
            _removed_after("old", 5),
            ("late", "p", [(S.OPENED, 0, None, T0 + 10 * HOUR)]),
            ("orphan", "p", [(S.REMOVED, 0, "p", T0)]),
        ]
    )
    assert summarise(facts)["overall"]["items"] == 2
    assert summarise(facts, T0 + HOUR)["overall"]["items"] == 1


def test_the_art22_report_counts_actions_by_provider() -> None:
    notice = (S.NOTICE_SENT, 0, "p", T0 + HOUR)
    facts = _trail(
        [
            ("a", "p", [(S.OPENED, 0, None, T0), notice, (S.NOT_ILLEGAL, 0, "p", T0 + 3 * HOUR)]),
            ("b", "p", [(S.OPENED, 0, None, T0), notice]),
        ]
    )
    row = art22_report(facts)["providers"]["p"]
    assert row["actions"] == {"NOT_ILLEGAL": 1, "NO_ACTION": 1}
    assert row["notices"] == {"NOTICE_SENT": 2}
    assert row["median_hours_to_action"] == 2.0


def test_a_trail_item_takes_ids_only() -> None:
    with pytest.raises(ConfigError, match="UUID"):
        TrailItem("https://a.example.org/x", "c", synthetic_id("i"), "p", "NL")
    with pytest.raises(ConfigError, match="lower-case id"):
        TrailItem(synthetic_id("r"), "c", synthetic_id("i"), "Host A", "NL")
    assert fact_of("e", "r", "a", None, "REMOVED item=x provider=p", 0) is None
    assert (
        fact_of("e", "r", "a", None, "SOMETHING item=x provider=p cc=NL route=network n=0", 0)
        is None
    )


def test_the_directory_lists_every_problem_in_the_users_words() -> None:
    text = """
[providers.host-a]
name = "A"
country = "nl"
abuse_email = "not-an-address"
colour = "blue"
"""
    with pytest.raises(ConfigError) as caught:
        parse_directory(text, "providers.toml")
    lines = str(caught.value).splitlines()
    assert "providers.toml: providers.host-a.country: not a country code" in lines
    assert "providers.toml: providers.host-a.abuse_email: not an e-mail address" in lines
    assert "providers.toml: providers.host-a: unknown key 'colour'" in lines


def test_the_verification_report_names_the_event_and_the_figure() -> None:
    bad = StatsVerification(
        10,
        4,
        (AlteredEvent(3, "e-1", "r-1", "altered", "not what its signed record says"),),
        (("overall.removed", 1, 2),),
    )
    assert not bad.intact
    assert bad.lines() == [
        "altered event e-1 (entry 3, referral r-1): altered (not what its signed record says)",
        "figure overall.removed: the store gives 1, the signed events 2",
    ]
    assert StatsVerification(10, 4).lines() == [
        "figures verified: 4 trail events of 10 entries signed"
    ]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["stats", "everything"], "stats: unknown 'everything' (expected `verify` or nothing)"),
        (["stats", "--json", "--csv"], "stats: give --json or --csv, not both"),
        (["stats", "--since", "last tuesday"], "--since: expected a duration"),
    ],
)
def test_bad_stats_arguments_get_one_line(args: list[str], words: str, tmp_path: Any) -> None:
    result = CliRunner().invoke(app, ["--state-dir", str(tmp_path), *args, "--no-sync"])
    assert result.exit_code == 2
    assert words in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


class _Kept:
    """A notice sender that keeps what it is given (the SMTP path is tested in test_desk)."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, notice: Any) -> None:
        self.sent.append(notice)


def test_a_recheck_finding_it_back_online_resumes_the_cadence() -> None:
    clock = SimClock()
    events: list[dict[str, Any]] = []
    kept = _Kept()
    desk = TakedownDesk(
        TrailWriter(events.append, "hl-a", clock),
        ProviderDirectory([Provider("p", "P", "NL", "abuse@p.invalid")]),
        kept,
        secret=b"s",
        sender_address="d@hl-a.invalid",
        notifier="hl-a",
        cadence=Cadence(clearance_required=True),
    )
    item = TrailItem(synthetic_id("r"), "c", synthetic_id("i"), "p", "NL")
    desk.open(item, "https://a.example.org/x")
    desk.police_informed(item.item_id, "police-nl")
    desk.tick()
    assert kept.sent == []  # clearance required: informing police is not enough
    desk.clear(item.item_id, "police-nl")
    desk.tick()
    assert len(kept.sent) == 1
    clock.now += 2 * HOUR
    desk.answer(item.item_id, Answer.REMOVED, at_ms=clock.now - HOUR)
    clock.now += DAY_MS
    desk.tick()
    assert len(kept.sent) == 1  # answered: no repeat
    desk.recheck(item.item_id, online=True)
    desk.tick()  # the cadence resumes from the first notice: step 1 is due
    assert [n.repeat for n in kept.sent] == [0, 1]
    steps = [e["reason"].split(" ")[0] for e in events]
    assert steps == [
        "OPENED",
        "POLICE_INFORMED",
        "LEA_CLEARED",
        "NOTICE_SENT",
        "PROVIDER_ANSWERED",
        "REMOVED",
        "RECHECKED",
        "STILL_ONLINE",
        "NOTICE_REPEATED",
    ]
    facts = [
        f
        for e in events
        if (
            f := fact_of(
                e["event_id"], e["referral_id"], e["actor"], e["to_party"], e["reason"], e["at"]
            )
        )
    ]
    assert summarise(facts)["overall"]["removed"] == 0
