"""A web process: the HTTP contract on FastAPI + uvicorn.

HOST_ROLE=web runs one; the `all` role starts WEB_PROCESSES of them on a
listening socket they share (LISTEN_FD). Each starts runs by signalling the
durable backend and serves streams from its own live tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import uvicorn
from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles

from streaming import http_api
from streaming.reader import SHUTTING_DOWN
from travelplanner import PAGE, http_server, openapi
from travelplanner.browser_guard import BrowserGuard, allowed_hosts, normalized_origin
from travelplanner.durable import SchedulerConnection, dispatcher, make_client
from travelplanner.security_headers import SecurityHeaders
from travelplanner.wiring import Wiring

logger = logging.getLogger(__name__)


class _Started:
    """The services of the running app (made in the lifespan, on the server's event loop)."""

    services: http_api.Services | None = None

    def __call__(self) -> http_api.Services:
        assert self.services is not None, "the app is not started"
        return self.services


def create_app(wiring: Wiring, durable_address: str | None, scheduler: SchedulerConnection | None) -> FastAPI:
    settings = wiring.settings
    started = _Started()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = make_client(durable_address, scheduler, settings.taskhub_name)
        started.services = wiring.services(dispatcher(client))
        app.state.services = started.services
        app.state.loop = asyncio.get_running_loop()
        try:
            yield
        finally:
            await wiring.close_current_loop()
            with contextlib.suppress(Exception):
                await client.aclose()
            if wiring.telemetry is not None:
                wiring.telemetry.flush()

    # No docs UI: no installed package ships Swagger UI's assets, and a CDN copy needs the network and
    # trusts a third party's script. The OpenAPI document is served for any tool to render.
    app = FastAPI(title="TravelPlanner streaming agent host", lifespan=lifespan,
                  docs_url=None, openapi_url="/api/openapi.json", redoc_url=None)
    if wiring.telemetry is not None:
        wiring.telemetry.instrument_app(app)

    if settings.api_key:
        app.middleware("http")(require_api_key(settings.api_key.get_secret_value()))

    @app.exception_handler(StarletteHTTPException)
    async def routing_error(request: Request, error: StarletteHTTPException) -> Response:
        # Unknown routes and wrong methods answer in the contract's error shape, not FastAPI's {"detail"}.
        message = {404: "no such route; the API is described at /api/openapi.json",
                   405: f"{request.method} is not allowed here"}
        return http_api.error_response(error.status_code, message.get(error.status_code, str(error.detail)))

    @app.post("/api/agents/{agent_name}/run", status_code=202, openapi_extra=openapi.RUN_DOC,
              responses=openapi.RUN_RESPONSES)
    async def run_agent(agent_name: str, request: Request) -> Response:
        """Start a run. Body: text/plain message, or JSON {"message", "conversation_id"?}."""
        return await http_api.start_run(request, started(), agent_name)

    @app.get("/api/agent/stream/{conversation_id}", openapi_extra=openapi.STREAM_DOC,
             responses=openapi.STREAM_RESPONSES)
    async def stream(conversation_id: str, request: Request) -> Response:
        """A run's events as SSE (default) or text/plain, resumable by Last-Event-ID or ?cursor=."""
        return await http_api.stream(request, started(), conversation_id)

    @app.post("/api/agent/stream/{conversation_id}/cancel", responses=openapi.CANCEL_RESPONSES)
    async def cancel(conversation_id: str, request: Request) -> Response:
        """Stop the conversation's latest run (or ?run=) with a `cancelled` event."""
        return await http_api.cancel(request, started(), conversation_id)

    @app.api_route("/api/health", methods=["GET", "HEAD"])  # HEAD: uptime checks that do not want a body
    async def health() -> Response:
        return await http_api.health(started())

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return FileResponse(PAGE, headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=PAGE.parent, check_dir=False), name="static")
    origins = frozenset(normalized_origin(origin) for origin in settings.allowed_origin_list)
    if origins:  # pages of the listed sites may call the API: answer their CORS preflights
        app.add_middleware(CORSMiddleware, allow_origins=sorted(origins), allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "Authorization", "X-API-Key", "Last-Event-ID"],
                           expose_headers=["Location", "x-conversation-id"])
    app.add_middleware(BrowserGuard, hosts=allowed_hosts(settings.host, settings.allowed_host_list), origins=origins)
    app.add_middleware(SecurityHeaders, page=PAGE)  # added last: outermost, so every answer carries them
    return app


def require_api_key(api_key: str) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    expected = api_key.encode()

    async def check(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        if path == "/api/health" or path == "/" or path.startswith("/static/"):
            return await call_next(request)
        given = request.headers.get("x-api-key", "")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            given = token.strip()
        given = given or request.query_params.get("code", "")  # EventSource cannot send headers
        if not hmac.compare_digest(given.encode(), expected):
            return http_api.error_response(
                401, "missing or wrong API key (Authorization: Bearer <key>, x-api-key, or ?code=<key>)")
        return await call_next(request)

    return check


class _Server(uvicorn.Server):
    """uvicorn, plus: on SIGINT/SIGTERM, end every open stream first so clients resume elsewhere at once."""

    def handle_exit(self, sig: int, frame: object) -> None:
        # A signal handler runs between any two bytecodes of the event loop's code: the tail is closed by
        # the loop itself, at its next turn, never in the middle of a reader joining or leaving.
        state = self.config.app.state  # type: ignore[union-attr]
        services, loop = getattr(state, "services", None), getattr(state, "loop", None)
        if services is not None and loop is not None:
            loop.call_soon_threadsafe(services.tail.close_readers, SHUTTING_DOWN)
        super().handle_exit(sig, frame)  # type: ignore[arg-type]


def serve(wiring: Wiring, durable_address: str | None, scheduler: SchedulerConnection | None) -> int:
    settings = wiring.settings
    app = create_app(wiring, durable_address, scheduler)
    config = http_server.server_config(app, settings)
    sockets = None
    if settings.listen_fd is not None:  # the `all` role's listening socket, shared by its web processes
        sockets = [socket.socket(fileno=settings.listen_fd)]
    logger.info("web process %d: serving http://%s:%d", os.getpid(), settings.host, settings.port)
    # uvicorn raises the signal it stopped for again once it is done; exit 0 instead of dying by it.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_after_shutdown)
    _Server(config).run(sockets=sockets)
    return 0


def _exit_after_shutdown(signum: int, frame: object) -> None:
    raise SystemExit(0)
