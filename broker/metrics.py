"""OpenTelemetry metrics: one meter per component, scraped by Prometheus on loopback."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import Counter, Histogram, Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from broker.errors import ConfigError

__all__ = ["DURATION_BUCKETS", "LoopMetrics", "Metrics", "setup_metrics"]

#: Histogram buckets (seconds) for handle and commit durations: 0.5 ms to 10 s.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


@dataclass(frozen=True)
class LoopMetrics:
    """The instruments of one consume loop (its component's meter) and its fixed labels."""

    consumed: Counter
    produced: Counter
    dead_lettered: Counter
    handle_duration: Histogram
    commit_duration: Histogram
    group: str

    def record_consumed(self, topic: str) -> None:
        """One record read from ``topic``."""
        self.consumed.add(1, {"topic": topic, "group": self.group})

    def record_produced(self, topic: str) -> None:
        """One record sent to ``topic`` because of a consumed one."""
        self.produced.add(1, {"topic": topic, "group": self.group})

    def record_dead_lettered(self, topic: str, stage: str, reason: str) -> None:
        """One record of ``topic`` dead-lettered at ``stage`` (``reason``: the error's type)."""
        self.dead_lettered.add(
            1, {"topic": topic, "group": self.group, "stage": stage, "reason": reason}
        )

    def record_batch(self, handle_s: float, commit_s: float) -> None:
        """The handle and commit durations of one batch."""
        self.handle_duration.record(handle_s, {"group": self.group})
        self.commit_duration.record(commit_s, {"group": self.group})


class Metrics:
    """The metrics of one process: a meter per component, optionally a scrape endpoint."""

    def __init__(self, provider: MeterProvider | None, server: Any = None) -> None:
        self.provider = provider
        self.enabled = provider is not None
        self._server = server

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
            handle_duration=meter.create_histogram(
                "messaging.process.duration", "s", "Time to handle one polled batch."
            ),
            commit_duration=meter.create_histogram(
                "referral.commit.duration", "s", "Time to commit one batch's offsets."
            ),
            group=group,
        )

    def shutdown(self) -> None:
        """Stop serving and release the provider."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.provider is not None:
            self.provider.shutdown()
            self.provider = None


def setup_metrics(port: int | None, service: str) -> Metrics:
    """Metrics of process ``service``, served on 127.0.0.1:``port`` (None: off; 0: a free port)."""
    if port is None:
        return Metrics(None)
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError as exc:  # pragma: no cover - both are dependencies
        raise ConfigError("metrics need opentelemetry-exporter-prometheus") from exc
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry)
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": service}),
        views=[
            View(
                instrument_name="*duration",
                aggregation=ExplicitBucketHistogramAggregation(DURATION_BUCKETS),
            )
        ],
    )
    try:
        server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as exc:
        provider.shutdown()
        raise ConfigError(f"metrics port {port}: {exc.strerror or type(exc).__name__}") from None
    return Metrics(provider, server)
