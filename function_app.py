"""The Azure Functions entry point: the TravelPlanner durable agent and the HTTP contract's routes.

The agent runs in its Durable Task entity (`dafx-TravelPlanner`, one per
conversation) hosted by agent-framework-azurefunctions. Its built-in HTTP
endpoints are classic HTTP functions, and an app with the HTTP streams
feature (needed to stream responses) cannot mix those with streaming ones, so
they stay off and the routes below serve the shared contract in `streaming.http_api`.
"""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func
from agent_framework_azurefunctions import AgentFunctionApp
from azurefunctions.extensions.http.fastapi import HTMLResponse, Request, Response

from streaming import http_api
from travelplanner import PAGE
from travelplanner.dispatch import EntityDispatcher
from travelplanner.security_headers import headers_for, page_policy
from travelplanner.settings import Settings
from travelplanner.telemetry import configure as configure_telemetry
from travelplanner.wiring import Wiring

settings = Settings.from_env()
_REDIS_MISSING = "REDIS_CONNECTION_STRING is not set: the Functions app needs a Redis for its run log"
wiring = Wiring(settings, settings.redis_url or "redis://127.0.0.1:6379/0", configure_telemetry(settings, "functions"))

# The page's own CSP plus frame-ancestors (a meta tag cannot say it), no sniffing, no referrer.
_PAGE_HTML = PAGE.read_text(encoding="utf-8")
_PAGE_HEADERS = headers_for("text/html", page_policy(PAGE))

app = AgentFunctionApp(
    agents=[wiring.agent()],
    enable_http_endpoints=False,
    enable_health_check=False,
    http_auth_level=func.AuthLevel.FUNCTION,
)


@app.route(route="agents/{agent_name}/run", methods=["POST"])
@app.durable_client_input(client_name="client")
async def run_agent(req: Request, client: df.DurableOrchestrationClient) -> Response:
    if not settings.redis_url:
        return http_api.error_response(503, _REDIS_MISSING)
    # durable_client_input has already turned the binding into a client (and re-annotated it for the worker).
    services = wiring.services(EntityDispatcher(client, df.EntityId))
    return await http_api.start_run(req, services, req.path_params["agent_name"])


@app.route(route="agent/stream/{conversation_id}", methods=["GET"])
async def stream(req: Request) -> Response:
    if not settings.redis_url:
        return http_api.error_response(503, _REDIS_MISSING)
    return await http_api.stream(req, wiring.services(None), req.path_params["conversation_id"])


@app.route(route="agent/stream/{conversation_id}/cancel", methods=["POST"])
async def cancel(req: Request) -> Response:
    if not settings.redis_url:
        return http_api.error_response(503, _REDIS_MISSING)
    return await http_api.cancel(req, wiring.services(None), req.path_params["conversation_id"])


@app.route(route="health", methods=["GET", "HEAD"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: Request) -> Response:
    if not settings.redis_url:
        return http_api.error_response(503, _REDIS_MISSING)
    return await http_api.health(wiring.services(None))


@app.route(route="app", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def page(req: Request) -> HTMLResponse:
    return HTMLResponse(_PAGE_HTML, headers={"Cache-Control": "no-cache", **_PAGE_HEADERS})
