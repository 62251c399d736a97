"""The standalone host: the HTTP contract on FastAPI + uvicorn, agents on the Durable Task framework.

    python -m travelplanner            # or: make run

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

import uvicorn
from agent_framework_durabletask import DurableAIAgentWorker
from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles

from streaming import http_api
from streaming.reader import SHUTTING_DOWN
from travelplanner import PAGE, http_server, openapi
from travelplanner.agent import AGENT_NAME, select_model
from travelplanner.browser_guard import BrowserGuard, allowed_hosts, normalized_origin
from travelplanner.durable import SchedulerConnection, dispatcher, make_client, make_worker
from travelplanner.embedded_backend import LoopbackInMemoryBackend
from travelplanner.embedded_redis import EmbeddedRedis
from travelplanner.security_headers import SecurityHeaders
from travelplanner.settings import Settings, SettingsError
from travelplanner.wiring import Wiring

logger = logging.getLogger("travelplanner")


@dataclass
class Runtime:
    """Everything the host started, so it can stop it in reverse order."""

    wiring: Wiring
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
    stops: list[Callable[[], None]] = []
    embedded = []
    redis_url = settings.redis_url
    if redis_url is None:
        redis_server = EmbeddedRedis(settings.data_dir).start()
        redis_url = redis_server.url
        stops.append(redis_server.stop)
        embedded.append("Redis")
    runtime = Runtime(Wiring(settings, redis_url), embedded=embedded, _stops=stops)
    scheduler = (SchedulerConnection.parse(settings.durable_task_scheduler_connection_string)
                 if settings.durable_task_scheduler_connection_string else None)
    if scheduler is None:
        if settings.host_role != "all":
            raise SettingsError("HOST_ROLE=web or worker needs DURABLE_TASK_SCHEDULER_CONNECTION_STRING: "
                                "the embedded durable backend lives inside one process")
        backend = LoopbackInMemoryBackend(port=0)
        runtime.durable_address = backend.start()
        runtime.on_stop(lambda: backend.stop(grace=1))
        runtime.embedded.append("Durable Task backend")
    runtime.scheduler = scheduler
    if settings.host_role in ("all", "worker"):
        worker = make_worker(runtime.durable_address, scheduler, settings.taskhub_name)
        DurableAIAgentWorker(worker).add_agent(runtime.wiring.agent())
        worker.start()
        runtime.on_stop(worker.stop)
    return runtime


def create_app(settings: Settings, runtime: Runtime) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = make_client(runtime.durable_address, runtime.scheduler, settings.taskhub_name)
        runtime.services = runtime.wiring.services(
            dispatcher(client) if settings.host_role in ("all", "web") else None)
        try:
            yield
        finally:
            await runtime.wiring.close_current_loop()
            with contextlib.suppress(Exception):
                await client.aclose()

    # No docs UI: no installed package ships Swagger UI's assets, and a CDN copy needs the network and
    # trusts a third party's script. The OpenAPI document is served for any tool to render.
    app = FastAPI(title="TravelPlanner streaming agent host", lifespan=lifespan,
                  docs_url=None, openapi_url="/api/openapi.json", redoc_url=None)

    def services() -> http_api.Services:
        assert runtime.services is not None, "the app is not started"
        return runtime.services

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
        return await http_api.start_run(request, services(), agent_name)

    @app.get("/api/agent/stream/{conversation_id}", openapi_extra=openapi.STREAM_DOC,
             responses=openapi.STREAM_RESPONSES)
    async def stream(conversation_id: str, request: Request) -> Response:
        """A run's events as SSE (default) or text/plain, resumable by Last-Event-ID or ?cursor=."""
        return await http_api.stream(request, services(), conversation_id)

    @app.post("/api/agent/stream/{conversation_id}/cancel", responses=openapi.CANCEL_RESPONSES)
    async def cancel(conversation_id: str, request: Request) -> Response:
        """Stop the conversation's latest run (or ?run=) with a `cancelled` event."""
        return await http_api.cancel(request, services(), conversation_id)

    @app.api_route("/api/health", methods=["GET", "HEAD"])  # HEAD: uptime checks that do not want a body
    async def health() -> Response:
        return await http_api.health(services())

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
            self._runtime.services.tail.close_readers(SHUTTING_DOWN)
        super().handle_exit(sig, frame)  # type: ignore[arg-type]


def describe(settings: Settings, runtime: Runtime) -> str:
    url = f"http://{settings.host}:{settings.port}"
    embedded = ", ".join(runtime.embedded) or "nothing"
    durable = "Durable Task Scheduler" if settings.durable_task_scheduler_connection_string else "embedded"
    lines = [
        f"TravelPlanner host ({settings.host_role}) on {url}",
        f"  model:    {select_model(settings).description}",
        f"  durable:  {durable}; redis: {'embedded' if 'Redis' in runtime.embedded else 'REDIS_CONNECTION_STRING'}",
        f"  embedded: {embedded}",
    ]
    if settings.host_role != "worker":
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
        if settings.host_role == "worker":
            return _serve_worker_only()
        config = http_server.server_config(create_app(settings, runtime), settings)
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
