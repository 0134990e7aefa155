"""`referral demo` end to end, as a newcomer runs it (a real process, its own broker)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_demo_accounts_for_every_published_referral(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRAL_")}
    env["COLUMNS"] = "200"
    done = subprocess.run(
        [sys.executable, "-m", "cli", "--state-dir", str(tmp_path), "demo", "--count", "200"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    m = re.search(
        r"accounted: (\d+) delivered \+ (\d+) dead-lettered \+ (\d+) unassigned = (\d+) published "
        r"\((\d+) pending\); (\d+) more refused at their source",
        out,
    )
    assert m, out[-3000:]
    delivered, dead, unassigned, published, pending, refused = map(int, m.groups())
    assert delivered + dead + unassigned == published
    assert pending == 0
    assert dead == 3  # the legacy client's three broken records
    assert unassigned > 0
    assert refused > 0
    assert published + refused == 200 + 3
    assert "ledger intact" in out
    assert re.search(r"raw topic bytes: none of \d+ URLs and hashes readable", out)
    assert "trace of multi-jurisdiction referral" in out
    # The role rules at work: hosted material goes hotline → the hosting country's hotline.
    assert "routes by role" in out
    assert re.search(r"hotline\s*│\s*HOSTING\s*│\s*hotline\s*│\s*\d+", out), out[-3000:]
    # The run's own state: spans were exported, the broker is gone.
    run = next(tmp_path.glob("demo-*"))
    assert (run / "traces.jsonl").stat().st_size > 0
    assert not (run / "broker.json").exists()
