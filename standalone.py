"""The standalone host: the HTTP contract on FastAPI + uvicorn, agents on the Durable Task framework.

    python standalone.py            # or: make run

With no configuration it runs on embedded defaults (a redis-server on
loopback, durabletask's in-memory backend, the offline demo model) at
http://127.0.0.1:7071. HOST_ROLE splits it: `web` serves HTTP only, `worker`
executes agents only; both share one Durable Task Scheduler and one Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles

import http_api
from agent import AGENT_NAME, build_agent, select_model
from durable_backend import (
    DurableTaskDispatcher,
    LoopbackInMemoryBackend,
    SchedulerConnection,
    make_client,
    make_worker,
)
from embedded_redis import EmbeddedRedis
from live_tail import LiveTail
from recorded_agent import RecordedAgent
from redis_connection import TAIL_BLOCK_SECONDS, connect, run_log_factory
from redis_stream_response_handler import Retention, WritePolicy
from settings import Settings, SettingsError

logger = logging.getLogger("travelplanner")

@dataclass
class Runtime:
    """Everything the host started, so it can stop it in reverse order."""

    redis_url: str
    durable_address: str | None = None  # the embedded backend's, when there is one
    scheduler: SchedulerConnection | None = None
    services: http_api.Services | None = None
    embedded: list[str] = field(default_factory=list)
    _stops: list[Callable[[], None]] = field(default_factory=list)

    def on_stop(self, stop: Callable[[], None]) -> None:
        self._stops.append(stop)

    def stop(self) -> None:
        while self._stops:
            with contextlib.suppress(Exception):
                self._stops.pop()()


def start_backends(settings: Settings) -> Runtime:
    """Redis and, for roles that run agents, the durable worker (blocking calls: before the event loop)."""
    if settings.redis_connection_string:
        runtime = Runtime(settings.redis_connection_string)
    else:
        redis_server = EmbeddedRedis(settings.data_dir).start()
        runtime = Runtime(redis_server.url, embedded=["Redis"])
        runtime.on_stop(redis_server.stop)
    scheduler = (SchedulerConnection.parse(settings.durable_task_scheduler_connection_string)
                 if settings.durable_task_scheduler_connection_string else None)
    if scheduler is None:
        if settings.role != "all":
            raise SettingsError("HOST_ROLE=web or worker needs DURABLE_TASK_SCHEDULER_CONNECTION_STRING: "
                                "the embedded durable backend lives inside one process")
        backend = LoopbackInMemoryBackend(port=0)
        runtime.durable_address = backend.start()
        runtime.on_stop(lambda: backend.stop(grace=1))
        runtime.embedded.append("Durable Task backend")
    runtime.scheduler = scheduler
    if settings.role in ("all", "worker"):
        log_per_loop = run_log_factory(runtime.redis_url, Retention.from_settings(settings),
                                       entra=settings.redis_auth == "entra", client_id=settings.azure_client_id)
        agent = RecordedAgent(build_agent(settings), log_per_loop, WritePolicy.from_settings(settings))
        worker = make_worker(runtime.durable_address, scheduler, settings.taskhub_name)
        from agent_framework_durabletask import DurableAIAgentWorker

        DurableAIAgentWorker(worker).add_agent(agent)
        worker.start()
        runtime.on_stop(worker.stop)
    return runtime


# The OpenAPI document describes the contract (the handlers read raw requests, so FastAPI cannot infer it).
_ERROR = {"content": {"application/json": {"schema": {
    "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}}}
_ID_PATTERN = "^[A-Za-z0-9_-]{1,128}$"
_RUN_DOC: dict[str, Any] = {
    "requestBody": {"required": True, "content": {
        "text/plain": {"schema": {"type": "string", "minLength": 1, "maxLength": 32768}},
        "application/json": {"schema": {"type": "object", "required": ["message"], "properties": {
            "message": {"type": "string", "minLength": 1},
            "conversation_id": {"type": "string", "pattern": _ID_PATTERN},
            "session_id": {"type": "string", "pattern": _ID_PATTERN},
            "thread_id": {"type": "string", "pattern": _ID_PATTERN}}}}}},
}
_RUN_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": "Accepted", "content": {"application/json": {"schema": {
        "type": "object", "required": ["status", "conversation_id", "correlation_id", "stream_url"],
        "properties": {name: {"type": "string"} for name in
                       ("status", "conversation_id", "correlation_id", "stream_url")}}}}},
    **{code: {"description": text, **_ERROR} for code, text in (
        (400, "Bad input"), (404, "Unknown agent"), (413, "Message too large"),
        (415, "Unsupported content type"), (503, "Redis or the durable backend unreachable"))},
}
_STREAM_DOC: dict[str, Any] = {"parameters": [
    {"name": "run", "in": "query", "required": False, "schema": {"type": "string", "pattern": _ID_PATTERN}},
    {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}},
    {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},
]}
_STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The run's events", "content": {"text/event-stream": {"schema": {"type": "string"}},
                                                          "text/plain": {"schema": {"type": "string"}}}},
    **{code: {"description": text, **_ERROR} for code, text in (
        (400, "Malformed cursor or id"), (404, "Unknown or expired conversation or run"),
        (410, "Cursor older than the retained stream"), (503, "Redis unreachable"))},
}
_CANCEL_RESPONSES: dict[int | str, dict[str, Any]] = {
    **{code: {"description": text, **_ERROR} for code, text in (
        (400, "Malformed id"), (404, "Unknown conversation or run"), (409, "The run has already ended"),
        (503, "Redis unreachable"))},
}


def create_app(settings: Settings, runtime: Runtime) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        entra = settings.redis_auth == "entra"
        log_per_loop = run_log_factory(runtime.redis_url, Retention.from_settings(settings), entra=entra,
                                       client_id=settings.azure_client_id)
        log = log_per_loop()
        tail = LiveTail(connect(runtime.redis_url, entra=entra, client_id=settings.azure_client_id,
                                blocking_reader=True), log.redis, block_seconds=TAIL_BLOCK_SECONDS)
        tail.start()
        client = make_client(runtime.durable_address, runtime.scheduler, settings.taskhub_name)
        dispatcher = DurableTaskDispatcher(client) if settings.role in ("all", "web") else None
        runtime.services = http_api.Services(log, tail, dispatcher, (AGENT_NAME,),
                                             http_api.StreamTiming.from_settings(settings))
        try:
            yield
        finally:
            await tail.stop()
            await log_per_loop.close_current()
            with contextlib.suppress(Exception):
                await client.aclose()

    app = FastAPI(title="TravelPlanner streaming agent host", lifespan=lifespan,
                  docs_url="/api/docs", openapi_url="/api/openapi.json", redoc_url=None)

    def services() -> http_api.Services:
        assert runtime.services is not None, "the app is not started"
        return runtime.services

    if settings.api_key:
        app.middleware("http")(require_api_key(settings.api_key))

    @app.exception_handler(StarletteHTTPException)
    async def routing_error(request: Request, error: StarletteHTTPException) -> Response:
        # Unknown routes and wrong methods answer in the contract's error shape, not FastAPI's {"detail"}.
        message = {404: "no such route; see /api/docs", 405: f"{request.method} is not allowed here"}
        return http_api.error_response(error.status_code, message.get(error.status_code, str(error.detail)))

    @app.post("/api/agents/{agent_name}/run", status_code=202, openapi_extra=_RUN_DOC, responses=_RUN_RESPONSES)
    async def run_agent(agent_name: str, request: Request) -> Response:
        """Start a run. Body: text/plain message, or JSON {"message", "conversation_id"?}."""
        return await http_api.start_run(request, services(), agent_name)

    @app.get("/api/agent/stream/{conversation_id}", openapi_extra=_STREAM_DOC, responses=_STREAM_RESPONSES)
    async def stream(conversation_id: str, request: Request) -> Response:
        """A run's events as SSE (default) or text/plain, resumable by Last-Event-ID or ?cursor=."""
        return await http_api.stream(request, services(), conversation_id)

    @app.post("/api/agent/stream/{conversation_id}/cancel", responses=_CANCEL_RESPONSES)
    async def cancel(conversation_id: str, request: Request) -> Response:
        """Stop the conversation's latest run (or ?run=) with a `cancelled` event."""
        return await http_api.cancel(request, services(), conversation_id)

    @app.get("/api/health")
    async def health() -> Response:
        return await http_api.health(services())

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return FileResponse(http_api.PAGE, headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=http_api.PAGE.parent, check_dir=False), name="static")

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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Server(uvicorn.Server):
    """uvicorn, plus: on SIGINT/SIGTERM, end every open stream first so clients resume elsewhere at once."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self._runtime = runtime

    def handle_exit(self, sig: int, frame: object) -> None:
        if self._runtime.services is not None:
            self._runtime.services.tail.close_readers("the server is shutting down; resume from the last event id")
        super().handle_exit(sig, frame)  # type: ignore[arg-type]


def describe(settings: Settings, runtime: Runtime) -> str:
    url = f"http://{settings.host}:{settings.port}"
    embedded = ", ".join(runtime.embedded) or "nothing"
    durable = "Durable Task Scheduler" if settings.durable_task_scheduler_connection_string else "embedded"
    lines = [
        f"TravelPlanner host ({settings.role}) on {url}",
        f"  model:    {select_model(settings).description}",
        f"  durable:  {durable}; redis: {'embedded' if 'Redis' in runtime.embedded else 'REDIS_CONNECTION_STRING'}",
        f"  embedded: {embedded}",
    ]
    if settings.role != "worker":
        lines += [
            f"  try:      curl -s -X POST {url}/api/agents/{AGENT_NAME}/run -H 'Content-Type: text/plain' "
            "-d 'Plan a 3-day trip to Tokyo'",
            f"            then curl -N {url}<stream_url from the answer>   (or open {url}/ in a browser)",
        ]
    if settings.api_key:
        lines.append("  auth:     API_KEY is set: send Authorization: Bearer <key> or x-api-key")
    return "\n".join(lines)


# Libraries that log every tool call and gRPC poll at INFO; their warnings still show.
_CHATTY_LOGGERS = ("agent_framework", "durabletask", "durabletask-worker", "durabletask-client",
                   "durabletask-async_client", "azure", "httpx")


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level != "DEBUG":
        for name in _CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def main() -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if not is_loopback(settings.host) and not settings.api_key and not settings.allow_public_bind:
        print(f"refusing to bind {settings.host} without API_KEY (set API_KEY, or ALLOW_PUBLIC_BIND=true "
              "behind your own authentication)", file=sys.stderr)
        return 2
    try:
        runtime = start_backends(settings)
    except Exception as error:
        print(f"could not start: {error}", file=sys.stderr)
        return 1
    try:
        logger.info("\n%s", describe(settings, runtime))
        if settings.role == "worker":
            return _serve_worker_only()
        config = uvicorn.Config(create_app(settings, runtime), host=settings.host, port=settings.port,
                                log_level=settings.log_level.lower(), timeout_graceful_shutdown=5,
                                lifespan="on", access_log=False)
        # uvicorn re-raises the signal it stopped for once it is done; exit through `finally` instead,
        # so the embedded Redis and the durable worker are stopped too.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _exit_after_shutdown)
        Server(config, runtime).run()
        return 0
    finally:
        runtime.stop()


def _exit_after_shutdown(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _serve_worker_only() -> int:
    stop = asyncio.Event()

    async def wait() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()

    asyncio.run(wait())
    return 0


if __name__ == "__main__":
    sys.exit(main())
