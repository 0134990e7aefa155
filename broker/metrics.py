"""OpenTelemetry metrics: one meter per component, scraped on loopback or pushed over OTLP."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from broker.config import Settings
from broker.errors import ConfigError
from broker.kafka.reader import EndProbe
from broker.tracing import otlp_endpoint_set, otlp_url, resource_attributes

__all__ = [
    "DURATION_BUCKETS",
    "SECURITY_STAGES",
    "LoopMetrics",
    "Metrics",
    "WatchedLoop",
    "metric_exporters_of",
    "setup_metrics",
]

#: Histogram buckets (seconds) for handle, ack-wait and commit durations: 0.5 ms to 10 s.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)

#: Dead-letter stages that are signature or seal failures (``referral.security.failures``).
SECURITY_STAGES = frozenset({"VERIFY", "SIGNATURE_WINDOW", "STATUS_VERIFY", "UNSEAL"})


class WatchedLoop(Protocol):
    """What the process-wide gauges read of a consume loop (``broker.kafka.loop``)."""

    group: str
    producer: Any

    def lag_positions(self) -> dict[Any, tuple[int, int]]:
        """Per partition assigned: (its end as the loop knows it, its committed start)."""
        ...

    @property
    def rejoins(self) -> int:
        """Times its consumers were made to rejoin their group (all of them)."""
        ...


@dataclass(frozen=True)
class LoopMetrics:
    """The instruments of one consume loop (its component's meter) and its fixed labels."""

    consumed: Counter
    produced: Counter
    dead_lettered: Counter
    security_failures: Counter
    handle_duration: Histogram
    ack_wait_duration: Histogram
    commit_duration: Histogram
    group: str
    #: Registers the loop with the process's lag and healing gauges.
    watch: Callable[[WatchedLoop], None]
    #: Label sets made once and reused (the SDK hashes them at each add, the loop makes none).
    _labels: dict[str, dict[str, str]] = field(default_factory=dict, compare=False, repr=False)
    _group_labels: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def _of(self, topic: str) -> dict[str, str]:
        labels = self._labels.get(topic)
        if labels is None:
            labels = self._labels[topic] = {"topic": topic, "group": self.group}
        return labels

    def record_consumed(self, topic: str, n: int = 1) -> None:
        """``n`` records read from ``topic``."""
        self.consumed.add(n, self._of(topic))

    def record_produced(self, topic: str, n: int = 1) -> None:
        """``n`` records sent to ``topic`` because of consumed ones."""
        self.produced.add(n, self._of(topic))

    def record_counts(self, consumed: dict[str, int], produced: dict[str, int]) -> None:
        """One batch's records read and sent, by topic (one add per topic, not per record)."""
        for topic, n in consumed.items():
            self.consumed.add(n, self._of(topic))
        for topic, n in produced.items():
            self.produced.add(n, self._of(topic))

    def record_dead_lettered(self, topic: str, stage: str, reason: str) -> None:
        """One record of ``topic`` dead-lettered at ``stage`` (``reason``: the error's type)."""
        self.dead_lettered.add(
            1, {"topic": topic, "group": self.group, "stage": stage, "reason": reason}
        )
        if stage in SECURITY_STAGES:
            self.security_failures.add(1, {"topic": topic, "group": self.group, "kind": stage})

    def record_batch(self, handle_s: float, ack_wait_s: float, commit_s: float) -> None:
        """The handle, ack-wait and commit durations of one batch."""
        labels = self._group_labels
        if not labels:
            labels["group"] = self.group
        self.handle_duration.record(handle_s, labels)
        self.ack_wait_duration.record(ack_wait_s, labels)
        self.commit_duration.record(commit_s, labels)


class OutboxCounts(Protocol):
    """What the origin gauges read of an outbox (``broker.origin.outbox.Outbox``)."""

    def waiting_by_destination(
        self, receipt_s: float, urgent_receipt_s: float
    ) -> dict[str, tuple[int, int]]:
        """Destination → (referrals it has not answered, those past the receipt deadline)."""
        ...


class Metrics:
    """The metrics of one process: a meter per component, optionally a scrape endpoint."""

    def __init__(self, provider: MeterProvider | None, server: Any = None) -> None:
        self.provider = provider
        self.enabled = provider is not None
        self._server = server
        self._lock = threading.Lock()
        self._loops: list[WatchedLoop] = []
        self._outboxes: list[tuple[str, OutboxCounts, float, float]] = []
        self._missed: list[tuple[str, Callable[[], dict[str, int]]]] = []
        self._republished: Counter | None = None
        self._destinations: dict[str, set[str]] = {}
        self._probe: EndProbe | None = None
        if provider is not None:
            self._observe(provider)

    @property
    def port(self) -> int | None:
        """The port ``/metrics`` is served on (None: not served)."""
        return None if self._server is None else int(self._server.server_address[1])

    def meter(self, component: str) -> Meter | None:
        """The meter of ``component`` (None when metrics are off)."""
        return None if self.provider is None else self.provider.get_meter(f"referral.{component}")

    def loop(self, component: str, group: str) -> LoopMetrics | None:
        """The consume-loop instruments of ``component`` in consumer ``group``."""
        meter = self.meter(component)
        if meter is None:
            return None
        return LoopMetrics(
            consumed=meter.create_counter(
                "messaging.client.consumed.messages", "{message}", "Records read, by topic."
            ),
            produced=meter.create_counter(
                "messaging.client.sent.messages", "{message}", "Records sent, by topic."
            ),
            dead_lettered=meter.create_counter(
                "referral.dead_lettered", "{message}", "Records dead-lettered, by stage and reason."
            ),
            security_failures=meter.create_counter(
                "referral.security.failures",
                "{message}",
                "Signature and seal failures (dead-lettered), by kind.",
            ),
            handle_duration=meter.create_histogram(
                "messaging.process.duration", "s", "Time to handle one polled batch."
            ),
            ack_wait_duration=meter.create_histogram(
                "referral.ack_wait.duration", "s", "Time waiting for one batch's sends to be acked."
            ),
            commit_duration=meter.create_histogram(
                "referral.commit.duration", "s", "Time to commit one batch's offsets."
            ),
            group=group,
            watch=self._watch,
        )

    def _watch(self, loop: WatchedLoop) -> None:
        with self._lock:
            self._loops.append(loop)

    def probe_ends_with(self, factory: Callable[[], Any]) -> None:
        """Ask partition ends of a fetch at each scrape, with a consumer ``factory`` makes
        (group-less; the first factory given is kept)."""
        if self.enabled and self._probe is None:
            self._probe = EndProbe(factory, timeout=0.5)

    def watch_outbox(
        self, organisation: str, outbox: OutboxCounts, receipt_s: float, urgent_receipt_s: float
    ) -> None:
        """Export ``organisation``'s outbox: pending and overdue receipts per destination."""
        if self.enabled:
            with self._lock:
                self._outboxes.append((organisation, outbox, receipt_s, urgent_receipt_s))

    def watch_deadlines(self, organisation: str, missed: Callable[[], dict[str, int]]) -> None:
        """Export ``organisation``'s missed deadlines (``missed()``: deadline name → count)."""
        if self.enabled:
            with self._lock:
                self._missed.append((organisation, missed))

    def record_republished(self, organisation: str, destinations: Iterable[str]) -> None:
        """One republication of a referral, counted for each destination still waiting."""
        if self._republished is None:
            return
        for destination in destinations:
            self._republished.add(1, {"organisation": organisation, "destination": destination})

    def _observe(self, provider: MeterProvider) -> None:
        """The process-wide gauges, read at each scrape from what was watched."""
        kafka = provider.get_meter("referral.kafka")
        kafka.create_observable_gauge(
            "referral.consumer.lag",
            [self._lag],
            "{message}",
            "Records read or readable but not committed, per group and partition.",
        )
        kafka.create_observable_counter(
            "referral.producer.replacements",
            [self._replacements],
            "{replacement}",
            "Times a producer was found unusable and replaced (healing).",
        )
        kafka.create_observable_counter(
            "referral.consumer.rejoins",
            [self._rejoins],
            "{rejoin}",
            "Times a consumer was made to rejoin its group (healing).",
        )
        origin = provider.get_meter("referral.origin")
        origin.create_observable_gauge(
            "referral.outbox.pending",
            [self._pending],
            "{referral}",
            "Referrals a destination has not answered yet.",
        )
        origin.create_observable_gauge(
            "referral.receipts.overdue",
            [self._overdue],
            "{referral}",
            "Referrals whose destination's RECEIVED is past the network's receipt deadline.",
        )
        self._republished = origin.create_counter(
            "referral.outbox.republished",
            "{referral}",
            "Referrals sent again because a destination had not answered.",
        )
        receiver = provider.get_meter("referral.receiver")
        receiver.create_observable_gauge(
            "referral.deadlines.missed",
            [self._deadlines],
            "{referral}",
            "Referrals past a deadline of the network without their answer.",
        )

    def _watched(self) -> list[WatchedLoop]:
        with self._lock:
            return list(self._loops)

    def _lag(self, _options: CallbackOptions) -> Iterator[Observation]:
        loops = [(loop, loop.lag_positions()) for loop in self._watched()]
        near: dict[Any, int] = {}
        for _, known in loops:
            for tp, (end, _start) in known.items():
                near[tp] = max(near.get(tp, 0), end)
        # One fetch for every partition of every loop of the process.
        ends = self._probe(near) if self._probe is not None and near else {}
        for loop, known in loops:
            for tp, (end, start) in sorted(known.items()):
                lag = max(ends.get(tp, end), end) - start
                labels = {"group": loop.group, "topic": tp.topic, "partition": str(tp.partition)}
                yield Observation(lag, labels)

    def _replacements(self, _options: CallbackOptions) -> Iterator[Observation]:
        # Loops of one process may share a producer: each producer is counted once.
        producers = {id(loop.producer): loop.producer for loop in self._watched()}
        total = sum(int(getattr(p, "replacements", 0)) for p in producers.values())
        yield Observation(total)

    def _rejoins(self, _options: CallbackOptions) -> Iterator[Observation]:
        for loop in self._watched():
            yield Observation(loop.rejoins, {"group": loop.group})

    def _outbox_counts(self) -> Iterator[tuple[str, str, int, int]]:
        with self._lock:
            outboxes = list(self._outboxes)
        for organisation, outbox, receipt_s, urgent_s in outboxes:
            counts = outbox.waiting_by_destination(receipt_s, urgent_s)
            # A destination that has answered everything stays a series, at 0.
            seen = self._destinations.setdefault(organisation, set())
            seen.update(counts)
            for destination in sorted(seen):
                pending, overdue = counts.get(destination, (0, 0))
                yield organisation, destination, pending, overdue

    def _pending(self, _options: CallbackOptions) -> Iterator[Observation]:
        for organisation, destination, pending, _ in self._outbox_counts():
            yield Observation(pending, {"organisation": organisation, "destination": destination})

    def _overdue(self, _options: CallbackOptions) -> Iterator[Observation]:
        for organisation, destination, _, overdue in self._outbox_counts():
            yield Observation(overdue, {"organisation": organisation, "destination": destination})

    def _deadlines(self, _options: CallbackOptions) -> Iterator[Observation]:
        with self._lock:
            missed = list(self._missed)
        for organisation, counts in missed:
            for deadline, n in sorted(counts().items()):
                yield Observation(n, {"organisation": organisation, "deadline": deadline})

    def shutdown(self) -> None:
        """Stop serving and release the provider (and the lag's consumer)."""
        if self._probe is not None:
            self._probe.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.provider is not None:
            self.provider.shutdown()
            self.provider = None


#: The Prometheus exporter's port when ``OTEL_METRICS_EXPORTER`` names it and no port is given.
DEFAULT_PROMETHEUS_PORT = 9464
_METRIC_EXPORTERS = frozenset({"otlp", "prometheus", "none"})


def metric_exporters_of(settings: Settings | None, port: int | None) -> tuple[bool, int | None]:
    """(OTLP on, the scrape port or None) as the settings and the port given choose.

    ``OTEL_METRICS_EXPORTER`` is a comma list of ``otlp``, ``prometheus`` and ``none``;
    unset, OTLP is on when an OTLP endpoint is set. A port given (``--metrics-port``,
    ``REFERRAL_METRICS_PORT``) always serves; ``prometheus`` alone serves on 9464.
    """
    if settings is None:
        return False, port
    listed = (settings.otel_metrics_exporter or "").lower().split(",")
    chosen = {name.strip() for name in listed if name.strip()}
    unknown = sorted(chosen - _METRIC_EXPORTERS)
    if unknown:
        raise ConfigError(
            f"OTEL_METRICS_EXPORTER={unknown[0][:32]!r} is not supported (otlp, prometheus or none)"
        )
    if not chosen:
        return otlp_endpoint_set(settings, "metrics"), port
    if port is None and "prometheus" in chosen:
        port = DEFAULT_PROMETHEUS_PORT
    return "otlp" in chosen, port


def _otlp_reader(settings: Settings) -> Any:
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    except ImportError as exc:  # pragma: no cover - a dependency
        raise ConfigError("OTLP metrics need opentelemetry-exporter-otlp-proto-http") from exc
    exporter = OTLPMetricExporter(endpoint=otlp_url(settings, "metrics"))
    return PeriodicExportingMetricReader(
        exporter,
        export_interval_millis=settings.otel_metric_export_interval,
        export_timeout_millis=settings.otel_metric_export_timeout,
    )


def setup_metrics(port: int | None, service: str, settings: Settings | None = None) -> Metrics:
    """Metrics of process ``service``: served on 127.0.0.1:``port`` (0: a free port) and, as
    ``settings`` choose (:func:`metric_exporters_of`), pushed over OTLP/HTTP; neither: off."""
    otlp, port = metric_exporters_of(settings, port)
    if port is None and not otlp:
        return Metrics(None)
    readers: list[Any] = [_otlp_reader(settings)] if otlp and settings is not None else []
    registry = None
    if port is not None:
        try:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import CollectorRegistry
        except ImportError as exc:  # pragma: no cover - both are dependencies
            raise ConfigError("metrics need opentelemetry-exporter-prometheus") from exc
        registry = CollectorRegistry()
        readers.append(PrometheusMetricReader(registry=registry))
    attributes = (
        {"service.name": service} if settings is None else resource_attributes(settings, service)
    )
    provider = MeterProvider(
        metric_readers=readers,
        resource=Resource.create(attributes),
        views=[
            View(
                instrument_name="*duration",
                aggregation=ExplicitBucketHistogramAggregation(DURATION_BUCKETS),
            )
        ],
    )
    if registry is None:
        return Metrics(provider)
    return Metrics(provider, _serve(provider, port or 0, registry))


def _serve(provider: MeterProvider, port: int, registry: Any) -> Any:
    from prometheus_client import start_http_server

    try:
        server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as exc:
        provider.shutdown()
        raise ConfigError(f"metrics port {port}: {exc.strerror or type(exc).__name__}") from None
    return server
