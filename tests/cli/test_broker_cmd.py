"""The embedded broker and the foundation CLI, against real processes."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker.config import Settings
from broker.errors import EmbeddedBrokerError
from broker.kafka.clients import admin_client
from broker.kafka.embedded import EmbeddedBroker, read_state
from broker.kafka.provision import describe_topics, provision
from broker.network import Network
from cli.main import app
from tests.conftest import EXAMPLE_NETWORK

runner = CliRunner()


def invoke(*args: str, state_dir: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["--state-dir", str(state_dir), *args])
    return result.exit_code, result.output


def test_provision_is_idempotent(settings: Settings, network: Network) -> None:
    admin = admin_client(settings)
    try:
        first = provision(admin, network, settings.topic_names())
        second = provision(admin, network, settings.topic_names())
        listed = describe_topics(admin)
    finally:
        admin.close()
    assert first.changed
    assert set(first.created) == set(network.required_topics(settings.topic_names()))
    assert not second.changed
    assert second.existing == first.created
    prefix = settings.topic_prefix
    assert listed[prefix + "referrals.intake"] == 3
    assert listed[prefix + "handover.ledger"] == 1


def test_busy_port_is_a_one_line_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(EmbeddedBrokerError, match=f"127.0.0.1:{port} is in use"):
            EmbeddedBroker(port).start()


def test_cli_detached_lifecycle(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    code, out = invoke("broker", "up", "--detach", state_dir=state_dir)
    assert code == 0, out
    try:
        st = read_state(state_dir)
        assert st is not None
        code, out = invoke("broker", "status", state_dir=state_dir)
        assert code == 0
        assert f"running at {st.bootstrap}" in out
        # A second detached broker from the same state dir is refused in one line.
        code, out = invoke("broker", "up", "--detach", state_dir=state_dir)
        assert code == 1
        assert out.strip().splitlines() == [
            f"error: an embedded broker is already running at {st.bootstrap} (pid {st.pid})"
        ]
        code, out = invoke(
            "topics", "provision", "--network", str(EXAMPLE_NETWORK), state_dir=state_dir
        )
        assert code == 0, out
        # 6 shared topics, 7 served jurisdictions x 2 lanes, one status topic per organisation,
        # the evaluator's two and match.tokens (issue 24), and the police requests' intake,
        # dead letters and one per point of contact (7; issue 26).
        assert "43 topic(s) created" in out
        code, out = invoke(
            "topics", "provision", "--network", str(EXAMPLE_NETWORK), state_dir=state_dir
        )
        assert code == 0
        assert "nothing to do" in out
        code, out = invoke("topics", "list", "--json", state_dir=state_dir)
        assert code == 0
        assert '"referrals.to.DE.urgent": 3' in out
    finally:
        code, out = invoke("broker", "down", state_dir=state_dir)
    assert code == 0
    assert "stopped" in out
    code, out = invoke("broker", "status", state_dir=state_dir)
    assert code == 3
    assert "not running" in out


def test_cli_busy_port(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        code, out = invoke("broker", "up", "--port", str(port), state_dir=tmp_path)
    assert code == 1
    assert out.strip() == f"error: cannot start embedded broker: 127.0.0.1:{port} is in use"


def test_cli_broken_network_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    text = EXAMPLE_NETWORK.read_text()
    text = text.replace('country = "FR"', 'country = "QQ"').replace(
        'police = ["police-de"]', 'police = ["police-de", "nobody"]'
    )
    broken.write_text(text)
    code, out = invoke("network", "check", str(broken), state_dir=tmp_path)
    assert code == 2
    lines = out.strip().splitlines()
    assert lines[0] == f"error: {broken}: 2 problem(s)"
    assert any("country code 'QQ'" in line for line in lines)
    assert any("unknown organisation 'nobody'" in line for line in lines)
    assert all(line.startswith("error: ") for line in lines)
    code, out = invoke(
        "-b", "127.0.0.1:1", "topics", "provision", "--network", str(broken), state_dir=tmp_path
    )
    assert code == 2


def test_cli_network_check_names_the_routing(tmp_path: Path) -> None:
    code, out = invoke("network", "check", str(EXAMPLE_NETWORK), state_dir=tmp_path)
    assert code == 0, out
    assert out.strip() == (
        f"{EXAMPLE_NETWORK}: ok — 11 organisations, 7 served jurisdictions, "
        "routing by role (6 rules), fallback secretariat"
    )


def test_config_show_masks_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFERRAL_SASL_PASSWORD", "hunter2-canary")
    monkeypatch.setenv("REFERRAL_SASL_USERNAME", "svc-user")
    code, out = invoke(
        "-b", "broker-a.invalid:9092", "config", "show", "--json", state_dir=tmp_path
    )
    assert code == 0, out
    assert "hunter2-canary" not in out
    shown = json.loads(out)
    assert shown["sasl_password"] == {"value": "**********", "from": "environment"}
    assert shown["bootstrap_servers"] == {"value": "broker-a.invalid:9092", "from": "flag"}
    assert shown["client_id"]["from"] == "default"


def test_cli_flag_overrides_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFERRAL_BOOTSTRAP_SERVERS", "envhost:9092")
    monkeypatch.setenv("REFERRAL_CLIENT_ID", "from-env")
    code, out = invoke("-b", "flaghost:9093", "config", "show", "--json", state_dir=tmp_path)
    assert code == 0, out
    shown = json.loads(out)
    assert shown["bootstrap_servers"] == {"value": "flaghost:9093", "from": "flag"}
    assert shown["client_id"] == {"value": "from-env", "from": "environment"}


def test_a_state_directory_carries_its_network_file_and_broker(tmp_path: Path) -> None:
    """A kept demo's state directory: every command against it uses its network and broker."""
    run = tmp_path / "demo-run"
    run.mkdir()
    text = EXAMPLE_NETWORK.read_text(encoding="utf-8").replace(
        'name = "', 'name = "sealed copy of ', 1
    )
    (run / "network.toml").write_text(text, encoding="utf-8")
    (run / "broker.json").write_text('{"host": "127.0.0.1", "port": 40123}', encoding="utf-8")
    code, out = invoke("config", "show", "--json", state_dir=run)
    assert code == 0, out
    shown = json.loads(out)
    assert shown["network_file"] == {"value": str(run / "network.toml"), "from": "state directory"}
    assert shown["bootstrap_servers"] == {"value": "127.0.0.1:40123", "from": "state directory"}
    code, out = invoke("network", "check", state_dir=run)
    assert code == 0, out
    assert str(run / "network.toml") in out
    code, out = invoke("--network", str(EXAMPLE_NETWORK), "config", "show", "--json", state_dir=run)
    assert json.loads(out)["network_file"] == {"value": str(EXAMPLE_NETWORK), "from": "flag"}
