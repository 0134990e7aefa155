"""``referral takedown status ORG``: the desk's items by step, ids and times, never a URL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from broker.config import Settings
from broker.takedown.desk import TakedownDesk
from broker.takedown.desk_store import DESK_FILE, DeskStore
from broker.takedown.notices import Answer, Notice
from broker.takedown.trail import TrailItem, TrailWriter
from cli.main import app
from tests.support.takedown import DAY, SimClock, scripted_providers, synthetic_id

NETWORK = Path(__file__).resolve().parents[2] / "examples" / "network.toml"


class _Quiet:
    def send(self, notice: Notice) -> None:
        """Sent nowhere."""


def _desk(settings: Settings) -> list[str]:
    directory, _ = scripted_providers(3)
    clock = SimClock()
    events: list[dict[str, Any]] = []
    path = settings.org_dir("hl-nl")
    path.mkdir(parents=True)
    desk = TakedownDesk(
        TrailWriter(events.append, "hl-nl", clock),
        directory,
        _Quiet(),
        secret=b"test-secret-not-for-production",
        sender_address="desk@hl-nl.invalid",
        notifier="hl-nl",
        store=DeskStore(path / DESK_FILE),
    )
    ids = []
    for k in range(3):
        item = TrailItem(synthetic_id(f"r{k}"), f"case-{k}", synthetic_id(f"i{k}"), "host-01", "NL")
        desk.open(item, f"https://files-{k}.example.org/secret-path")
        ids.append(item.item_id)
    desk.police_informed(ids[1], "police-nl")
    desk.police_informed(ids[2], "police-nl")
    desk.tick()
    clock.now += DAY
    desk.tick()
    desk.answer(ids[2], Answer.REMOVED)
    assert desk.store is not None
    desk.store.close()
    return ids


def test_status_lists_items_by_step_without_urls(tmp_path: Path) -> None:
    """opened, notified 1 (repeat at +24 h), answered; JSON and the table; no URL anywhere."""
    settings = Settings(state_dir=tmp_path / "state", bootstrap_servers="127.0.0.1:9")
    ids = _desk(settings)
    base = ["--state-dir", str(settings.state_dir), "takedown", "status", "hl-nl"]
    out = CliRunner().invoke(app, [*base, "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert [(r["item_id"], r["step"], r["cadence_step"]) for r in rows] == [
        (ids[0], "opened", 0),
        (ids[1], "notified", 1),
        (ids[2], "answered", 1),
    ]
    assert rows[1]["first_notice"] == "2026-01-05 00:00"
    assert rows[1]["last_notice"] == "2026-01-06 00:00"
    table = CliRunner().invoke(app, [*base], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "notified 1" in table.stdout
    assert ids[0] in table.stdout
    assert "example.org" not in table.stdout + out.stdout


def test_status_of_an_org_without_a_desk_is_one_line(tmp_path: Path) -> None:
    """No desk yet: one line, exit non-zero, no traceback."""
    env = {"REFERRAL_STATE_DIR": str(tmp_path), "REFERRAL_NETWORK_FILE": str(NETWORK)}
    out = CliRunner().invoke(app, ["takedown", "status", "hl-nl"], env=env)
    assert out.exit_code != 0
    [line] = out.stderr.splitlines()
    assert "hl-nl has no takedown desk yet" in line
