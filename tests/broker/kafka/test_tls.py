"""TLS to the broker for real: client → TLS → terminating proxy → embedded broker.

The embedded Tansu does not complete a TLS handshake itself, so a loopback
proxy terminates TLS (server certificate for 127.0.0.1/localhost from a
throw-away CA, client certificate required) in front of it, and the broker
advertises the proxy's address: every connection of every client goes through
TLS.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker.config import Settings
from broker.errors import ConfigError
from broker.kafka import clients
from broker.kafka.embedded import EmbeddedBroker, free_port
from broker.network import Network
from broker.wire.codec import Codec
from broker.wire.registry import REFERRAL, EmbeddedRegistry
from cli.main import app
from tests.conftest import EXAMPLE_NETWORK
from tests.support.factories import make_referral
from tests.support.kafka import provision_network, publish, read_topic
from tests.support.security import Pki, make_pki
from tests.support.tls_proxy import TlsProxy, server_context

pytestmark = pytest.mark.slow


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[TlsProxy, Pki]]:
    """A private broker reachable only through a TLS-terminating proxy (mutual TLS)."""
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    proxy = TlsProxy(
        ("127.0.0.1", port),
        server_context(str(pki.server_cert), str(pki.server_key), client_ca=str(pki.ca)),
    )
    broker = EmbeddedBroker(port, advertised=f"127.0.0.1:{proxy.port}", log_path=tmp_path / "b.log")
    broker.start()
    try:
        yield proxy, pki
    finally:
        broker.stop()
        proxy.close()


def _settings(proxy: TlsProxy, pki: Pki, tmp_path: Path, *, ca: bool = True) -> Settings:
    return Settings(
        bootstrap_servers=f"127.0.0.1:{proxy.port}",
        security_protocol="SSL",
        ssl_cafile=pki.ca if ca else None,
        ssl_certfile=pki.client_cert,
        ssl_keyfile=pki.client_key,
        network_file=EXAMPLE_NETWORK,
        state_dir=tmp_path / "state",
        topic_prefix="tls.",
    )


def test_referral_produced_and_consumed_over_tls(
    tls_broker: tuple[TlsProxy, Pki], tmp_path: Path, network: Network
) -> None:
    proxy, pki = tls_broker
    settings = _settings(proxy, pki, tmp_path)
    provision_network(settings, network)
    codec = Codec(EmbeddedRegistry())
    referral = make_referral()
    value = codec.encode(REFERRAL, referral.to_avro())
    topic = settings.topic_names().intake
    publish(settings, topic, [(referral.referral_id.encode(), value)])
    [record] = read_topic(settings, topic, at_least=1)
    assert record.value == value
    _, datum = codec.decode(record.value)
    assert datum["envelope"]["referral_id"] == referral.referral_id
    assert proxy.failed_handshakes == 0


def test_a_client_without_the_ca_fails_fast_with_one_line_naming_tls(
    tls_broker: tuple[TlsProxy, Pki], tmp_path: Path
) -> None:
    proxy, pki = tls_broker
    settings = _settings(proxy, pki, tmp_path, ca=False)
    started = time.monotonic()
    with pytest.raises(ConfigError) as err:
        clients.producer(settings)
    assert time.monotonic() - started < 10
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(
        f"TLS: the broker certificate at 127.0.0.1:{proxy.port} is not trusted"
    )
    assert "ssl_cafile" in message

    env = {
        "REFERRAL_BOOTSTRAP_SERVERS": f"127.0.0.1:{proxy.port}",
        "REFERRAL_SECURITY_PROTOCOL": "SSL",
        "REFERRAL_SSL_CERTFILE": str(pki.client_cert),
        "REFERRAL_SSL_KEYFILE": str(pki.client_key),
        "REFERRAL_STATE_DIR": str(tmp_path / "state"),
    }
    started = time.monotonic()
    result = CliRunner().invoke(app, ["topics", "list"], env=env)
    assert time.monotonic() - started < 10
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: TLS: the broker certificate at")
