"""A real OTLP/HTTP receiver on loopback (traces and metrics), decoded with opentelemetry-proto."""

from __future__ import annotations

import gzip
import http.server
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = ["OtlpReceiver", "ReceivedPoint", "ReceivedSpan", "otlp_receiver"]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


def _attributes(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in attributes}


def _service(resource: Resource) -> str:
    return str(_attributes(resource.attributes).get("service.name", ""))


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the receiver decoded it, with its resource's service name."""

    span: Span
    service: str

    @property
    def trace_id(self) -> str:
        """The hex trace id."""
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        """The hex span id."""
        return self.span.span_id.hex()

    @property
    def parent_id(self) -> str:
        """The hex parent span id ('' for a root span)."""
        return self.span.parent_span_id.hex()

    def attribute(self, key: str) -> Any:
        """The value of one span attribute (None if absent)."""
        for kv in self.span.attributes:
            if kv.key == key:
                return getattr(kv.value, kv.value.WhichOneof("value"))
        return None


@dataclass(frozen=True)
class ReceivedPoint:
    """One metric data point as received: its metric, labels and value (a histogram's count)."""

    metric: str
    kind: str
    attributes: dict[str, Any]
    value: float
    service: str
    scope: str


def _points(metric: Metric, service: str, scope: str) -> list[ReceivedPoint]:
    kind = metric.WhichOneof("data")
    if kind is None:
        return []
    out = []
    for point in getattr(metric, kind).data_points:
        if kind == "histogram":
            value = float(point.count)
        else:
            value = float(getattr(point, point.WhichOneof("value")))
        out.append(
            ReceivedPoint(metric.name, kind, _attributes(point.attributes), value, service, scope)
        )
    return out


@dataclass
class OtlpReceiver:
    """What the receiver saw: the request paths, every decoded span and metric point."""

    port: int = 0
    paths: list[str] = field(default_factory=list)
    spans: list[ReceivedSpan] = field(default_factory=list)
    points: list[ReceivedPoint] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        """The base URL to give as OTEL_EXPORTER_OTLP_ENDPOINT."""
        return f"http://127.0.0.1:{self.port}"

    def snapshot(self) -> list[ReceivedSpan]:
        """The spans received so far."""
        with self.lock:
            return list(self.spans)

    def metric_points(self) -> list[ReceivedPoint]:
        """The metric data points received so far (every export's, oldest first)."""
        with self.lock:
            return list(self.points)


def _decode_traces(body: bytes) -> tuple[list[ReceivedSpan], bytes]:
    request = ExportTraceServiceRequest.FromString(body)
    found = []
    for rs in request.resource_spans:
        service = _service(rs.resource)
        for ss in rs.scope_spans:
            found += [ReceivedSpan(span, service) for span in ss.spans]
    return found, ExportTraceServiceResponse().SerializeToString()


def _decode_metrics(body: bytes) -> tuple[list[ReceivedPoint], bytes]:
    request = ExportMetricsServiceRequest.FromString(body)
    found = []
    for rm in request.resource_metrics:
        service = _service(rm.resource)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                found += _points(metric, service, sm.scope.name)
    return found, ExportMetricsServiceResponse().SerializeToString()


@contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """Serve OTLP/HTTP on a free loopback port; only ``/v1/traces`` and ``/v1/metrics`` are
    accepted, as a collector."""
    received = OtlpReceiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with received.lock:
                received.paths.append(self.path)
            if self.path not in ("/v1/traces", "/v1/metrics"):
                self.send_error(404)
                return
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path == "/v1/traces":
                spans, answer = _decode_traces(body)
                with received.lock:
                    received.spans += spans
            else:
                points, answer = _decode_metrics(body)
                with received.lock:
                    received.points += points
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    received.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
