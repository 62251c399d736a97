"""The Azure Functions entry point: the TravelPlanner durable agent and the HTTP contract.

The agent runs in its Durable Task entity (`dafx-TravelPlanner`, one per
conversation) hosted by agent-framework-azurefunctions. Its built-in HTTP
endpoints are classic HTTP functions, and an app with the HTTP streams
feature (needed to stream responses) cannot mix those with streaming ones, so
they stay off and the routes below serve the shared contract in `http_api`.
"""

from __future__ import annotations

import asyncio

import azure.durable_functions as df
import azure.functions as func
from agent_framework_azurefunctions import AgentFunctionApp
from azurefunctions.extensions.http.fastapi import HTMLResponse, Request, Response

import http_api
from agent import AGENT_NAME, build_agent
from durable_backend import run_request
from live_tail import LiveTail
from recorded_agent import RecordedAgent
from redis_connection import connect, run_log_factory
from redis_stream_response_handler import Retention, WritePolicy
from settings import Settings

settings = Settings.from_env()
_REDIS_MISSING = "REDIS_CONNECTION_STRING is not set: the Functions app needs a Redis for its run log"
_redis_url = settings.redis_connection_string or "redis://127.0.0.1:6379/0"
_entra = settings.redis_auth == "entra"
_run_logs = run_log_factory(_redis_url, Retention.from_settings(settings), entra=_entra,
                            client_id=settings.azure_client_id)

app = AgentFunctionApp(
    agents=[RecordedAgent(build_agent(settings), _run_logs, WritePolicy.from_settings(settings))],
    enable_http_endpoints=False,
    enable_health_check=False,
    http_auth_level=func.AuthLevel.FUNCTION,
)


class FunctionsDispatcher:
    """Starts a run by signalling the agent's entity through the Durable Functions client binding."""

    def __init__(self, client: df.DurableOrchestrationClient) -> None:
        self._client = client

    async def dispatch(self, agent_name: str, conversation_id: str, correlation_id: str, message: str) -> None:
        entity = df.EntityId(f"dafx-{agent_name}", conversation_id)
        await self._client.signal_entity(entity, "run", run_request(conversation_id, correlation_id, message))


_tails: dict[asyncio.AbstractEventLoop, LiveTail] = {}


def _services(dispatcher: http_api.RunDispatcher | None = None) -> http_api.Services:
    """The shared services for the worker's event loop (created on first use, then reused)."""
    log = _run_logs()
    loop = asyncio.get_running_loop()
    tail = _tails.get(loop)
    if tail is None:
        tail = _tails[loop] = LiveTail(connect(_redis_url, entra=_entra, client_id=settings.azure_client_id,
                                               blocking_reader=True), log.redis)
        tail.start()
    return http_api.Services(log, tail, dispatcher, (AGENT_NAME,), http_api.StreamTiming.from_settings(settings))


@app.route(route="agents/{agent_name}/run", methods=["POST"])
@app.durable_client_input(client_name="client")
async def run_agent(req: Request, client: df.DurableOrchestrationClient) -> Response:
    if not settings.redis_connection_string:
        return http_api.error_response(503, _REDIS_MISSING)
    # durable_client_input has already turned the binding into a client (and re-annotated it for the worker).
    dispatcher = FunctionsDispatcher(client)
    return await http_api.start_run(req, _services(dispatcher), req.path_params["agent_name"])


@app.route(route="agent/stream/{conversation_id}", methods=["GET"])
async def stream(req: Request) -> Response:
    if not settings.redis_connection_string:
        return http_api.error_response(503, _REDIS_MISSING)
    return await http_api.stream(req, _services(), req.path_params["conversation_id"])


@app.route(route="agent/stream/{conversation_id}/cancel", methods=["POST"])
async def cancel(req: Request) -> Response:
    if not settings.redis_connection_string:
        return http_api.error_response(503, _REDIS_MISSING)
    return await http_api.cancel(req, _services(), req.path_params["conversation_id"])


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: Request) -> Response:
    if not settings.redis_connection_string:
        return http_api.error_response(503, _REDIS_MISSING)
    return await http_api.health(_services())


@app.route(route="app", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def page(req: Request) -> HTMLResponse:
    return HTMLResponse(http_api.PAGE.read_text(encoding="utf-8"), headers={"Cache-Control": "no-cache"})
