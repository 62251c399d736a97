"""Telemetry: one trace per run from the POST through the durable dispatch to its terminal entry, and the metrics.

The standalone host's web app and a worker run in this process, on a real Redis and the embedded durable
backend (its gRPC server, here too), with telemetry configured as a host configures it, but exporting to
memory. One run is made, read and resumed; the tests below check what it left. OpenTelemetry's providers can
be set once per process, so the scenario runs once for the module. Last, the standalone host itself, its
telemetry turned on by OTEL_EXPORTER_OTLP_ENDPOINT, exports to a stand-in collector over OTLP.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_framework_durabletask import DurableAIAgentWorker
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from testing.hosts import StandaloneHost
from testing.otlp_receiver import OtlpReceiver
from testing.sse import parse, read_stream, reassemble
from testing.waiting import until_sync
from travelplanner import metrics as names
from travelplanner import telemetry, web
from travelplanner.durable import make_worker
from travelplanner.embedded_backend import EmbeddedBackend
from travelplanner.settings import Settings
from travelplanner.telemetry import conversation_tag
from travelplanner.wiring import Wiring

API_KEY = "k3y-never-in-telemetry"
MESSAGE = "Plan a 2-day trip to Kyoto with a secret-word-xyzzy"


@dataclass
class Scenario:
    accepted: dict[str, str]
    events: list[Any]
    resumed: list[Any]
    spans: list[ReadableSpan]
    metrics: dict[str, list[tuple[dict[str, Any], Any]]]  # name -> [(attributes, point)]


def _points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else []:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    found.setdefault(metric.name, []).append((dict(point.attributes or {}), point))
    return found


@pytest.fixture(scope="module")
def scenario(redis_url: str) -> Iterator[Scenario]:
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    settings = Settings.from_env({"REDIS_CONNECTION_STRING": redis_url, "OFFLINE_MODEL_CHUNKS_PER_SECOND": "0",
                                  "API_KEY": API_KEY})
    configured = telemetry.configure(settings, "web", exporters=telemetry.Exporters(spans, reader))
    assert configured is not None
    wiring = Wiring(settings, redis_url, configured)
    backend = EmbeddedBackend(retention_seconds=60)
    address = backend.start()
    worker = make_worker(address, None, "default", 4)
    DurableAIAgentWorker(worker).add_agent(wiring.agent())
    worker.start()
    try:
        yield asyncio.run(_run_once(wiring, address, spans, reader))
    finally:
        threading.Thread(target=worker.stop, daemon=True).start()
        backend.stop(grace=1)
        configured.shutdown()


async def _run_once(wiring: Wiring, address: str, spans: InMemorySpanExporter,
                    reader: InMemoryMetricReader) -> Scenario:
    app = web.create_app(wiring, address, None)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:7071", headers=headers,
            timeout=30) as client:
        accepted = (await client.post("/api/agents/TravelPlanner/run", json={"message": MESSAGE})).json()
        streamed = await client.get(accepted["stream_url"] + f"&code={API_KEY}")  # the whole run, to `done`
        events = parse(streamed.content).events
        middle = events[len(events) // 2].id
        resumed = parse((await client.get(accepted["stream_url"], headers={"Last-Event-ID": middle})).content).events

    def run_span_ended() -> bool:
        return any(span.name == "run TravelPlanner" for span in spans.get_finished_spans())

    until_sync(run_span_ended, what="the run's span, ended by its terminal entry")
    return Scenario(accepted, events, resumed, list(spans.get_finished_spans()), _points(reader))


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, (name, sorted({span.name for span in spans}))
    return found[0]


def test_the_run_streams_as_usual_with_telemetry_on(scenario: Scenario) -> None:
    assert scenario.events[-1].kind == "done"
    assert {"tool", "message"} <= {e.kind for e in scenario.events}
    assert reassemble(scenario.events) and scenario.resumed[-1].kind == "done"


def test_one_trace_from_the_post_through_the_dispatch_and_the_worker_to_the_model_and_tools(
        scenario: Scenario) -> None:
    spans = scenario.spans
    post = one(spans, "POST /api/agents/{agent_name}/run")
    dispatch = one(spans, "dispatch TravelPlanner")
    run = one(spans, "run TravelPlanner")
    agent = one(spans, "invoke_agent TravelPlanner")
    chats = [span for span in spans if span.name.startswith("chat ")]
    tools = [span for span in spans if span.name.startswith("execute_tool ")]

    assert post.kind == SpanKind.SERVER and dispatch.kind == SpanKind.PRODUCER and run.kind == SpanKind.CONSUMER
    trace_id = post.context.trace_id
    assert {span.context.trace_id for span in [dispatch, run, agent, *chats, *tools]} == {trace_id}
    assert dispatch.parent.span_id == post.context.span_id
    assert run.parent.span_id == dispatch.context.span_id and run.parent.is_remote  # across the durable dispatch
    assert agent.parent.span_id == run.context.span_id
    assert len(chats) == 2 and all(chat.parent.span_id == agent.context.span_id for chat in chats)
    assert len(tools) == 4 and {tool.attributes["gen_ai.tool.name"] for tool in tools} == {
        "get_weather_forecast", "get_local_events"}
    # The run's span ends with its terminal entry: after every model and tool call, with the outcome.
    assert run.end_time >= max(span.end_time for span in [agent, *chats, *tools])
    assert run.attributes["travelplanner.run.outcome"] == "done"
    assert run.attributes["travelplanner.run.id"] == scenario.accepted["correlation_id"]
    assert run.attributes["travelplanner.conversation.tag"] == conversation_tag(scenario.accepted["conversation_id"])
    assert run.attributes["travelplanner.run.attempt"] == 1


def test_redis_calls_are_traced_in_the_requests_and_background_loops_are_not(scenario: Scenario) -> None:
    redis_spans = [span for span in scenario.spans if span.attributes.get("db.system") == "redis"]
    assert redis_spans, "the redis instrumentation recorded nothing"
    assert all(span.parent is not None for span in redis_spans), "a background loop started traces of its own"
    stream_requests = [span for span in scenario.spans if span.name == "GET /api/agent/stream/{conversation_id}"]
    assert len(stream_requests) == 2
    under_streams = {span.parent.span_id for span in redis_spans} & {s.context.span_id for s in stream_requests}
    assert under_streams, "a reader's Redis reads belong to its request's trace"
    assert not [span for span in scenario.spans if span.name.endswith(" http send")], "a span per streamed chunk"


def test_no_secret_and_no_message_text_in_any_span(scenario: Scenario) -> None:
    conversation = scenario.accepted["conversation_id"]
    recorded = json.dumps([{"name": span.name, "attributes": dict(span.attributes or {}),
                            "events": [dict(event.attributes or {}) for event in span.events]}
                           for span in scenario.spans], default=str)
    for secret in (conversation, API_KEY, "xyzzy", "Kyoto"):
        assert secret not in recorded, secret
    stream = next(s for s in scenario.spans if s.name == "GET /api/agent/stream/{conversation_id}")
    assert stream.attributes["http.target"] == f"/api/agent/stream/{{conversation_id}}?run=" \
        f"{scenario.accepted['correlation_id']}"


def test_the_metrics_exist_with_their_attributes(scenario: Scenario) -> None:
    found = scenario.metrics

    def total(name: str, **attributes: Any) -> float:
        return sum(point.value for seen, point in found.get(name, []) if seen == attributes)

    def histogram(name: str, **attributes: Any) -> Any:
        (point,) = [point for seen, point in found.get(name, []) if seen == attributes]
        return point

    assert total(names.RUNS_STARTED) == 1
    assert total(names.RUNS_FINISHED, outcome="done") == 1
    written = sum(1 for e in scenario.events if e.kind in ("message", "tool", "usage"))
    assert total(names.CHUNKS_WRITTEN) >= written  # chunks merge into fewer entries, never the reverse
    assert histogram(names.MODEL_TO_REDIS).count == total(names.CHUNKS_WRITTEN)
    events_sent = len(scenario.events) + len(scenario.resumed)
    assert histogram(names.REDIS_TO_CLIENT).count == events_sent
    assert histogram(names.REDIS_TO_CLIENT).min >= 0
    assert histogram(names.REDIS_ROUND_TRIP, operation="write").count >= 1
    assert histogram(names.REDIS_ROUND_TRIP, operation="read").count >= 2
    assert total(names.READER_RESUMES, via="last-event-id") == 1
    assert total(names.STREAMS_OPEN, format="sse") == 0  # both responses opened and closed
    assert any(seen == {"format": "sse"} for seen, _ in found[names.STREAMS_OPEN])


# --- The standalone host, configured by its environment, exporting over OTLP ------------------------------


def test_the_standalone_host_exports_one_trace_per_run_from_its_web_and_worker_processes(
        redis_url: str, tmp_path: Path) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT turns telemetry on in each process of the group; the run's trace crosses them."""
    with OtlpReceiver() as collector:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
               "OTEL_METRIC_EXPORT_INTERVAL": "300"}
        with StandaloneHost(redis_url, env, log_path=tmp_path / "host.log") as host:
            accepted = httpx.post(f"{host.base_url}/api/agents/TravelPlanner/run", json={"message": MESSAGE}).json()
            with httpx.Client(base_url=host.base_url, timeout=30) as client:
                assert read_stream(client, accepted["stream_url"]).events[-1].kind == "done"
            until_sync(lambda: collector.spans_named("run TravelPlanner") and collector.spans_named(
                "POST /api/agents/{agent_name}/run"), within=30, what="the run's spans, exported")
            until_sync(lambda: names.RUNS_FINISHED in collector.metric_names(), within=30, what="the metrics")
    (post,) = collector.spans_named("POST /api/agents/{agent_name}/run")
    (dispatch,) = collector.spans_named("dispatch TravelPlanner")
    (run,) = collector.spans_named("run TravelPlanner")
    assert (post.service, dispatch.service, run.service) == ("travelplanner-web", "travelplanner-web",
                                                             "travelplanner-worker")
    assert post.trace_id == dispatch.trace_id == run.trace_id
    assert dispatch.parent_span_id == post.span_id and run.parent_span_id == dispatch.span_id
    assert run.attributes["travelplanner.run.outcome"] == "done"
    assert {names.RUNS_STARTED, names.STREAMS_OPEN, names.REDIS_TO_CLIENT, names.CHUNKS_WRITTEN,
            names.MODEL_TO_REDIS} <= collector.metric_names()
    assert accepted["conversation_id"] not in repr(collector.spans)


def test_telemetry_is_off_unless_an_exporter_is_configured() -> None:
    from agent_framework.observability import OBSERVABILITY_SETTINGS

    assert not telemetry.enabled(Settings.from_env({}))
    assert telemetry.enabled(Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}))
    assert telemetry.enabled(Settings.from_env({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"}))
    assert telemetry.configure(Settings.from_env({}), "web") is None  # nothing to give a tracer or an observer
    assert not OBSERVABILITY_SETTINGS.ENABLED  # agent-framework's own instrumentation off too
