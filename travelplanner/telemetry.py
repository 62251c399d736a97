"""OpenTelemetry for a process, configured once from its settings: off unless an exporter is configured.

- APPLICATIONINSIGHTS_CONNECTION_STRING: azure-monitor-opentelemetry exports traces and metrics to
  Application Insights, signed in with Entra ID (the user-assigned managed identity AZURE_CLIENT_ID, as the
  infra grants it Monitoring Metrics Publisher; else DefaultAzureCredential). Logs are not exported (the
  Functions host ships them already), nor are the distro's own library instrumentations used.
- OTEL_EXPORTER_OTLP_ENDPOINT: the OTLP/HTTP exporters, to a collector.
- Neither: nothing is configured, agent-framework's instrumentation is switched off, and `configure`
  returns None, so nothing in the app is given a tracer or an observer: no span, no clock read per chunk.

When on, it instruments what the process does with the established instrumentations: agent-framework's
own (agent runs, model calls, tool calls; never message text), redis-py (every command, arguments redacted
by the instrumentation), and, in a web process, the FastAPI app (`instrument_app`: one server span per
request, none per streamed chunk, and the conversation id, a bearer secret, never recorded: the path and
query are rewritten before export). durabletask's own spans of the entity operations are kept, with the
entity's key (the conversation id) replaced by its digest as each span starts. The app's own spans
(`dispatch TravelPlanner` in the web process, `run TravelPlanner` in the worker, linked by a W3C
traceparent in the run request) and metrics (`travelplanner.metrics`) come on top.

Work that belongs to no request or run (the live tail's blocking XREAD, the writers' shared pipeline) runs
`untraced()`: otherwise each of those calls would start a trace of its own. Their cost shows in the metrics.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from opentelemetry import trace
from opentelemetry.trace import Tracer

from travelplanner.metrics import Metrics
from travelplanner.settings import Settings

logger = logging.getLogger(__name__)

Role = Literal["web", "worker", "functions"]
SCOPE = "travelplanner"
_CONVERSATION_IN_PATH = re.compile(r"(/api/agent/stream/)[^/?]+")
_SHOWN_QUERY = frozenset({"run"})  # a correlation id is no secret; `code` (a key) and `cursor` are dropped
_URL_ATTRIBUTES = ("http.url", "url.full")
_ENTITY_ID = re.compile(r"@(?P<name>[^@]+)@(?P<key>.+)")  # durabletask's "@dafx-travelplanner@<conversation id>"
_TARGET_ATTRIBUTES = ("http.target",)


@dataclass(frozen=True)
class Exporters:
    """Where spans and metrics go instead of the configured exporters (tests and the benchmark: in memory)."""

    spans: Any  # a SpanExporter, exported synchronously
    metrics: Any  # a MetricReader


@dataclass
class Telemetry:
    """The process's telemetry, once configured: what the app's code is given to trace and measure with."""

    tracer: Tracer
    metrics: Metrics
    _providers: tuple[Any, Any]

    def instrument_app(self, app: Any) -> None:
        """One server span per HTTP request of this FastAPI app (none per streamed chunk), ids redacted."""
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        tracer_provider, meter_provider = self._providers
        FastAPIInstrumentor.instrument_app(app, server_request_hook=redact_request, exclude_spans=["receive", "send"],
                                           tracer_provider=tracer_provider, meter_provider=meter_provider)

    def flush(self, timeout_seconds: float = 5.0) -> None:
        """Export what is buffered (before a process exits without running its exit handlers)."""
        for provider in self._providers:
            with contextlib.suppress(Exception):
                provider.force_flush(int(timeout_seconds * 1000))

    def shutdown(self) -> None:
        """Stop instrumenting and exporting (tests and the benchmark; a host keeps it for its life)."""
        from agent_framework.observability import disable_instrumentation
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        disable_instrumentation()
        RedisInstrumentor().uninstrument()
        for provider in self._providers:
            with contextlib.suppress(Exception):
                provider.shutdown()


def enabled(settings: Settings) -> bool:
    return bool(settings.applicationinsights_connection_string or settings.otel_exporter_otlp_endpoint)


def configure(settings: Settings, role: Role, *, exporters: Exporters | None = None) -> Telemetry | None:
    """Set up the process's telemetry from its settings (once per process); None when it is off."""
    from agent_framework.observability import disable_instrumentation, enable_instrumentation

    if exporters is None and not enabled(settings):
        disable_instrumentation()  # agent-framework's is on by default, and costs per run even without a provider
        return None
    from opentelemetry import metrics
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import Resource

    resource = Resource.create({"service.name": f"travelplanner-{role}", "service.namespace": "travelplanner",
                                "service.instance.id": f"{socket.gethostname()}:{os.getpid()}"})
    if exporters is not None:
        _in_memory(exporters, resource)
    elif settings.applicationinsights_connection_string:
        _azure_monitor(settings, resource)
    else:
        _otlp(settings.otel_exporter_otlp_endpoint or "", resource)
    tracer_provider, meter_provider = trace.get_tracer_provider(), metrics.get_meter_provider()
    RedisInstrumentor().instrument(tracer_provider=tracer_provider)
    enable_instrumentation(enable_sensitive_data=False, force=True)  # spans and token metrics, never text
    logger.info("telemetry on (%s): traces and metrics of this %s process",
                "in memory" if exporters else "Application Insights"
                if settings.applicationinsights_connection_string else "OTLP", role)
    return Telemetry(tracer_provider.get_tracer(SCOPE), Metrics(meter_provider.get_meter(SCOPE)),
                     (tracer_provider, meter_provider))


def _in_memory(exporters: Exporters, resource: Any) -> None:
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(_redactor())
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporters.spans))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[exporters.metrics]))


def _otlp(endpoint: str, resource: Any) -> None:
    from opentelemetry import metrics
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    base = endpoint.rstrip("/")
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(_redactor())
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces")))
    trace.set_tracer_provider(tracer_provider)
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{base}/v1/metrics"))
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))


def _azure_monitor(settings: Settings, resource: Any) -> None:
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
    from azure.monitor.opentelemetry import configure_azure_monitor

    assert settings.applicationinsights_connection_string is not None
    credential = ManagedIdentityCredential(client_id=settings.azure_client_id) if settings.azure_client_id \
        else DefaultAzureCredential()
    off = {"enabled": False}
    configure_azure_monitor(
        connection_string=settings.applicationinsights_connection_string.get_secret_value(),
        credential=credential, resource=resource, disable_logging=True, span_processors=[_redactor()],
        # The instrumentations this app needs are set up here, by hand; the distro's others would add spans
        # nobody asked for (token requests, the Functions worker's own HTTP server).
        instrumentation_options={name: off for name in ("azure_sdk", "django", "fastapi", "flask", "httpx",
                                                        "httpx2", "psycopg2", "requests", "urllib", "urllib3")},
    )


def _redactor() -> Any:
    """A span processor that replaces entity keys (conversation ids) in durabletask's span attributes."""
    from opentelemetry.sdk.trace import SpanProcessor

    class RedactEntityKeys(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            for name, value in list((span.attributes or {}).items()):
                match = _ENTITY_ID.fullmatch(value) if isinstance(value, str) else None
                if name.startswith("durabletask.") and match:
                    span.set_attribute(name, f"@{match['name']}@{conversation_tag(match['key'])}")

    return RedactEntityKeys()


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """Instrumented libraries record nothing in this block, nor in tasks created in it."""
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    with suppress_instrumentation():
        yield


def conversation_tag(conversation_id: str) -> str:
    """What telemetry records for a conversation: its id is a bearer secret, so a digest of it, not the id."""
    return hashlib.sha256(conversation_id.encode()).hexdigest()[:16]


def redact_request(span: Any, scope: dict[str, Any]) -> None:
    """Rewrite a server span's URL attributes: the conversation id becomes a placeholder, keys and cursors go."""
    if not span.is_recording():
        return
    path = _CONVERSATION_IN_PATH.sub(r"\1{conversation_id}", str(scope.get("path") or ""))
    raw_query = (scope.get("query_string") or b"").decode("latin-1")
    query = urlencode([(k, v) for k, v in parse_qsl(raw_query, keep_blank_values=True) if k in _SHOWN_QUERY])
    target = f"{path}?{query}" if query else path
    attributes = getattr(span, "attributes", None) or {}
    for name in _TARGET_ATTRIBUTES:
        if name in attributes:
            span.set_attribute(name, target)
    for name in _URL_ATTRIBUTES:
        if name in attributes:
            scheme, netloc, *_ = urlsplit(str(attributes[name]))
            span.set_attribute(name, urlunsplit((scheme, netloc, path, query, "")))
    if "url.path" in attributes:
        span.set_attribute("url.path", path)
    if "url.query" in attributes:
        span.set_attribute("url.query", query)
