"""The connector runtime: every connector one organisation configured, run in threads.

Sources, sink driver, status feed, outbox republisher, head watcher, retention sweep
(connectors/README.md); each kind is one entry of :data:`KINDS`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from kafka import KafkaProducer
from kafka.errors import KafkaError
from pydantic import BaseModel, Field, ValidationError

from broker.config import Settings
from broker.contracts import Sink, Source, StatusSink
from broker.errors import ConfigError, ReferralError
from broker.kafka import clients
from broker.ledger.checkpoint import HeadWatcher
from broker.ledger.witness import WitnessBook, WitnessParts
from broker.metrics import Metrics
from broker.network import Network, Organisation
from broker.origin.erase_request import EraseRequester, ErasureBook
from broker.origin.outbox import Outbox, RepublishSchedule
from broker.origin.publisher import Publisher
from broker.origin.status_feed import StatusFeed
from broker.origin.status_log import StatusLog
from broker.private import exposure, private_dir
from broker.receiver.erasure import (
    Erased,
    ReceiverEraser,
    RetentionSweep,
    period_keys,
    shredder_for,
)
from broker.receiver.inbox import Inbox
from broker.receiver.inbox_view import missed_deadlines
from broker.receiver.sink_driver import SinkDriver
from broker.security.rules import ReceiverSecurity
from broker.security.shredding import PeriodKeys
from broker.tracing import Tracing, setup_tracing
from broker.validation import validation_problems
from broker.wire.codec import Codec
from connectors.base import ConnectorConfig, resolve_path, secret_from_env
from connectors.drop_folder import DropFolderConfig, DropFolderSource
from connectors.http_intake import HttpIntakeConfig, HttpIntakeSource
from connectors.inbox_folder import InboxFolderConfig, InboxFolderSink
from connectors.known_index import KnownConfig, KnownParts, known_parts
from connectors.sqlite_sink import SqliteCaseConfig, SqliteCaseSink
from connectors.status_sink import StatusFolderConfig, StatusFolderSink, StatusWebhookSink
from connectors.takedown_desk import TakedownConfig, build_takedown, check_takedown
from connectors.webhook import WebhookConfig, WebhookSink

__all__ = [
    "KINDS",
    "ConnectorRuntime",
    "Kind",
    "OutboxConfig",
    "build_sinks",
    "parse_connector_settings",
]

log = logging.getLogger("referral.connectors.runtime")


class OutboxConfig(ConnectorConfig):
    """The reserved ``outbox`` table: when pending referrals are sent again.

    After ``republish_after`` seconds, then twice, four times as long… at most
    ``backoff_max`` apart; at most ``max_per_sweep`` referrals per check.
    """

    republish_after: float = Field(default=300.0, gt=0)
    backoff_max: float = Field(default=3600.0, gt=0)
    max_per_sweep: int = Field(default=500, ge=1)
    check_interval: float = Field(default=1.0, gt=0, le=3600)
    #: An erase request not answered ERASED is sent again this often (seconds).
    erase_resend_after: float = Field(default=3600.0, gt=0)

    def schedule(self) -> RepublishSchedule:
        """The outbox's republishing schedule."""
        return RepublishSchedule(
            republish_after=self.republish_after,
            backoff_max=self.backoff_max,
            max_per_sweep=self.max_per_sweep,
        )


class _Context(Protocol):
    """What a kind's builder reads from the runtime."""

    settings: Settings
    env: Mapping[str, str]
    publisher: Publisher


def _private_folder(rt: _Context, kind: str, config: Any) -> None:
    private_dir(resolve_path(rt.settings, config.path), f"{kind}.path")


def _private_parent(rt: _Context, kind: str, config: Any) -> None:
    private_dir(resolve_path(rt.settings, config.path).parent, f"{kind}.path")


def _token_set(rt: _Context, kind: str, config: Any) -> None:
    secret_from_env(rt.env, config.token_env, "http_intake.token_env")


@dataclass(frozen=True)
class Kind:
    """One connector kind: its role, its settings model, its start-up check and its builder."""

    role: str  # "source", "sink", "status" (the origin's status sinks) or "outbox"
    config: type[ConnectorConfig]
    build: Callable[[_Context, Any], Any] | None = None
    check: Callable[[_Context, str, Any], None] | None = None


#: Connector kind → how it is configured and built; adding a kind is one entry here.
KINDS: dict[str, Kind] = {
    "drop_folder": Kind(
        "source",
        DropFolderConfig,
        lambda rt, c: DropFolderSource(c, rt.settings, rt.publisher),
        _private_folder,
    ),
    "http_intake": Kind(
        "source",
        HttpIntakeConfig,
        lambda rt, c: HttpIntakeSource(c, rt.publisher, rt.env),
        _token_set,
    ),
    "inbox_folder": Kind(
        "sink", InboxFolderConfig, lambda rt, c: InboxFolderSink(c, rt.settings), _private_folder
    ),
    "webhook": Kind("sink", WebhookConfig, lambda rt, c: WebhookSink(c, rt.settings, rt.env)),
    "sqlite": Kind(
        "sink", SqliteCaseConfig, lambda rt, c: SqliteCaseSink(c, rt.settings), _private_parent
    ),
    "status_folder": Kind(
        "status",
        StatusFolderConfig,
        lambda rt, c: StatusFolderSink(c, rt.settings),
        _private_folder,
    ),
    "status_webhook": Kind(
        "status", WebhookConfig, lambda rt, c: StatusWebhookSink(c, rt.settings, rt.env)
    ),
    "takedown": Kind("status", TakedownConfig, build_takedown, check_takedown),
    "outbox": Kind("outbox", OutboxConfig),
    "known": Kind("known", KnownConfig),
}


def _pydantic_lines(prefix: str, exc: ValidationError) -> list[str]:
    return [
        f"{prefix}.{where}: {msg}" if where else f"{prefix}: {msg}"
        for where, msg in validation_problems(exc, unknown_key="unknown setting")
    ]


def parse_connector_settings(org: Organisation) -> tuple[dict[str, BaseModel], list[str]]:
    """Each configured kind's validated settings, and one line per problem."""
    parsed: dict[str, BaseModel] = {}
    problems: list[str] = []
    for kind, raw in org.connectors.items():
        prefix = f"{org.id}: connectors.{kind}"
        if kind not in KINDS:
            problems.append(f"{prefix}: unknown connector kind (known: {', '.join(sorted(KINDS))})")
            continue
        try:
            parsed[kind] = KINDS[kind].config.model_validate(raw)
        except ValidationError as exc:
            problems.extend(_pydantic_lines(prefix, exc))
    return parsed, problems


@dataclass
class _SinkContext:
    settings: Settings
    env: Mapping[str, str]
    publisher: Any = None


def build_sinks(
    settings: Settings, network: Network, org_id: str, env: Mapping[str, str] | None = None
) -> list[Sink]:
    """The referral sinks ``org_id`` configured (not opened), for a one-off command."""
    parsed, problems = parse_connector_settings(network.organisation(org_id))
    if problems:
        raise ConfigError("\n".join(problems))
    ctx = _SinkContext(settings, dict(os.environ) if env is None else env)
    return [
        KINDS[kind].build(ctx, config)  # type: ignore[misc]
        for kind, config in parsed.items()
        if KINDS[kind].role == "sink" and KINDS[kind].build is not None
    ]


@dataclass
class _Built:
    sources: list[Source] = field(default_factory=list)
    sinks: list[Sink] = field(default_factory=list)
    status_sinks: list[StatusSink] = field(default_factory=list)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)


class ConnectorRuntime:
    """Every connector of one organisation, run in threads until :meth:`stop`."""

    def __init__(
        self,
        settings: Settings,
        network: Network,
        org_id: str,
        codec: Codec,
        *,
        env: Mapping[str, str] | None = None,
        producer: KafkaProducer | None = None,
        republish_after: float | None = None,
        tracing: Tracing | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        try:
            self.org = network.organisation(org_id)
        except KeyError:
            raise ConfigError(f"organisation {org_id!r} is not in the network file") from None
        self.settings = settings
        self.network = network
        self.codec = codec
        self.names = settings.topic_names()
        self.env: Mapping[str, str] = dict(os.environ) if env is None else env
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self.topics = network.subscriptions(self.org.id, self.names)
        parsed = self._parsed()
        self.built = self._build(parsed)
        self._own_producer = producer is None
        self.producer = producer or clients.producer(settings, role=f"connectors-{org_id}")
        self.outbox = Outbox.for_org(settings, org_id)
        self.inbox = Inbox.for_org(settings, org_id)
        self.status_log = StatusLog.for_org(settings, org_id)
        #: Spans of this organisation's connectors (exporter from the settings by default).
        self._own_tracing = tracing is None
        self.tracing = tracing or setup_tracing(settings, f"connectors-{org_id}")
        #: Known content (the ``known`` kind, issue 24): tokens of what is sent and received.
        self.known = self._known(parsed)
        #: The process's metrics (the caller serves and shuts them down); None: off.
        self.metrics = metrics
        self._watch_stores()
        self.publisher = Publisher(
            settings,
            network,
            org_id,
            codec,
            self.producer,
            self.outbox,
            tracing=self.tracing,
            known=self.known.hook if self.known is not None else None,
        )
        for kind, config in parsed.items():
            build = KINDS[kind].build
            if KINDS[kind].role == "source" and build is not None:
                self.built.sources.append(build(self, config))
        if republish_after is not None:
            self.built.outbox = OutboxConfig.model_validate(
                {**self.built.outbox.model_dump(), "republish_after": republish_after}
            )
        #: Sends the origin's erase requests again until answered (``erase_resend_after``).
        self.erase_requester = EraseRequester(
            self.producer,
            codec,
            settings.topic_names(),
            self.publisher.security,
            self.publisher.ledger,
            ErasureBook.for_org(settings, org_id),
        )
        self.sink_driver: SinkDriver | None = None
        self.status_feed: StatusFeed | None = None
        self.heads: HeadWatcher | None = None
        self.republished: list[str] = []
        #: The retention rules applied to what this organisation received (if it has rules).
        self.retention: RetentionSweep | None = None
        #: The period-key rotation of a receiving organisation with keys (key_period_days).
        self.period_keys: PeriodKeys | None = None
        self.erased: list[Erased] = []
        #: Child referrals published for moved items (``Publisher.reroute_due``).
        self.rerouted: list[str] = []
        self.errors: list[str] = []

    def _parsed(self) -> dict[str, BaseModel]:
        """The validated connector settings; one ConfigError listing every problem."""
        parsed, problems = parse_connector_settings(self.org)
        sink_kinds = [k for k in parsed if KINDS[k].role == "sink"]
        if sink_kinds and not self.topics:
            problems.append(
                f"{self.org.id}: connectors.{sink_kinds[0]}: the organisation receives no "
                "jurisdiction in [routing], so its sinks would never deliver"
            )
        if problems:
            raise ConfigError("\n".join(problems))
        return parsed

    def _known(self, parsed: dict[str, BaseModel]) -> KnownParts | None:
        """The known-content parts (index syncer, sink, case-status sink) if the kind is on."""
        if "known" not in parsed:
            return None
        known = known_parts(
            self.settings, self.network, self.org.id, self.producer, parsed["known"],
            bool(self.topics),
        )  # fmt: skip
        self.built.sources.append(known.syncer)
        if known.sink is not None:
            self.built.sinks.append(known.sink)
        case_status = known.status_sink(self.outbox, self.status_log)
        if case_status is not None:
            self.built.status_sinks.append(case_status)
        return known

    def _watch_stores(self) -> None:
        """Export the outbox (pending, overdue receipts) and the inbox's missed deadlines."""
        if self.metrics is None:
            return
        deadlines, org = self.network.deadlines, self.org.id
        self.metrics.watch_outbox(
            org, self.outbox, deadlines.receipt_hours * 3600, deadlines.urgent_receipt_hours * 3600
        )
        if self.topics:  # it receives: its inbox has answers due
            self.metrics.watch_deadlines(
                org,
                lambda: missed_deadlines(self.inbox.received(), deadlines, datetime.now(UTC)),
            )

    def _build(self, parsed: dict[str, BaseModel]) -> _Built:
        built = _Built()
        problems: list[str] = []
        for kind, config in parsed.items():
            try:
                self._add(built, kind, config)
            except ConfigError as exc:
                problems.extend(
                    f"{self.org.id}: connectors.{line}" for line in str(exc).splitlines()
                )
        if problems:
            raise ConfigError("\n".join(problems))
        return built

    def _add(self, built: _Built, kind: str, config: Any) -> None:
        """Check a kind's settings and build it if it is a sink (sources are built later)."""
        spec = KINDS[kind]
        if spec.check is not None:
            spec.check(self, kind, config)
        if spec.role == "outbox":
            built.outbox = config
        elif spec.build is not None and spec.role in ("sink", "status"):
            made = spec.build(self, config)
            (built.sinks if spec.role == "sink" else built.status_sinks).append(made)

    # -- accessors -------------------------------------------------------------------------------

    @property
    def sources(self) -> list[Source]:
        """The configured sources."""
        return self.built.sources

    def source(self, kind: str) -> Source:
        """The configured source of ``kind`` (KeyError if none)."""
        for src in self.built.sources:
            if src.kind == kind:
                return src
        raise KeyError(kind)

    @property
    def http_port(self) -> int | None:
        """The bound port of the HTTP intake, once started."""
        try:
            src = self.source("http_intake")
        except KeyError:
            return None
        return src.port if isinstance(src, HttpIntakeSource) else None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> ConnectorRuntime:
        """Open every connector and start its thread; returns once all are running."""
        if self._started:
            return self
        self._started = True
        exposed = exposure(self.settings.state_dir)
        if exposed is not None:
            log.warning("%s: state directory %s", self.org.id, exposed)
        try:
            for src in self.built.sources:
                src.open()
            if self.built.sinks:
                self.sink_driver = SinkDriver(
                    self.settings,
                    self.org.id,
                    self.codec,
                    self.topics,
                    self.built.sinks,
                    self.inbox,
                    producer=self.producer,
                    tracing=self.tracing,
                    metrics=self.metrics,
                    security=ReceiverSecurity.load(self.settings, self.network, self.org.id),
                )
                self.sink_driver.open()
            self.status_feed = StatusFeed(
                self.settings,
                self.org.id,
                self.codec,
                self.built.status_sinks,
                self.outbox,
                self.status_log,
                producer=self.producer,
                tracing=self.tracing,
                metrics=self.metrics,
                security=self.publisher.security,
                network=self.network,
            )
            self.status_feed.open()
            book = WitnessBook(self.settings.org_dir(self.org.id) / "heads.sqlite3", self.org.id)
            witness = WitnessParts(
                self.settings, self.publisher.security.live_keys, self.producer, self.codec, book
            )
            self.heads = HeadWatcher(
                self.settings, self.org.id, self.publisher.security.live_trust, witness=witness
            ).start()
        except BaseException:
            self.stop()
            raise
        for src in self.built.sources:
            self._spawn(f"source-{src.kind}", self._source_loop(src))
        if self.sink_driver is not None:
            self._spawn("sink-driver", self._driver_loop(self.sink_driver.step))
        self._spawn("status-driver", self._driver_loop(self.status_feed.step))
        self._spawn("republisher", self._republish_loop)
        self._start_retention()
        log.info(
            "%s: %d source(s), %d sink(s), %d status sink(s) running",
            self.org.id,
            len(self.built.sources),
            len(self.built.sinks),
            len(self.built.status_sinks),
        )
        return self

    def _start_retention(self) -> None:
        """The retention sweep (with rules) and the period-key rotation (with keys) of a
        receiving organisation."""
        if not self.built.sinks or self.sink_driver is None:
            return
        driver = self.sink_driver
        if self.network.retention.rules:
            shredder = shredder_for(self.settings, self.network, self.org.id)
            eraser = ReceiverEraser(
                self.settings, self.org.id, self.built.sinks, self.inbox, shredder,
                driver.keys_changed,
            )  # fmt: skip
            self.retention = RetentionSweep(eraser, self.network.retention)
            self._spawn("retention", self._retention_loop)
        if self.network.retention.key_period_days > 0:
            self.period_keys = period_keys(self.settings, self.network, self.org.id)
            if self.period_keys is not None:
                self._spawn("period-keys", self._period_loop)

    def _period_loop(self) -> None:
        every = self.network.retention.check_hours * 3600
        periods = self.period_keys
        assert periods is not None
        driver = self.sink_driver

        def tick() -> None:
            if periods.tick().expired and driver is not None:
                driver.keys_changed()

        while True:
            self._guarded("period keys", tick)
            if self._stop.wait(every):
                return

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=f"{self.org.id}-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _guarded(self, what: str, step: Callable[[], Any]) -> bool:
        """Run one step; log and remember a failure instead of killing the thread."""
        try:
            step()
            return True
        except (ReferralError, KafkaError, OSError) as exc:
            line = f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.warning("%s %s", self.org.id, line)
            self.errors.append(line)
            return False

    def _source_loop(self, src: Source) -> Callable[[], None]:
        def loop() -> None:
            while not self._stop.is_set():
                self._guarded(f"source {src.kind}", src.poll)
                self._stop.wait(src.poll_interval)

        return loop

    def _driver_loop(self, step: Callable[[threading.Event], int]) -> Callable[[], None]:
        def loop() -> None:
            while not self._stop.is_set():
                if not self._guarded("driver", lambda: step(self._stop)):
                    self._stop.wait(1.0)

        return loop

    def _republish_loop(self) -> None:
        cfg = self.built.outbox
        schedule = cfg.schedule()
        while not self._stop.wait(cfg.check_interval):

            def step() -> None:
                again = self.publisher.republish_due(schedule)
                if again and self.metrics is not None:
                    self.metrics.record_republished(self.org.id, self.outbox.waiting_for(again))
                self.republished.extend(again)
                self.rerouted.extend(self.publisher.reroute_due())
                self.erase_requester.resend_due(cfg.erase_resend_after)

            self._guarded("outbox republish", step)

    def _retention_loop(self) -> None:
        every = self.network.retention.check_hours * 3600
        sweep = self.retention
        assert sweep is not None
        while True:
            self._guarded("retention", lambda: self.erased.extend(sweep.sweep()))
            if self._stop.wait(every):
                return

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every thread, then close connectors, drivers and stores (idempotent)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        for shredder in (
            self.period_keys.shredder if self.period_keys is not None else None,
            self.retention.eraser.shredder if self.retention is not None else None,
        ):
            if shredder is not None:
                shredder.close()
        for src in self.built.sources:
            try:
                src.flush()
            finally:
                src.close()
        for driver in (self.sink_driver, self.status_feed):
            if driver is not None:
                driver.close()
        self.sink_driver = self.status_feed = None
        if self.heads is not None:
            self.heads.stop()
            self.heads = None
        if self._own_producer:
            clients.close_producer(self.producer, self.org.id, log)
        self.publisher.close()
        self.erase_requester.book.close()
        if self.known is not None:
            self.known.close()
            self.known = None
        self.outbox.close()
        self.inbox.close()
        self.status_log.close()
        if self._own_tracing:
            self.tracing.shutdown()
            self._own_tracing = False

    def run(self, stop: threading.Event) -> None:
        """Start, wait for ``stop`` (SIGTERM/Ctrl-C in the CLI), then shut down cleanly."""
        self.start()
        try:
            while not stop.wait(0.5):
                pass
        finally:
            self.stop()

    def __enter__(self) -> ConnectorRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
