"""A stand-in OTLP/HTTP collector on loopback: what a host exports when OTEL_EXPORTER_OTLP_ENDPOINT points here.

It accepts the protobuf bodies the OTLP exporters POST to /v1/traces and /v1/metrics (gzip or not) and keeps
what they carried: each span with its service, trace and parent, each metric data point with its attributes.
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    attributes: dict[str, Any]


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def _attributes(items: Any) -> dict[str, Any]:
    return {item.key: _value(item.value) for item in items}


@dataclass
class OtlpReceiver:
    spans: list[ReceivedSpan] = field(default_factory=list)
    metric_points: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (service, name, attrs)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver._take(self.path, body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _take(self, path: str, body: bytes) -> None:
        with self._lock:
            if path == "/v1/traces":
                traces = ExportTraceServiceRequest.FromString(body)
                for resource_spans in traces.resource_spans:
                    service = str(_attributes(resource_spans.resource.attributes).get("service.name"))
                    for scope_spans in resource_spans.scope_spans:
                        self.spans += [ReceivedSpan(service, span.name, span.trace_id.hex(), span.span_id.hex(),
                                                    span.parent_span_id.hex(), _attributes(span.attributes))
                                       for span in scope_spans.spans]
            elif path == "/v1/metrics":
                exported = ExportMetricsServiceRequest.FromString(body)
                for resource_metrics in exported.resource_metrics:
                    service = str(_attributes(resource_metrics.resource.attributes).get("service.name"))
                    for scope_metrics in resource_metrics.scope_metrics:
                        for metric in scope_metrics.metrics:
                            data = getattr(metric, metric.WhichOneof("data"))
                            self.metric_points += [(service, metric.name, _attributes(point.attributes))
                                                   for point in data.data_points]

    def spans_named(self, name: str) -> list[ReceivedSpan]:
        with self._lock:
            return [span for span in self.spans if span.name == name]

    def metric_names(self) -> set[str]:
        with self._lock:
            return {name for _, name, _ in self.metric_points}
