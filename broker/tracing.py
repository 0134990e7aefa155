"""OpenTelemetry tracing: one trace per referral across every hop."""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

from google.protobuf.json_format import MessageToDict
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from broker.config import Settings
from broker.errors import ConfigError
from broker.wire.topics import HeaderList, Headers

__all__ = [
    "ALLOWED_ATTRIBUTES",
    "JsonLinesSpanExporter",
    "Tracing",
    "extract",
    "inject",
    "otlp_endpoint_set",
    "otlp_json",
    "otlp_traces_url",
    "otlp_url",
    "resource_attributes",
    "safe_attributes",
    "setup_tracing",
    "trace_exporter_of",
    "trace_id_of",
]

log = logging.getLogger("referral.tracing")

#: The OTLP signals the project exports.
Signal = Literal["traces", "metrics"]


#: The only span attributes ever recorded: ids, organisations, jurisdictions, topics, positions.
ALLOWED_ATTRIBUTES = frozenset(
    {
        "messaging.system",
        "messaging.operation.type",
        "messaging.operation.name",
        "messaging.destination.name",
        "messaging.destination.partition.id",
        "messaging.kafka.offset",
        "messaging.kafka.message.key",
        "messaging.consumer.group.name",
        "messaging.batch.message_count",
        "referral.id",
        "referral.case_id",
        "referral.origin",
        "referral.org",
        "referral.jurisdictions",
        "referral.route.reason",
        "referral.route.orgs",
        "referral.status",
        "referral.outcome",
        "error.type",
    }
)

_propagator = TraceContextTextMapPropagator()


class _HeaderGetter(Getter[Sequence[tuple[str, bytes]]]):
    def get(self, carrier: Sequence[tuple[str, bytes]], key: str) -> list[str] | None:
        for k, v in carrier:
            if k == key:
                return [v.decode("ascii", "replace")]
        return None

    def keys(self, carrier: Sequence[tuple[str, bytes]]) -> list[str]:
        return [k for k, _ in carrier]


class _HeaderSetter(Setter[HeaderList]):
    def set(self, carrier: HeaderList, key: str, value: str) -> None:
        carrier[:] = [(k, v) for k, v in carrier if k != key]
        carrier.append((key, value.encode("ascii")))


_getter = _HeaderGetter()
_setter = _HeaderSetter()


def extract(headers: Sequence[tuple[str, bytes]] | None) -> otel_context.Context:
    """The trace context carried in Kafka ``headers`` (empty context if none)."""
    return _propagator.extract(list(headers or ()), getter=_getter)


def inject(headers: HeaderList, ctx: otel_context.Context | None = None) -> HeaderList:
    """Write the current (or ``ctx``'s) span as ``traceparent`` into ``headers``."""
    _propagator.inject(headers, context=ctx, setter=_setter)
    return headers


def safe_attributes(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Only the allow-listed, non-empty attributes (never payload content)."""
    return {k: v for k, v in attrs.items() if k in ALLOWED_ATTRIBUTES and v not in (None, "")}


#: Span fields the OTLP JSON encoding writes as hex strings, not protobuf JSON's base64.
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(message: dict[str, Any]) -> None:
    for name in _ID_FIELDS:
        if name in message:
            message[name] = base64.b64decode(message[name]).hex()


def otlp_json(spans: Sequence[ReadableSpan]) -> str:
    """``spans`` as one OTLP JSON ``ExportTraceServiceRequest`` (one line).

    The protobuf JSON mapping with OTLP's rules: camelCase names, trace and span ids
    as hex strings, enums as integers, 64-bit integers (the times) as strings.
    """
    request = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    for resource_spans in request.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                _hex_ids(span)
                for link in span.get("links", ()):
                    _hex_ids(link)
    return json.dumps(request, separators=(",", ":"), sort_keys=True)


class JsonLinesSpanExporter(SpanExporter):
    """Appends each export as one OTLP JSON ``ExportTraceServiceRequest`` per line to a file.

    The OpenTelemetry collector's file receiver (``otlpjsonfile``) reads the file as it is.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write the spans; never raises."""
        if not spans:
            return SpanExportResult.SUCCESS
        line = otlp_json(spans)
        try:
            with self._lock, self.path.open("a", encoding="utf-8") as out:
                out.write(line + "\n")
        except OSError as exc:
            # The SDK's span processors drop a FAILURE silently: say it once per batch.
            log.warning(
                "span export to %s failed: %s", self.path, exc.strerror or type(exc).__name__
            )
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""


def _fresh_context() -> otel_context.Context:
    """A new, non-recording root context: components that do record join its trace."""
    span_context = SpanContext(
        trace_id=random.getrandbits(128) or 1,
        span_id=random.getrandbits(64) or 1,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context))


class Tracing:
    """Spans for one component (``service``), recording only when an exporter is set."""

    def __init__(self, provider: TracerProvider | None, service: str) -> None:
        self.provider = provider
        self.service = service
        self.enabled = provider is not None
        self._tracer = (provider or trace.NoOpTracerProvider()).get_tracer("referral-broker")

    @contextmanager
    def send(
        self,
        topic: str,
        headers: HeaderList,
        parent: otel_context.Context | None = None,
        links: Sequence[Link] = (),
        attributes: Mapping[str, Any] | None = None,
    ) -> Iterator[Span | None]:
        """A ``send <topic>`` PRODUCER span whose context is injected into ``headers``.

        Disabled: the parent's context is injected unchanged (or, with no parent, a
        fresh trace id), so one referral stays one trace through components that do
        not record.
        """
        if not self.enabled:
            inject(headers, parent if parent is not None else _fresh_context())
            yield None
            return
        with self._tracer.start_as_current_span(
            f"send {topic}",
            context=parent,
            kind=SpanKind.PRODUCER,
            links=list(links),
            attributes=safe_attributes(
                {
                    "messaging.system": "kafka",
                    "messaging.operation.type": "send",
                    "messaging.operation.name": "send",
                    "messaging.destination.name": topic,
                    **(attributes or {}),
                }
            ),
        ) as span:
            inject(headers)
            yield span

    @contextmanager
    def process(
        self, record: Any, group: str | None, attributes: Mapping[str, Any] | None = None
    ) -> Iterator[otel_context.Context]:
        """A ``process <topic>`` CONSUMER span, child of the record's trace context.

        Yields the context to parent further spans on (the incoming one when disabled).
        """
        incoming = extract(record.headers)
        if not self.enabled:
            yield incoming
            return
        with self._tracer.start_as_current_span(
            f"process {record.topic}",
            context=incoming,
            kind=SpanKind.CONSUMER,
            attributes=safe_attributes(
                {
                    "messaging.system": "kafka",
                    "messaging.operation.type": "process",
                    "messaging.operation.name": "process",
                    "messaging.destination.name": record.topic,
                    "messaging.destination.partition.id": str(record.partition),
                    "messaging.kafka.offset": record.offset,
                    "messaging.consumer.group.name": group,
                    **(attributes or {}),
                }
            ),
        ):
            yield otel_context.get_current()

    def shutdown(self) -> None:
        """Flush and stop the exporter."""
        if self.provider is not None:
            self.provider.force_flush()
            self.provider.shutdown()


#: Where OTLP goes when it is chosen and no endpoint is set (the specification's default).
DEFAULT_OTLP_ENDPOINT = "http://localhost:4318"
#: The path the specification appends to a base URL, per signal.
SIGNAL_PATHS: dict[Signal, str] = {"traces": "/v1/traces", "metrics": "/v1/metrics"}


def _signal_specific(settings: Settings, signal: Signal) -> str | None:
    if signal == "traces":
        return settings.otel_exporter_otlp_traces_endpoint
    return settings.otel_exporter_otlp_metrics_endpoint


def otlp_url(settings: Settings, signal: Signal) -> str:
    """The URL OTLP/HTTP ``signal`` (traces or metrics) is posted to.

    The project's ``otlp_endpoint`` (``REFERRAL_OTLP_ENDPOINT``) wins when set: a base
    URL gets the signal's path (``/v1/traces``, ``/v1/metrics``) appended; one already
    ending in a signal's path (the earlier, traces-only form) has it replaced. Otherwise
    the signal-specific ``OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`` is used as it is, then
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` as a base URL, then ``http://localhost:4318``.
    """
    path = SIGNAL_PATHS[signal]
    own = settings.otlp_endpoint
    if own:
        base = own.rstrip("/")
        for known in SIGNAL_PATHS.values():
            base = base.removesuffix(known)
        return base + path
    specific = _signal_specific(settings, signal)
    if specific:
        return specific
    return (settings.otel_exporter_otlp_endpoint or DEFAULT_OTLP_ENDPOINT).rstrip("/") + path


def otlp_endpoint_set(settings: Settings, signal: Signal) -> bool:
    """Whether any endpoint ``signal`` would be sent to is set (the project's or an OTEL_* one)."""
    generic = (settings.otlp_endpoint, settings.otel_exporter_otlp_endpoint)
    return any(generic) or bool(_signal_specific(settings, signal))


def otlp_traces_url(settings: Settings) -> str:
    """The URL OTLP/HTTP spans are posted to (:func:`otlp_url` for traces)."""
    return otlp_url(settings, "traces")


def trace_exporter_of(settings: Settings) -> str:
    """The exporter in effect: the project's setting, else ``OTEL_TRACES_EXPORTER``, else
    ``otlp`` when any OTLP endpoint is set, else ``none``."""
    if settings.trace_exporter is not None:
        return settings.trace_exporter
    chosen = (settings.otel_traces_exporter or "").strip().lower()
    if chosen:
        if chosen not in ("otlp", "console", "none"):
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER={chosen[:32]!r} is not supported (otlp, console or none)"
            )
        return chosen
    return "otlp" if otlp_endpoint_set(settings, "traces") else "none"


def resource_attributes(settings: Settings, service: str) -> dict[str, str]:
    """The resource of ``service``'s spans: ``OTEL_RESOURCE_ATTRIBUTES``, then the service name.

    ``service.name`` is ``OTEL_SERVICE_NAME``, else the one in the attributes, else the
    component's own name; ``referral.component`` always names the component.
    """
    attrs: dict[str, str] = {}
    for part in (settings.otel_resource_attributes or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                "OTEL_RESOURCE_ATTRIBUTES must be key=value pairs separated by commas"
            )
        attrs[unquote(key.strip())] = unquote(value.strip())
    attrs["service.name"] = settings.otel_service_name or attrs.get("service.name") or service
    attrs["referral.component"] = service
    return attrs


def setup_tracing(settings: Settings, service: str) -> Tracing:
    """Tracing for ``service`` with the exporter the settings (or the OTEL_* variables) name."""
    kind = trace_exporter_of(settings)
    if kind == "none":
        return Tracing(None, service)
    exporter: SpanExporter
    if kind == "console":
        exporter = ConsoleSpanExporter()
    elif kind == "jsonl":
        path = settings.trace_file or settings.state_dir / "traces.jsonl"
        exporter = JsonLinesSpanExporter(path)
    elif kind == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:  # optional extra
            raise ConfigError(
                "trace_exporter=otlp needs opentelemetry-exporter-otlp-proto-http"
            ) from exc
        exporter = OTLPSpanExporter(endpoint=otlp_traces_url(settings))
    else:  # pragma: no cover - Settings restricts the values
        raise ConfigError(f"unknown trace exporter {kind!r}")
    provider = TracerProvider(resource=Resource.create(resource_attributes(settings, service)))
    processor = SimpleSpanProcessor(exporter) if kind == "jsonl" else BatchSpanProcessor(exporter)
    provider.add_span_processor(processor)
    return Tracing(provider, service)


def trace_id_of(headers: Sequence[tuple[str, bytes]] | None) -> str | None:
    """The trace id in a ``traceparent`` header, if any (for ledger events)."""
    for k, v in headers or ():
        if k == Headers.TRACEPARENT:
            parts = v.decode("ascii", "replace").split("-")
            return parts[1] if len(parts) == 4 else None
    return None
