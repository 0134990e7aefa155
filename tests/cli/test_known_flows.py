"""``referral flows`` shows the share of known content per origin, counts only."""

from __future__ import annotations

import json
import random
from pathlib import Path

from typer.testing import CliRunner

from bench.known_net import _document, plan
from broker.config import Settings
from cli.main import app
from tests.support.kafka import cli_env
from tests.support.known import known_network, running_evaluator


def test_flows_counts_the_entries_another_member_published_before(
    settings: Settings, tmp_path: Path
) -> None:
    settings, network = known_network(settings, connectors=True)
    first, again = plan(2, 1, random.Random(8))
    assert again.how == "hash"  # the same SHA-256 and MD5 under another URL
    env = cli_env(settings)
    runner = CliRunner()
    with running_evaluator(settings, network):
        for n, (item, legal) in enumerate(((first, "BASELINE"), (again, "NATIONAL"))):
            path = tmp_path / f"r{n}.json"
            path.write_text(json.dumps(_document(item.org, [(n, item)], legal, False)))
            out = runner.invoke(app, ["publish", str(path), "--as", item.org], env=env)
            assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["flows", "--since", "all", "--json"], env=env)
    assert out.exit_code == 0, out.output
    rows = {r["origin"]: r for r in json.loads(out.output)["known_content"]}
    assert rows[first.org] == {
        "origin": first.org,
        "entries": 3,
        "known_before": 0,
        "share": 0.0,
    }
    assert rows[again.org] == {
        "origin": again.org,
        "entries": 3,
        "known_before": 2,
        "share": 0.6667,
    }
    text = runner.invoke(app, ["flows", "--since", "all"], env=env)
    assert text.exit_code == 0, text.output
    assert "known content per origin" in text.output
    assert "67%" in text.output
    for secret in (first.sha256, first.md5, first.url, again.url):
        assert secret not in out.output + text.output
