"""Settings precedence: CLI flags > REFERRAL_* environment > network file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import Settings, load_settings
from broker.errors import ConfigError
from tests.conftest import EXAMPLE_NETWORK


def network_with_broker_table(tmp_path: Path) -> Path:
    path = tmp_path / "net.toml"
    path.write_text(
        '[broker]\nbootstrap_servers = "file-host.invalid:9092"\nclient_id = "from-file"\n'
        'topic_prefix = "file."\n\n' + EXAMPLE_NETWORK.read_text()
    )
    return path


def test_network_file_fills_in_what_nothing_else_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFERRAL_CLIENT_ID", "from-env")
    s = load_settings(network_file=network_with_broker_table(tmp_path))
    assert s.bootstrap_servers == "file-host.invalid:9092"
    assert s.client_id == "from-env"
    assert s.topic_prefix == "file."


def test_cli_beats_environment_beats_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFERRAL_BOOTSTRAP_SERVERS", "env-host.invalid:9092")
    path = network_with_broker_table(tmp_path)
    assert load_settings(network_file=path).bootstrap_servers == "env-host.invalid:9092"
    s = load_settings(network_file=path, bootstrap_servers="cli-host.invalid:1")
    assert s.bootstrap_servers == "cli-host.invalid:1"


def test_bad_bootstrap_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="bootstrap_servers"):
        load_settings(bootstrap_servers="no-port-here", network_file=EXAMPLE_NETWORK)


def test_security_kwargs_reach_kafka_arguments(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    s = Settings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password="s3cret-canary",  # type: ignore[arg-type]
        ssl_cafile=ca,
    )
    kwargs = s.kafka_security_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_password"] == "s3cret-canary"
    assert kwargs["ssl_cafile"] == str(ca)
    assert "s3cret-canary" not in repr(s)
    assert "s3cret-canary" not in str(s.masked())


def test_sasl_without_user_is_refused() -> None:
    with pytest.raises(ConfigError, match="needs sasl_mechanism and sasl_username"):
        Settings(security_protocol="SASL_PLAINTEXT").kafka_security_kwargs()


def test_missing_ca_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ssl_cafile: file not found"):
        Settings(security_protocol="SSL", ssl_cafile=tmp_path / "nope.pem").kafka_security_kwargs()
