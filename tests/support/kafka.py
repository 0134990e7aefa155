"""Helpers for integration tests: publish raw records, read topics back, run a router."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from broker.config import Settings
from broker.kafka import clients
from broker.kafka.loop import LoopStats
from broker.kafka.provision import provision
from broker.network import Network
from broker.routing.router import Router
from broker.wire.codec import Codec
from broker.wire.topics import header as record_header
from connectors.runtime import ConnectorRuntime

ROOT = Path(__file__).resolve().parents[2]


def provision_network(settings: Settings, network: Network) -> None:
    """Create every topic of ``network`` in the settings' namespace."""
    admin = clients.admin_client(settings)
    try:
        provision(admin, network, settings.topic_names())
    finally:
        admin.close()


def publish(
    settings: Settings,
    topic: str,
    values: Iterable[tuple[bytes | None, bytes]],
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    """Publish ``(key, value)`` pairs to ``topic`` and wait for every ack."""
    producer = clients.producer(settings, role="test")
    try:
        futures = [
            producer.send(topic, key=k, value=v, headers=list(headers or [])) for k, v in values
        ]
        producer.flush()
        for f in futures:
            f.get(timeout=10)
    finally:
        producer.close()


def read_topic(
    settings: Settings, topic: str, *, at_least: int = 0, timeout: float = 20.0, idle: float = 1.0
) -> list[Any]:
    """Every record of ``topic`` from the beginning (no group), waiting for ``at_least``.

    Stops when ``at_least`` records are in hand and no more arrived for ``idle`` seconds,
    or at ``timeout``.
    """
    consumer: KafkaConsumer = clients.consumer(settings, group_id=None, role="test-reader")
    try:
        parts = None
        deadline = time.monotonic() + timeout
        while parts is None and time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic)
            if parts is None:
                time.sleep(0.1)
        if not parts:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200)
            for records in batch.values():
                out.extend(records)
            if batch:
                last_new = time.monotonic()
            elif len(out) >= at_least and time.monotonic() - last_new >= idle:
                break
        return out
    finally:
        consumer.close()


def header(record: Any, name: str) -> str | None:
    """A header of a consumed record as text (None if absent)."""
    return record_header(record.headers, name)


@dataclass
class RouterThread:
    """A Router running in a thread until :meth:`stop`."""

    router: Router
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    stats: LoopStats | None = None
    error: str | None = None

    def start(self) -> RouterThread:
        def run() -> None:
            try:
                self.stats = self.router.run(self.stop_event)
            except BaseException:
                self.error = traceback.format_exc()
                raise

        self.thread = threading.Thread(target=run, name="router", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> LoopStats:
        self.stop_event.set()
        assert self.thread is not None
        self.thread.join(30)
        assert not self.thread.is_alive(), "router did not stop"
        assert self.error is None, self.error
        assert self.stats is not None
        return self.stats


def start_router(settings: Settings, network: Network, codec: Codec, **kw: Any) -> RouterThread:
    """Start a router thread on ``settings``' namespace."""
    return RouterThread(Router(settings, network, codec, **kw)).start()


def start_network(
    stack: ExitStack,
    settings: Settings,
    network: Network,
    codec: Codec,
    orgs: Iterable[str],
    **runtime: Any,
) -> dict[str, ConnectorRuntime]:
    """A router and a started connector runtime per organisation, all stopped with ``stack``."""
    stack.callback(start_router(settings, network, codec).stop)
    started: dict[str, ConnectorRuntime] = {}
    for org in orgs:
        rt = ConnectorRuntime(settings, network, org, codec, **runtime)
        stack.callback(rt.stop)
        started[org] = rt.start()
    return started


def cli_env(settings: Settings) -> dict[str, str]:
    """Environment for a ``referral`` subprocess on the same broker and namespace."""
    env = dict(os.environ)
    env.update(
        {
            "REFERRAL_BOOTSTRAP_SERVERS": str(settings.bootstrap_servers),
            "REFERRAL_TOPIC_PREFIX": settings.topic_prefix,
            "REFERRAL_NETWORK_FILE": str(settings.network_file),
            "REFERRAL_STATE_DIR": str(settings.state_dir),
        }
    )
    return env


def spawn_cli(settings: Settings, *args: str, log: Path) -> subprocess.Popen[bytes]:
    """Run ``referral ARGS`` as a real process (its output goes to ``log``)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", *args],
            env=cli_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
