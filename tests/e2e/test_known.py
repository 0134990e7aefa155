"""Known content across three hotlines on the real broker (issue 24, the must-show, small N).

Every exact-hash and same-URL repeat reaches police-fr's inbox marked with the earlier
holder and classification (TLP RED: the holder only), nothing else is marked, no canary
hash or URL is in any topic or in the evaluator's stores, and guesses confirm nothing.
"""

from __future__ import annotations

import json
import logging
from random import Random

import pytest
from typer.testing import CliRunner

from bench.known_net import RECEIVER, Outcome, plan, run, scan
from broker.config import Settings
from cli.main import app

pytestmark = pytest.mark.slow


def test_repeats_across_hotlines_are_marked_and_nothing_leaks(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="kafka")  # an earlier CLI test may have quietened it
    out = run(settings, items=300, repeats=189, receive_timeout=120)
    # No canary in any log line either (every logger, DEBUG and up).
    lines = Outcome()
    scan(iter(r.getMessage().encode() for r in caplog.records), plan(300, 189, Random(24)), lines)
    assert lines.canaries == out.canaries
    assert lines.canaries_found == 0
    assert len(caplog.records) > 100
    assert out.marked_repeats == out.repeats == 189
    assert out.right_holder_and_class == 189
    assert out.red_marks > 0
    assert out.red_marks_hiding_class == out.red_marks
    assert out.false_matches == 0
    assert out.told_origin == 189  # each origin was told before, by its own index
    # 111 originals (3 each), 95 hash repeats (a new URL), 94 URL repeats (two new hashes)
    assert out.canaries == 3 * 111 + 95 + 2 * 94
    assert out.scanned_bytes > 0
    assert out.canaries_found == 0
    assert out.control_found > 0  # the scanner finds them where they are: the members' stores
    assert (out.guesses, out.guesses_confirmed) == (1000, 0)
    assert out.attacker_values > 3 * 300  # it did hold the tokens and elements
    # The liaison's surface: inbox --json carries one previously_assessed object per known item.
    state = str(settings.state_dir)
    shown = CliRunner().invoke(app, ["--state-dir", state, "inbox", RECEIVER, "--json"])
    assert shown.exit_code == 0, shown.output
    marks = [m for r in json.loads(shown.output) for m in r["previously_assessed"]]
    assert len(marks) == 189
    red = [m for m in marks if m["tlp"] == "RED"]
    assert len(red) == out.red_marks
    assert all("classification" not in m and m["ask"] == m["holder"] for m in red)
    assert all(
        m["classification"] == "BASELINE" or m["classification"] == "NATIONAL"
        for m in marks
        if m["tlp"] != "RED"
    )
    table = CliRunner().invoke(app, ["--state-dir", state, "inbox", RECEIVER])
    assert "previously assessed by hl-" in table.output
    assert "(TLP:RED): ask hl-" in table.output
