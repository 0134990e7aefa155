"""Kafka client factories: every client gets the same bootstrap and security settings.

Kafka errors are translated here into the project's own tree; callers see
:class:`~broker.errors.KafkaBrokerError` subclasses only.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from kafka.net.compat import KafkaNetClient

from broker.config import Settings
from broker.errors import ConfigError, KafkaUnavailable
from broker.kafka.healing import HealingConsumer, HealingProducer

#: kafka-python logs whole records (key, value, headers) at DEBUG. Referral values
#: are case content, so its loggers are capped at INFO whatever the root level is;
#: an operator who lowers ``kafka`` to DEBUG on purpose accepts that payloads are logged.
_KAFKA_LOG_FLOOR = logging.INFO


class _SlowTaskFilter(logging.Filter):
    """Drops kafka-python's "Task ... ran for 0.1s" warnings.

    Its event loop warns whenever one of its tasks held it over 100 ms: on a busy
    2-core machine that is every few seconds, says nothing an operator can act on,
    and lands in the middle of a CLI command's output.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Task ") or "threshold" not in str(record.msg)


class _ClosedSocketFilter(logging.Filter):
    """Drops kafka-python's traceback for a task that waited on a socket already closed.

    Closing a client while its IO loop still has a read or write pending on a
    connection (a shutdown: the demo's stop printed it after "demo finished")
    makes the loop register the closed socket (``fileno() == -1``); the selector
    raises ``ValueError: Invalid file descriptor: -1`` and the loop logs the dead
    task with a traceback. The connection is gone either way (kafka-python's own
    ``unregister_event`` ignores the same error); every other task failure is kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        closed = isinstance(exc, ValueError) and "Invalid file descriptor: -1" in str(exc)
        return not (closed and str(record.msg).startswith("Unhandled exception in task"))


class _ClosedTransportFilter(logging.Filter):
    """Drops kafka-python's traceback for a read on a transport whose socket is already gone.

    A client closed while its IO loop still reads (the kept demo's short-lived
    consumers) leaves the transport's socket ``None``; the read raises
    ``AttributeError`` and is logged with a traceback, then the connection is
    closed, as it already was. Every other receive error is kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        args = record.args if isinstance(record.args, tuple) else ()
        gone = bool(args) and getattr(args[0], "_sock", True) is None
        noise = isinstance(exc, AttributeError) and gone
        return not (noise and "Error receiving network data" in str(record.msg))


def _cap_kafka_logging() -> None:
    kafka_logger = logging.getLogger("kafka")
    if kafka_logger.level == logging.NOTSET or kafka_logger.level < _KAFKA_LOG_FLOOR:
        kafka_logger.setLevel(_KAFKA_LOG_FLOOR)
    selector = logging.getLogger("kafka.net.selector")
    if not any(isinstance(f, _SlowTaskFilter) for f in selector.filters):
        selector.addFilter(_SlowTaskFilter())
    if not any(isinstance(f, _ClosedSocketFilter) for f in selector.filters):
        selector.addFilter(_ClosedSocketFilter())
    transport = logging.getLogger("kafka.net.transport")
    if not any(isinstance(f, _ClosedTransportFilter) for f in transport.filters):
        transport.addFilter(_ClosedTransportFilter())


_cap_kafka_logging()

__all__ = [
    "BOOTSTRAP_TIMEOUT_MS",
    "CONSUMER_DEFAULTS",
    "PRODUCER_DEFAULTS",
    "admin_client",
    "check_tls",
    "close_consumer",
    "close_producer",
    "consumer",
    "embedded_bootstrap",
    "no_auto_create_client",
    "probe",
    "producer",
    "resolve_bootstrap",
    "wait_for_broker",
]

#: Producer tuning shared by every component (and the benchmark's baseline).
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "linger_ms": 5,
    "batch_size": 256 * 1024,
    "max_request_size": 4 * 1024 * 1024,
    "delivery_timeout_ms": 120_000,
    "request_timeout_ms": 30_000,
    "max_in_flight_requests_per_connection": 5,
}

#: Consumer tuning; the group timings suit the embedded broker's slow first join.
CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "max_poll_records": 1000,
    "max_partition_fetch_bytes": 4 * 1024 * 1024,
}


def embedded_bootstrap(state_dir: Path) -> str | None:
    """The address of the embedded broker a state directory records (None: none)."""
    state_file = Path(state_dir) / "broker.json"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
        return f"{state['host']}:{int(state['port'])}"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resolve_bootstrap(settings: Settings) -> str:
    """The bootstrap servers: the settings', else the detached embedded broker's."""
    if settings.bootstrap_servers:
        return settings.bootstrap_servers
    found = embedded_bootstrap(settings.state_dir)
    if found:
        return found
    raise ConfigError(
        "no bootstrap servers: pass --bootstrap-servers, set REFERRAL_BOOTSTRAP_SERVERS, "
        "or start the embedded broker with `referral broker up --detach`"
    )


def no_auto_create_client(**configs: Any) -> KafkaNetClient:
    """kafka-python's network client, with topic auto-creation really off.

    kafka-python 3.0 accepts ``allow_auto_create_topics`` on the producer and the
    consumer but does not hand it to the ``ClusterMetadata`` its connection
    manager builds (``kafka/net/manager.py``), whose metadata requests therefore
    keep ``allow_auto_topic_creation=True``: a client that asks about a missing
    topic makes the broker create it with the broker's default partition count.
    Passed as ``kafka_client``, this sets it before the first request.
    """
    client = KafkaNetClient(**configs)
    client.cluster.config["allow_auto_create_topics"] = False
    return client


#: How long a new client waits for its first metadata answer (kafka-python's own default,
#: 30 s, made every command against an unreachable broker hang that long). :func:`probe`
#: has already seen something answer by then; this only bounds a broker that is very slow.
BOOTSTRAP_TIMEOUT_MS = 10_000
#: How long :func:`probe` waits for a bootstrap server to accept a connection and answer.
PROBE_TIMEOUT_S = 2.0
#: An ApiVersions v0 request (correlation id 0, client id "probe"): every Kafka broker answers
#: it before authentication; a TLS listener answers it with an alert, which counts as alive.
_API_VERSIONS_V0 = struct.pack(">ihhih5s", 15, 18, 0, 0, 5, b"probe")


def probe(bootstrap: list[str], timeout: float = PROBE_TIMEOUT_S) -> None:
    """KafkaUnavailable (one line, naming the servers) unless one of them answers in time.

    A refused port fails at once; a port that drops the handshake, or accepts and
    never answers a request, is given up after ``timeout`` in all. For plaintext
    listeners; :func:`check_tls` does the same for TLS ones.
    """
    deadline = time.monotonic() + timeout
    reason = "no server"
    for server in bootstrap:
        host, _, port = server.strip().rpartition(":")
        try:
            addr = (host.strip("[]") or "localhost", int(port))
            left = max(0.05, deadline - time.monotonic())
            with socket.create_connection(addr, left) as conn:
                conn.settimeout(max(0.05, deadline - time.monotonic()))
                conn.sendall(_API_VERSIONS_V0)
                conn.recv(4)  # any answer, or the peer closing, means something is there
                return
        except TimeoutError:
            reason = f"no answer within {timeout:g} s"
        except ConnectionRefusedError:
            reason = "connection refused"
        except ConnectionResetError:
            return  # it answered by hanging up: let the client say what it is
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
    raise KafkaUnavailable(_unreachable(",".join(bootstrap), reason))


def _unreachable(servers: str, reason: str) -> str:
    return (
        f"no broker answered at {servers} ({reason}); is it running at that address? "
        "(--bootstrap-servers or REFERRAL_BOOTSTRAP_SERVERS)"
    )


def _common(settings: Settings, role: str) -> dict[str, Any]:
    security = settings.kafka_security_kwargs()
    bootstrap = resolve_bootstrap(settings).split(",")
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        check_tls(bootstrap, security)  # shakes hands: a bare probe would be a failed one
    else:
        probe(bootstrap)
    return {
        "bootstrap_servers": bootstrap,
        "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
        "client_id": f"{settings.client_id}-{role}",
        "kafka_client": no_auto_create_client,
        **security,
    }


def _tls_context(security: dict[str, Any]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=security.get("ssl_cafile"))
    ctx.check_hostname = bool(security.get("ssl_check_hostname", True))
    if security.get("ssl_certfile"):
        ctx.load_cert_chain(
            security["ssl_certfile"], security.get("ssl_keyfile"), security.get("ssl_password")
        )
    return ctx


def check_tls(bootstrap: list[str], security: dict[str, Any], timeout: float = 5.0) -> None:
    """Fail fast, in one line, when a bootstrap server's TLS certificate is not trusted.

    kafka-python retries a failing handshake until its request timeout and then
    reports only a timeout; one direct handshake (bounded by ``timeout``) names
    the real cause. If no server can be reached at all: KafkaUnavailable, in one line.
    """
    try:
        ctx = _tls_context(security)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"TLS: cannot load the CA or client certificate: {exc}") from exc
    reason = "no server"
    for server in bootstrap:
        host, _, port = server.rpartition(":")
        try:
            with (
                socket.create_connection((host, int(port)), timeout=timeout) as raw,
                ctx.wrap_socket(raw, server_hostname=host),
            ):
                return
        except ssl.SSLCertVerificationError as exc:
            reason = exc.verify_message or exc.reason or "certificate verify failed"
            raise ConfigError(
                f"TLS: the broker certificate at {server} is not trusted ({reason}); "
                "set ssl_cafile to the CA that signed it"
            ) from exc
        except ssl.SSLError as exc:
            raise ConfigError(
                f"TLS handshake with {server} failed ({exc.reason or type(exc).__name__}); "
                "is the listener TLS, and are the client certificate and key right?"
            ) from exc
        except TimeoutError:
            reason = f"no TLS answer within {timeout:g} s"
        except ConnectionRefusedError:
            reason = "connection refused"
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
    raise KafkaUnavailable(_unreachable(",".join(bootstrap), reason))


def _translate(exc: Exception, bootstrap: Any) -> KafkaUnavailable:
    servers = ",".join(bootstrap) if isinstance(bootstrap, list) else str(bootstrap)
    if type(exc).__name__ == "KafkaTimeoutError":
        return KafkaUnavailable(
            _unreachable(servers, f"no Kafka answer within {BOOTSTRAP_TIMEOUT_MS / 1000:g} s")
        )
    return KafkaUnavailable(f"no broker answered at {servers}: {type(exc).__name__}")


def producer(settings: Settings, role: str = "producer", **overrides: Any) -> HealingProducer:
    """A tuned, idempotent producer (acks=all) that never creates topics and heals itself.

    When kafka-python's producer reaches a state it never leaves (see
    :func:`broker.kafka.healing.fatal_reason`), a new one replaces it in place.
    """
    args = {
        **_common(settings, role),
        **PRODUCER_DEFAULTS,
        "enable_idempotence": True,
        "allow_auto_create_topics": False,
    }
    args.update(overrides)
    try:
        first = KafkaProducer(**args)
    except KafkaError as exc:
        raise _translate(exc, args["bootstrap_servers"]) from exc
    # Replacements reuse the negotiated API version, so building one never blocks on
    # a bootstrap round trip (it is built while the broker answers with errors).
    again = {**args, "api_version": first.config["api_version"]}
    return HealingProducer(lambda: KafkaProducer(**again), role, producer=first)


def consumer(
    settings: Settings, *topics: str, group_id: str | None, role: str = "consumer", **overrides: Any
) -> KafkaConsumer:
    """A consumer with manual commits (at-least-once), subscribed to ``topics``.

    It never creates a topic and rejoins its group when kafka-python left it
    stranded mid-rebalance (:class:`broker.kafka.healing.HealingConsumer`).

    ``group_id`` is namespaced with the settings' topic prefix, so deployments
    sharing a cluster (and tests sharing a broker) never share a group.
    """
    group = settings.topic_prefix + group_id if group_id else None
    args = {
        **_common(settings, role),
        **CONSUMER_DEFAULTS,
        "group_id": group,
        "allow_auto_create_topics": False,
        "fetch_max_wait_ms": settings.fetch_wait_ms,
        "busy_fetch_wait_ms": settings.fetch_wait_busy_ms,
    }
    args.update(overrides)
    try:
        return HealingConsumer(*topics, **args)
    except KafkaError as exc:
        raise _translate(exc, args["bootstrap_servers"]) from exc


@dataclass(frozen=True)
class Clients:
    """Makes one role's Kafka clients; components take one, so tests hand in their own."""

    settings: Settings
    role: str

    def producer(self) -> HealingProducer:
        """A new producer of this role (the caller closes it)."""
        return producer(self.settings, role=self.role)

    def reader(self) -> KafkaConsumer:
        """A new group-less consumer of this role, for reading at offsets."""
        return consumer(self.settings, group_id=None, role=self.role)


def admin_client(settings: Settings, **overrides: Any) -> KafkaAdminClient:
    """An admin client for provisioning and inspection."""
    args = {**_common(settings, "admin"), "request_timeout_ms": 15_000, **overrides}
    try:
        return KafkaAdminClient(**args)
    except KafkaError as exc:
        raise _translate(exc, args["bootstrap_servers"]) from exc


def close_consumer(consumer: KafkaConsumer, what: str, logger: logging.Logger) -> None:
    """Leave the group without committing; a Kafka error is logged on ``logger``, not raised."""
    try:
        consumer.close(autocommit=False)
    except KafkaError as exc:
        logger.warning("%s consumer close failed: %s", what, type(exc).__name__)


def close_producer(producer: KafkaProducer, what: str, logger: logging.Logger) -> None:
    """Flush and close (10 s each); a Kafka error is logged on ``logger``, not raised."""
    try:
        producer.flush(10)
        producer.close(10)
    except KafkaError as exc:
        logger.warning("%s producer close failed: %s", what, type(exc).__name__)


def _any_listening(bootstrap: str) -> bool:
    """True if a TCP connection to any of ``bootstrap``'s ``host:port`` pairs opens."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), 0.5):
                return True
        except (OSError, ValueError):
            continue
    return False


def wait_for_broker(bootstrap: str, timeout: float = 20.0, **security: Any) -> None:
    """Block until a broker at ``bootstrap`` answers a metadata request, or raise."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not _any_listening(bootstrap):
            # Nothing listens yet: no Kafka client (whose connection errors would be
            # logged at ERROR — the demo's first lines were three of them).
            last = ConnectionRefusedError()
            time.sleep(0.1)
            continue
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap.split(","),
                request_timeout_ms=3000,
                **security,
            )
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except Exception as exc:  # any failure means "not yet"
            last = exc
            time.sleep(0.2)
    reason = type(last).__name__ if last else "timeout"
    raise KafkaUnavailable(
        f"no broker answered a metadata request at {bootstrap} within {timeout:.0f}s ({reason})"
    )
