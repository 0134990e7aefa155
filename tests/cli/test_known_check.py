"""``referral check FILE --as ORG`` names the rows holding known content, or says it could not."""

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


def test_check_names_the_known_rows_and_says_when_the_evaluator_is_away(
    settings: Settings, tmp_path: Path
) -> None:
    settings, network = known_network(settings, connectors=True)
    first, again = plan(2, 1, random.Random(5))
    fresh = plan(1, 0, random.Random(6))[0]
    published = tmp_path / "first.json"
    published.write_text(json.dumps(_document(first.org, [(0, first)], "BASELINE", False)))
    checked = tmp_path / "next.jsonl"
    docs = [
        _document(again.org, [(1, fresh)], "NATIONAL", False),
        _document(again.org, [(2, again)], "NATIONAL", False),
    ]
    checked.write_text("".join(json.dumps(d) + "\n" for d in docs))
    env = cli_env(settings)
    runner = CliRunner()
    with running_evaluator(settings, network):
        one = runner.invoke(app, ["publish", str(published), "--as", first.org], env=env)
        assert one.exit_code == 0, one.output
        out = runner.invoke(app, ["check", str(checked), "--as", again.org], env=env)
    assert out.exit_code == 0, out.output
    lines = [line for line in out.output.splitlines() if "holds known content" in line]
    assert len(lines) == 1
    assert lines[0].startswith(f"{checked} line 2: item ")
    assert f"previously assessed by {first.org} as BASELINE on " in lines[0]
    # Nothing was published by the check, nothing of the content is printed.
    assert again.url not in out.output
    assert again.sha256 not in out.output
    # The evaluator is away: said in one line, the check itself still passes.
    away = runner.invoke(app, ["check", str(checked), "--as", again.org], env=env)
    assert away.exit_code == 0, away.output
    assert "holds known content" not in away.output
    assert (
        "known content not checked: the evaluator secretariat could not be reached:" in away.output
    )
    assert "Traceback" not in away.output
