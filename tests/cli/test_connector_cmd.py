"""``referral connector run``: configuration errors, and a real process stopped by SIGTERM."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from typer.testing import CliRunner

from broker.config import Settings
from cli.main import app
from tests.support.connectors import (
    NETWORK_TOML,
    make_network,
    referral_json,
    wait_for,
)
from tests.support.kafka import provision_network, spawn_cli


def _network_file(tmp_path: Path) -> Path:
    path = tmp_path / "network.toml"
    path.write_text(
        NETWORK_TOML.replace("{webhook_url}", "http://127.0.0.1:9/hook").replace(
            "{republish_after}", "300"
        )
    )
    return path


def test_connector_run_names_each_config_problem_on_one_line(tmp_path: Path) -> None:
    env = {
        "REFERRAL_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "REFERRAL_NETWORK_FILE": str(_network_file(tmp_path)),
        "REFERRAL_STATE_DIR": str(tmp_path / "state"),
    }
    res = CliRunner().invoke(app, ["connector", "run", "hl-b"], env=env)
    assert res.exit_code == 2
    assert res.output.strip() == (
        "error: hl-b: connectors.http_intake.token_env: environment variable "
        "TEST_TOKEN_HL_B is not set"
    )
    res = CliRunner().invoke(app, ["connector", "run", "nobody"], env=env)
    assert res.exit_code == 2
    assert res.output.startswith("error: unknown organisation 'nobody'; ")


def test_connector_run_process_publishes_and_stops_cleanly_on_sigterm(
    settings: Settings, tmp_path: Path
) -> None:
    own = Settings(
        bootstrap_servers=settings.bootstrap_servers,
        state_dir=settings.state_dir,
        network_file=_network_file(tmp_path),
        topic_prefix=settings.topic_prefix,
    )
    provision_network(own, make_network())
    log = tmp_path / "connector.log"
    proc = spawn_cli(own, "connector", "run", "hl-a", log=log)
    try:
        wait_for(lambda: "connectors of hl-a running" in log.read_text(), 30, "start-up")
        drop = Path(own.state_dir) / "orgs" / "hl-a" / "drop"
        (drop / "one.json").write_text(json.dumps(referral_json("hl-a", "NL")))
        wait_for(lambda: (drop / "done" / "one.json").exists(), 30, "the dropped file processed")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "connectors of hl-a stopped" in log.read_text()
    pending = CliRunner().invoke(
        app,
        ["outbox", "hl-a", "--json"],
        env={
            "REFERRAL_BOOTSTRAP_SERVERS": str(own.bootstrap_servers),
            "REFERRAL_NETWORK_FILE": str(own.network_file),
            "REFERRAL_STATE_DIR": str(own.state_dir),
        },
    )
    assert pending.exit_code == 0, pending.output
    [entry] = json.loads(pending.stdout)
    assert entry["waiting_for"] == ["police-nl"]
