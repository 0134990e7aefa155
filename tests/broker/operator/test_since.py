"""``--since`` values as both faces parse them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker.errors import ConfigError
from broker.operator.since import parse_since

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", NOW - timedelta(hours=24)),
        (" 90s ", NOW - timedelta(seconds=90)),
        ("1.5d", NOW - timedelta(days=1.5)),
        ("30m", NOW - timedelta(minutes=30)),
        ("2026-11-22", datetime(2026, 11, 22, tzinfo=UTC)),
        ("2026-11-22T08:00Z", datetime(2026, 11, 22, 8, tzinfo=UTC)),
        ("2026-11-22T08:00+01:00", datetime(2026, 11, 22, 7, tzinfo=UTC)),
        ("ALL", None),
    ],
)
def test_durations_dates_and_all(text: str, expected: datetime | None) -> None:
    assert parse_since(text, NOW) == expected


def test_a_bad_value_is_named_once_with_its_control_characters_escaped() -> None:
    with pytest.raises(ConfigError) as err:
        parse_since("yesterday\x1b[2J", NOW)
    message = str(err.value)
    assert message.startswith("--since: expected a duration like 24h")
    assert "\x1b" not in message
    assert "yesterday" in message
    assert "\n" not in message


def test_the_message_names_what_the_user_typed_it_in_and_cuts_a_long_value() -> None:
    with pytest.raises(ConfigError) as err:
        parse_since("x" * 500, NOW, name="since")
    message = str(err.value)
    assert message.startswith("since: expected")
    assert "--since" not in message
    assert "x" * 39 + "…" in message
    assert "x" * 41 not in message
