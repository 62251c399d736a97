"""An in-process stand-in for the Azure Functions host, serving function_app.py over a real socket.

The Functions host (Core Tools) cannot be installed here, so this plays the
parts of the host, the Python worker and the Durable extension that our app
relies on, as closely as the installed packages let us check:

- HTTP: requests to `/{routePrefix}/<route>` (routePrefix from host.json,
  default `api`) go to the HTTP function whose trigger route template and
  methods match. Like the worker with the HTTP streams extension, the handler
  gets the Starlette request of a catch-all route, its path params replaced by
  the route values through the extension's own `RequestSynchronizer`, and its
  Starlette response is sent as is (a StreamingResponse streams). No function:
  404 JSON. Auth levels are not enforced, as under `func start`.
- Indexing: at start the worker's load-time checks are repeated (parameters
  match bindings; HTTP parameter and return annotations are types the HTTP
  streams extension accepts), so a function the worker would refuse fails here.
- Durable client: functions with a `durableClient` binding receive the
  binding's JSON string; its `rpcBaseUrl` points at this server under
  RPC_PREFIX. Only entity signals are implemented (anything else gets 501):
  azure-functions-durable 1.7.0 POSTs `{rpcBaseUrl}entities/{name}/{key}?op=...`
  with the input JSON-encoded twice as body, and expects 202.
- Entities: each signal is recorded in `FunctionsHost.dispatches` and queued
  per entity id (name case-insensitive, as the Durable extension lowercases
  it). One batch per id at a time, of every operation queued meanwhile, runs
  the entity function's user handler in a worker thread with the host's JSON
  (`self`, `exists`, `state`, `batch`); the returned `entityState` is fed back
  next time and each operation's result is recorded on its dispatch.

function_app reads its settings at import time, so the environment is set
first. It is imported once per process and re-imported (importlib.reload)
only when a host asks for a different environment. A reload replaces the
module's globals, which a host already running would then serve with, so a
host that reloaded the app reloads the one before it when it stops. The
durable client's HTTP session is one per process too (a module global of
azure-functions-durable, bound to the event loop that made it), so a host
sets it aside while it runs and puts it back when it stops. A host started
inside another's lifetime (a test's own, within the session's) thus leaves
the outer one as it was. Serve requests from one host at a time.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import os
import re
import socket
import sys
import threading
import time
import typing
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func
import uvicorn
from azure.durable_functions.models.utils import http_utils
from azurefunctions.extensions.base import HttpV2FeatureChecker, RequestTrackerMeta, ResponseTrackerMeta
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from testing import ROOT

logger = logging.getLogger(__name__)

RPC_PREFIX = "/_host/durabletask/"  # our private stand-in for the Durable extension's local RPC endpoint
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"]


class FunctionLoadError(RuntimeError):
    """The Python worker would refuse to load this function."""


# --- host.json and the app's import -------------------------------------------------------------


@dataclass(frozen=True)
class HostConfig:
    route_prefix: str
    hub_name: str
    max_concurrent_entities: int

    @classmethod
    def read(cls, path: Path, environ: Mapping[str, str]) -> HostConfig:
        extensions = json.loads(path.read_text(encoding="utf-8")).get("extensions", {})
        durable = extensions.get("durableTask", {})
        # "%NAME%" in host.json is an app setting reference.
        hub = re.sub(r"%(\w+)%", lambda m: environ.get(m[1], ""), str(durable.get("hubName", "TestHubName")))
        return cls(
            route_prefix=str(extensions.get("http", {}).get("routePrefix", "api")).strip("/"),
            hub_name=hub or "TestHubName",
            max_concurrent_entities=int(durable.get("maxConcurrentEntityFunctions", 5 * (os.cpu_count() or 1))),
        )


@dataclass(frozen=True)
class LoadedApp:
    module: ModuleType
    functions: list[Any]  # app.get_functions(): it may be called once per app (a second call raises)


_loaded: tuple[dict[str, str], LoadedApp] | None = None


def loaded_environ() -> dict[str, str] | None:
    """The environment function_app was last imported under."""
    return dict(_loaded[0]) if _loaded is not None else None


def load_function_app(environ: Mapping[str, str]) -> LoadedApp:
    """function_app imported under `environ` (already applied to os.environ) and indexed, as the worker does."""
    global _loaded
    if _loaded is not None and _loaded[0] == dict(environ):
        return _loaded[1]
    module = sys.modules.get("function_app")
    module = importlib.reload(module) if module is not None else importlib.import_module("function_app")
    _loaded = (dict(environ), LoadedApp(module, module.app.get_functions()))
    return _loaded[1]


# --- HTTP functions ----------------------------------------------------------------------------

_TEMPLATE_PARAM = re.compile(r"\{([^{}]*)\}")
_PARAM_NAME = re.compile(r"(\*{0,2})([A-Za-z_]\w*)")


def compile_route(prefix: str, template: str) -> re.Pattern[str]:
    """A regex for a route template: literal segments (case-insensitive), `{name}` and catch-all `{*name}`."""
    template = template.strip("/")
    pattern, position = "", 0
    for match in _TEMPLATE_PARAM.finditer(template):
        name = _PARAM_NAME.fullmatch(match[1])
        if name is None:
            # Constraints, defaults and optional parameters change matching; refuse rather than guess.
            raise FunctionLoadError(f"route {template!r}: {{{match[1]}}} is not supported by this harness")
        pattern += re.escape(template[position:match.start()])
        pattern += f"(?P<{name[2]}>.*)" if name[1] else f"(?P<{name[2]}>[^/]+)"
        position = match.end()
    pattern += re.escape(template[position:])
    head = f"/{prefix}/" if prefix else "/"
    return re.compile(re.escape(head) + pattern + "/?", re.IGNORECASE)  # a trailing slash is ignored


@dataclass(frozen=True)
class HttpFunction:
    name: str
    route: re.Pattern[str]
    methods: frozenset[str]  # empty: every method
    handler: Callable[..., Any]
    request_param: str
    client_param: str | None  # the durableClient binding's parameter, if any

    def match(self, method: str, path: str) -> dict[str, str] | None:
        found = self.route.fullmatch(path)
        if found is None or (self.methods and method.upper() not in self.methods):
            return None
        return found.groupdict()


def _bindings(function: Any) -> list[dict[str, Any]]:
    # The function metadata the worker sends to the host, as the host reads it.
    return list(json.loads(function.get_function_json())["bindings"])


def index_http_functions(functions: list[Any], prefix: str) -> list[HttpFunction]:
    if not HttpV2FeatureChecker.http_v2_enabled():
        raise FunctionLoadError("the HTTP streams extension is not imported: the worker would use classic HTTP types")
    indexed = []
    for function in functions:
        bindings = _bindings(function)
        trigger = next((b for b in bindings if b["type"] == "httpTrigger"), None)
        if trigger is None:
            continue
        handler = function.get_user_function()
        check_signature(function.get_function_name(), handler, bindings)
        client = next((b["name"] for b in bindings if b["type"] == "durableClient"), None)
        methods = frozenset(str(getattr(m, "value", m)).upper() for m in trigger.get("methods") or ())
        indexed.append(HttpFunction(function.get_function_name(), compile_route(prefix, trigger.get("route") or
                                    function.get_function_name()), methods, handler, trigger["name"], client))
    return indexed


def check_signature(name: str, handler: Callable[..., Any], bindings: list[dict[str, Any]]) -> None:
    """The Python worker's load-time checks that apply to our functions (HTTP streams enabled)."""
    params = set(inspect.signature(handler).parameters)
    bound = {b["name"] for b in bindings} - {"$return"}
    if params != bound:
        raise FunctionLoadError(f"{name}: parameters {sorted(params)} do not match bindings {sorted(bound)}")
    hints = typing.get_type_hints(handler)  # what the worker resolves; string annotations must resolve too
    for binding in bindings:
        hint = hints.get(binding["name"])
        if binding["type"] == "httpTrigger" and hint is not None and not RequestTrackerMeta.check_type(hint):
            raise FunctionLoadError(f"{name}: {binding['name']}: {hint!r} is not the HTTP streams Request type")
        if binding["type"] == "durableClient" and hint not in (None, str, bytes):
            raise FunctionLoadError(f"{name}: the durable client parameter must arrive as str, not {hint!r}")
    returns = hints.get("return")
    if returns is not None and not ResponseTrackerMeta.check_type(returns):
        raise FunctionLoadError(f"{name}: return annotation {returns!r} is not an HTTP streams response type")


# --- Durable entities --------------------------------------------------------------------------


@dataclass
class EntityOperation:
    """One entity signal as the Durable extension received it, and what became of it."""

    entity: str  # as signalled (the extension matches names case-insensitively)
    key: str
    operation: str
    raw_input: str | None  # the request body: what the entity function gets as the operation's input
    url: str
    exists_before: bool | None = None  # the `exists` and `state` the batch ran with
    state_before: str | None = None
    result: Any = None  # the operation's result, decoded
    is_error: bool | None = None
    failure: str | None = None  # the whole batch failed (an exception escaped the entity function)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def input(self) -> Any:
        # Decoded the way DurableEntityContext.get_input does: JSON text of JSON text.
        return None if self.raw_input is None else json.loads(json.loads(self.raw_input))

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def finished(self, within_seconds: float = 60.0) -> EntityOperation:
        """Wait (from any event loop) until the operation has run."""
        if not await asyncio.to_thread(self._done.wait, within_seconds):
            raise TimeoutError(f"{self.operation} on {self.entity}@{self.key} did not finish in {within_seconds} s")
        return self


@dataclass(frozen=True)
class EntityFunction:
    handler: Callable[..., str]
    context_param: str


@dataclass
class _EntitySnapshot:
    exists: bool = False
    state: str | None = None  # entityState as the entity function returned it (JSON text)


class EntityRunner:
    """Runs signalled operations: a queue per entity id, one batch at a time per id, in worker threads."""

    def __init__(self, functions: dict[str, EntityFunction], max_concurrent: int) -> None:
        self._functions = functions  # by lowercased entity name
        # At most host.json's maxConcurrentEntityFunctions batches run at once, each holding a thread.
        self._executor = ThreadPoolExecutor(max_concurrent, thread_name_prefix="entity")
        self._queues: dict[tuple[str, str], list[EntityOperation]] = {}
        self._drains: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._states: dict[tuple[str, str], _EntitySnapshot] = {}

    def enqueue(self, operation: EntityOperation) -> None:
        """Called on the server's loop; the drain task of the entity id takes it with the next batch."""
        entity_id = (operation.entity.lower(), operation.key)
        self._queues.setdefault(entity_id, []).append(operation)
        if entity_id not in self._drains:
            self._drains[entity_id] = asyncio.create_task(self._drain(entity_id), name=f"entity:{entity_id}")

    async def _drain(self, entity_id: tuple[str, str]) -> None:
        loop = asyncio.get_running_loop()
        try:
            while batch := self._queues.pop(entity_id, None):
                await loop.run_in_executor(self._executor, self._run_batch, entity_id, batch)
        finally:
            del self._drains[entity_id]

    def _run_batch(self, entity_id: tuple[str, str], batch: list[EntityOperation]) -> None:
        name, key = entity_id
        before = self._states.get(entity_id, _EntitySnapshot())
        for operation in batch:
            operation.exists_before, operation.state_before = before.exists, before.state
        try:
            output = self._call_entity(name, key, before, batch)
        except Exception as error:  # the host fails the batch and keeps the previous state
            logger.exception("entity %s@%s failed", name, key)
            for operation in batch:
                operation.failure = f"{type(error).__name__}: {error}"
                operation._done.set()
            return
        exists = bool(output.get("entityExists"))
        self._states[entity_id] = _EntitySnapshot(exists, output.get("entityState") if exists else None)
        for operation, result in zip(batch, output["results"], strict=True):
            operation.is_error = bool(result.get("isError"))
            operation.result = json.loads(result["result"]) if result.get("result") is not None else None
            operation._done.set()

    def _call_entity(self, name: str, key: str, before: _EntitySnapshot,
                     batch: list[EntityOperation]) -> dict[str, Any]:
        function = self._functions.get(name)
        if function is None:
            raise LookupError(f"no entity function named {name!r}; the app has {sorted(self._functions)}")
        payload = {
            "self": {"name": name, "key": key}, "exists": before.exists, "state": before.state,
            "batch": [{"name": op.operation, "input": op.raw_input} for op in batch],
        }
        output = json.loads(function.handler(**{function.context_param: func.EntityContext(json.dumps(payload))}))
        if len(output.get("results", ())) != len(batch):
            raise RuntimeError(f"the entity returned {len(output.get('results', ()))} results for {len(batch)} ops")
        return dict(output)

    def state(self, entity: str, key: str) -> Any:
        snapshot = self._states.get((entity.lower(), key))
        return None if snapshot is None or snapshot.state is None else json.loads(snapshot.state)

    async def idle(self, grace_seconds: float) -> None:
        """Wait for every queued operation to run (up to `grace_seconds`), then release the threads."""
        if self._drains:
            await asyncio.wait(list(self._drains.values()), timeout=grace_seconds)
        self._executor.shutdown(wait=False, cancel_futures=True)


def index_entity_functions(functions: list[Any]) -> dict[str, EntityFunction]:
    entities = {}
    for function in functions:
        trigger = next((b for b in _bindings(function) if b["type"] == "entityTrigger"), None)
        if trigger is not None:
            name = trigger.get("entityName") or function.get_function_name()
            entities[name.lower()] = EntityFunction(function.get_user_function(), trigger["name"])
    return entities


def durable_client_binding(base_url: str, hub: str) -> str:
    """The durableClient binding value the host hands a function, pointing at our RPC endpoint."""
    webhooks = f"{base_url}/runtime/webhooks/durabletask"
    query = f"taskHub={hub}&connection=Storage"
    instance = f"{webhooks}/instances/INSTANCEID"
    return json.dumps({
        "taskHubName": hub,
        "creationUrls": {
            "createNewInstancePostUri": f"{webhooks}/orchestrators/{{functionName}}[/{{instanceId}}]?{query}",
            "createAndWaitOnNewInstancePostUri":
                f"{webhooks}/orchestrators/{{functionName}}[/{{instanceId}}]?timeout={{timeoutInSeconds}}"
                f"&pollingInterval={{intervalInSeconds}}&{query}",
        },
        "managementUrls": {
            "id": "INSTANCEID",
            "statusQueryGetUri": f"{instance}?{query}",
            "sendEventPostUri": f"{instance}/raiseEvent/{{eventName}}?{query}",
            "terminatePostUri": f"{instance}/terminate?reason={{text}}&{query}",
            "rewindPostUri": f"{instance}/rewind?reason={{text}}&{query}",
            "purgeHistoryDeleteUri": f"{instance}?{query}",
            "restartPostUri": f"{instance}/restart?{query}",
            "suspendPostUri": f"{instance}/suspend?reason={{text}}&{query}",
            "resumePostUri": f"{instance}/resume?reason={{text}}&{query}",
        },
        "baseUrl": webhooks,
        "requiredQueryStringParameters": "",
        "rpcBaseUrl": f"{base_url}{RPC_PREFIX}",
        "httpBaseUrl": "",
        "maxGrpcMessageSizeInBytes": 0,
        "grpcHttpClientTimeout": "00:01:40",
    })


# --- The server --------------------------------------------------------------------------------


class _Endpoints:
    """The ASGI routes: the Durable RPC stand-in, then every other path to the HTTP functions."""

    def __init__(self, functions: list[HttpFunction], entities: EntityRunner, host: FunctionsHost) -> None:
        self._functions = functions
        self._entities = entities
        self._host = host

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route(RPC_PREFIX + "entities/{name}/{key}", self.signal_entity, methods=["POST"]),
            Route(RPC_PREFIX + "{rest:path}", self.rpc_not_implemented, methods=ALL_METHODS),
            Route("/{path:path}", self.invoke_function, methods=ALL_METHODS),
        ])

    async def signal_entity(self, request: Request) -> Response:
        operation = request.query_params.get("op")
        if not operation:
            return JSONResponse({"error": "an entity signal needs ?op=<operation>"}, status_code=400)
        body = (await request.body()).decode("utf-8")
        signal = EntityOperation(request.path_params["name"], request.path_params["key"], operation,
                                 body or None, str(request.url))
        self._host.dispatches.append(signal)
        self._entities.enqueue(signal)
        return Response(status_code=202)

    async def rpc_not_implemented(self, request: Request) -> Response:
        message = f"the test host implements entity signals only, not {request.method} {request.url.path}"
        return JSONResponse({"error": message}, status_code=501)

    async def invoke_function(self, request: Request) -> Response:
        for function in self._functions:
            route_values = function.match(request.method, request.url.path)
            if route_values is not None:
                return await self._invoke(function, request, route_values)
        return JSONResponse({"error": f"no function serves {request.method} {request.url.path}"}, status_code=404)

    async def _invoke(self, function: HttpFunction, request: Request, route_values: dict[str, str]) -> Response:
        # The worker's catch-all request, with the route values as its path params.
        RequestTrackerMeta.get_synchronizer().sync_route_params(request, route_values)
        kwargs: dict[str, Any] = {function.request_param: request}
        if function.client_param:
            kwargs[function.client_param] = self._host.client_binding
        try:
            if inspect.iscoroutinefunction(function.handler):
                response = await function.handler(**kwargs)
            else:
                response = await run_in_threadpool(function.handler, **kwargs)
            if not isinstance(response, Response):
                raise TypeError(f"{function.name} returned {type(response).__name__}, not a Starlette Response")
        except Exception as error:
            logger.exception("function %s failed", function.name)
            self._host.function_errors.append(error)
            return PlainTextResponse("Internal Server Error", status_code=500)
        return response


class FunctionsHost:
    """function_app.py behind uvicorn on 127.0.0.1, in a background thread with its own event loop.

        with FunctionsHost(redis_url, {"OFFLINE_MODEL_CHUNKS_PER_SECOND": "0"}) as host:
            httpx.post(f"{host.base_url}/api/agents/TravelPlanner/run", ...)
            host.dispatches[-1]  # the entity signal, and its result once `await ...finished()`
    """

    def __init__(self, redis_url: str, settings: Mapping[str, str] | None = None, *,
                 host_json: Path = ROOT / "host.json", shutdown_timeout: float = 30.0) -> None:
        self.environ = {"FUNCTIONS_WORKER_RUNTIME": "python", "PYTHON_ENABLE_INIT_INDEXING": "1",
                        "REDIS_CONNECTION_STRING": redis_url, **(settings or {})}
        self.config = HostConfig.read(host_json, {**os.environ, **self.environ})
        self.base_url = ""
        self.client_binding = ""
        self.dispatches: list[EntityOperation] = []
        self.function_errors: list[BaseException] = []
        self.app: LoadedApp | None = None  # function_app and its indexed functions
        self._shutdown_timeout = shutdown_timeout
        self._saved_environ: dict[str, str | None] = {}
        self._outer_environ: dict[str, str] | None = None  # the app's environment before this host's reload
        self._outer_session: Any = None  # the durable client's session of a host running around this one
        self._entities: EntityRunner | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> FunctionsHost:
        self._saved_environ = {name: os.environ.get(name) for name in self.environ}
        os.environ.update(self.environ)
        outer = loaded_environ()
        self._outer_environ = outer if outer is not None and outer != self.environ else None
        self._outer_session, http_utils._client_session = http_utils._client_session, None
        try:
            self.app = load_function_app(self.environ)
            functions = index_http_functions(self.app.functions, self.config.route_prefix)
            self._entities = EntityRunner(index_entity_functions(self.app.functions),
                                          self.config.max_concurrent_entities)
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            self.base_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
            self.client_binding = durable_client_binding(self.base_url, self.config.hub_name)
            app = _Endpoints(functions, self._entities, self).app()
            config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False,
                                    timeout_graceful_shutdown=5)
            self._server = uvicorn.Server(config)
            self._thread = threading.Thread(target=asyncio.run, args=(self._serve(listener),),
                                            name="functions-host", daemon=True)
            self._thread.start()
            self._wait_until_started(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_started(self, timeout: float) -> None:
        assert self._server is not None and self._thread is not None
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the functions host's server thread ended during start-up (see the log)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the functions host did not start in {timeout} s")
            time.sleep(0.01)

    async def _serve(self, listener: socket.socket) -> None:
        assert self._server is not None and self._entities is not None
        try:
            await self._server.serve(sockets=[listener])
        finally:
            await self._entities.idle(self._shutdown_timeout)
            # The durable client's shared aiohttp session belongs to this loop; the next host has its own.
            await http_utils._close_session()
            listener.close()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(self._shutdown_timeout + 10)
        self._server = self._thread = None
        for name, value in self._saved_environ.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_environ = {}
        if self._outer_environ is not None:
            load_function_app(self._outer_environ)  # the outer host's environment is in os.environ again
            self._outer_environ = None
        if self._outer_session is not None:
            http_utils._client_session, self._outer_session = self._outer_session, None

    def __enter__(self) -> FunctionsHost:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- what tests inspect

    def entity_state(self, entity: str, key: str) -> Any:
        """The entity's current state (decoded), or None before its first operation."""
        assert self._entities is not None, "start the host first"
        return self._entities.state(entity, key)

    def dispatches_to(self, key: str) -> list[EntityOperation]:
        return [d for d in self.dispatches if d.key == key]

