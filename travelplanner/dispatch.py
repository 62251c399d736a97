"""Handing a run to the durable agent host: a signal to the agent's entity, one per conversation.

Both hosts start runs the same way; only their durable client differs (durabletask's gRPC client on the
standalone host, the Durable Functions client binding on Azure Functions), and so the type of entity id
it takes. The run request is fire and forget, and carries the run log's address in its options, which
`RecordedAgent` takes out before the model sees them, and with telemetry on the trace context it continues.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agent_framework_durabletask import AgentSessionId, RunRequest
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from travelplanner.recorder import run_log_options

_tracer = trace.get_tracer("travelplanner")  # records nothing until telemetry sets a tracer provider


def run_request(conversation_id: str, correlation_id: str, message: str,
                trace_context: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The entity operation input for a fire-and-forget, recorded run (traced under `trace_context`)."""
    request = RunRequest(message=message, correlation_id=correlation_id, wait_for_response=False,
                         options=run_log_options(conversation_id, correlation_id, trace_context))
    return request.to_dict()


class EntityDispatcher:
    """Starts a run by signalling the agent's entity (`dafx-<agent>`, keyed by conversation) through `client`."""

    def __init__(self, client: Any, entity_id: Callable[[str, str], Any]) -> None:
        self._client = client
        self._entity_id = entity_id  # (entity name, key) -> the client's own entity id type

    async def dispatch(self, agent_name: str, conversation_id: str, correlation_id: str, message: str) -> None:
        entity = self._entity_id(AgentSessionId.to_entity_name(agent_name), conversation_id)
        # With telemetry on, the run's span in the worker continues this trace: the W3C trace context goes
        # with the run request (nothing goes when telemetry is off: there is no span to continue).
        with _tracer.start_as_current_span(f"dispatch {agent_name}", kind=SpanKind.PRODUCER,
                                           attributes={"travelplanner.run.id": correlation_id}):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            request = run_request(conversation_id, correlation_id, message, carrier)
            await self._client.signal_entity(entity, "run", request)
