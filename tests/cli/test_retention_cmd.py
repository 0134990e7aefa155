"""``referral retention ORG``: what the rules make due, listed (--dry-run) and erased."""

from __future__ import annotations

import json
import time
from pathlib import Path

from typer.testing import CliRunner

from broker.config import Settings
from broker.contracts import Delivery, jsonable
from broker.receiver.inbox import Inbox
from cli.main import app
from connectors.inbox_folder import InboxFolderConfig, InboxFolderSink
from tests.support.factories import make_referral

ROOT = Path(__file__).resolve().parents[2]
RULES = "\n[retention]\n[[retention.rules]]\nafter_days = 30\n"


def _received(settings: Settings, days_ago: float) -> str:
    ref = make_referral()
    env = ref.envelope
    d = Delivery(env.referral_id, env.case_id, "hl-nl", b"", jsonable(ref.to_avro()), "t", 0, 1)
    sink = InboxFolderSink(InboxFolderConfig(path="orgs/police-nl/inbox"), settings)
    sink.open()
    sink.deliver(d)
    inbox = Inbox.for_org(settings, "police-nl")
    inbox.record(d, "inbox_folder", time.time() - days_ago * 86400)
    inbox.close()
    return env.referral_id


def test_dry_run_lists_then_the_run_erases_only_what_is_due(tmp_path: Path) -> None:
    network = tmp_path / "network.toml"
    network.write_text((ROOT / "examples" / "network.toml").read_text() + RULES)
    settings = Settings(state_dir=tmp_path / "state", bootstrap_servers="127.0.0.1:9")
    old, fresh = _received(settings, 40), _received(settings, 3)
    base = ["--state-dir", str(settings.state_dir), "retention", "police-nl"]
    net = ["--network", str(network)]
    runner = CliRunner()
    dry = runner.invoke(app, [*base, "--dry-run", "--json", *net])
    assert dry.exit_code == 0, dry.output
    assert [(r["referral_id"], r["erased"]) for r in json.loads(dry.output)] == [(old, False)]
    inbox_dir = settings.state_dir / "orgs" / "police-nl" / "inbox"
    assert (inbox_dir / f"{old}.json").exists(), "a dry run erases nothing"
    done = runner.invoke(app, [*base, *net], env={"COLUMNS": "80"})
    assert done.exit_code == 0, done.output
    assert "1 referral(s) erased at police-nl" in done.output
    assert not (inbox_dir / f"{old}.json").exists()
    assert (inbox_dir / f"{fresh}.json").exists()
    again = runner.invoke(app, [*base, "--json", *net])
    assert json.loads(again.output) == []
    plain = runner.invoke(app, ["--state-dir", str(settings.state_dir), "retention", "police-nl"])
    assert "no [retention] rules" in plain.output
