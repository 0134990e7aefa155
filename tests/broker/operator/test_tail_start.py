"""``referral tail -o``: kcat's start positions, parsed and clamped to what a partition holds.

Pure: the real broker reads them in tests/e2e/test_first_hour.py (``tail -o -5 -e``).
"""

from __future__ import annotations

import pytest

from broker.errors import ConfigError
from broker.operator.tail_start import Start, parse_start, plan

FIRST = {"p0": 10, "p1": 0}
END = {"p0": 20, "p1": 3}


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("beginning", Start("beginning")),
        ("end", Start("end")),
        ("42", Start("offset", 42)),
        ("-5", Start("last", 5)),
        ("s@1700000000000", Start("time", 1_700_000_000_000)),
        ("s@2023-11-14T22:13:20Z", Start("time", 1_700_000_000_000)),
    ],
)
def test_every_kcat_start_parses(text: str, start: Start) -> None:
    assert parse_start(text) == start


@pytest.mark.parametrize("text", ["bogus", "-x", "s@yesterday", ""])
def test_a_bad_start_is_one_line_naming_the_forms(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_start(text)
    assert "beginning, end, an offset, -N" in str(err.value)
    assert "\n" not in str(err.value)


def test_each_partition_starts_within_what_it_holds() -> None:
    assert plan(Start("last", 5), FIRST, END, {}) == {"p0": 15, "p1": 0}
    assert plan(Start("offset", 2), FIRST, END, {}) == {"p0": 10, "p1": 2}
    assert plan(Start("offset", 99), FIRST, END, {}) == {"p0": 20, "p1": 3}
    assert plan(Start("beginning"), FIRST, END, {}) == {"p0": 10, "p1": 0}
    assert plan(Start("end"), FIRST, END, {}) == {"p0": 20, "p1": 3}
    # A time after a partition's last record: nothing of it (its end).
    assert plan(Start("time", 1), FIRST, END, {"p0": 15}) == {"p0": 15, "p1": 3}
