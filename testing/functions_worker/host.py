"""A stand-in for the Azure Functions host's side of the Python worker, for tests: `func start`, reduced.

    <worker venv>/bin/python testing/functions_worker/host.py --app PACKAGE_DIR --port 7071

It starts the worker (worker.py driving the real azure_functions_runtime) as the host does and plays the
host's part of the protocol:

- gRPC: serves `AzureFunctionsRpcMessages.FunctionRpc/EventStream` on loopback, starts the worker with the
  host's command line and the app settings as its environment, waits for StartStream, then sends
  WorkerInitRequest, FunctionsMetadataRequest (the worker indexes function_app.py) and a FunctionLoadRequest
  per function. Invocations are InvocationRequest/InvocationResponse pairs matched by invocation id.
- HTTP front door: `/{routePrefix}/<route>` (host.json, default `api`) goes to the HTTP function whose route
  template and methods match, else 404 with an empty body, as the host answers. The app uses HTTP streams,
  so the worker reports an `HttpUri` at init: the host sends an InvocationRequest carrying only the route
  values (and the other input bindings) and forwards the HTTP request itself to that URI with the
  `x-ms-invocation-id` header; the worker's response is relayed chunk by chunk as it arrives. Function keys
  are not checked, as under `func start`.
- Durable extension: a `durableClient` input binding gets the JSON the extension produces, whose
  `rpcBaseUrl` points at this host's second listener. Only entity signals are served
  (`POST {rpcBaseUrl}entities/{name}/{key}?op=...`; anything else is 501): each is queued per entity id
  (the name lowercased, as the extension does) and run one batch per id at a time, as an InvocationRequest
  of the entity function with the batch JSON (`self`, `exists`, `state`, `batch`) as a string; the
  `entityState` it returns is passed in with the next batch. At most host.json's
  `maxConcurrentEntityFunctions` batches are outstanding at once.
- Inspection, for tests: `GET /admin/functions` (the indexed functions and their bindings, as the worker
  reported them), `GET /admin/host/status` (the worker's capabilities and metadata) and
  `GET /admin/durable/signals[?key=K][&wait=SECONDS]` (every entity signal and what became of it; with
  `wait`, once all of them have run).

Not modelled: orchestrations, entity calls and queries, timers, retries, host.json's function timeout,
durable replays after a crash (there is no durable store), keys, and the host's own restarts of the worker.
SIGTERM stops the host: queued entity batches and outstanding invocations finish (up to 8 s), then
WorkerTerminate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import rpc as protos  # this folder is sys.path[0] when run as a script
from aiohttp import web

logger = logging.getLogger("functions_host")

HOST_VERSION = "4.1040.0"  # reported to the worker
WORKER = Path(__file__).resolve().parent / "worker.py"
INVOCATION_ID_HEADER = "x-ms-invocation-id"  # how the worker's HTTP server pairs a request with its invocation
# Never forwarded by a proxy (RFC 9110 7.6.1); Host is the destination's own.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host"}
MAX_MESSAGE = 2**31 - 1  # the host allows messages this large both ways


class HostError(RuntimeError):
    """The worker refused or failed a host request (init, indexing, load), or went away."""


@dataclass(frozen=True)
class HostConfig:
    route_prefix: str
    hub_name: str
    max_concurrent_entities: int

    @classmethod
    def read(cls, app: Path, environ: Mapping[str, str]) -> HostConfig:
        extensions = json.loads((app / "host.json").read_text(encoding="utf-8")).get("extensions", {})
        durable = extensions.get("durableTask", {})
        hub = re.sub(r"%(\w+)%", lambda m: environ.get(m[1], ""), str(durable.get("hubName", "TestHubName")))
        return cls(route_prefix=str(extensions.get("http", {}).get("routePrefix", "api")).strip("/"),
                   hub_name=hub or "TestHubName",
                   max_concurrent_entities=int(durable.get("maxConcurrentEntityFunctions", 5 * (os.cpu_count() or 1))))


_ROUTE_PARAM = re.compile(r"\{(\*?)([A-Za-z_]\w*)(\?)?(?::[^{}]*)?\}")


def compile_route(prefix: str, template: str) -> re.Pattern[str]:
    """A regex for a route template: `{name}`, `{name:constraint}` (not checked), `{name?}`, `{*rest}`."""
    pattern, position = "", 0
    template = template.strip("/")
    for match in _ROUTE_PARAM.finditer(template):
        pattern += re.escape(template[position:match.start()])
        body = ".*" if match[1] else "[^/]+"
        pattern += f"(?P<{match[2]}>{body})" + ("?" if match[3] else "")
        position = match.end()
    pattern += re.escape(template[position:])
    head = f"/{prefix}/" if prefix else "/"
    return re.compile(re.escape(head) + pattern + "/?", re.IGNORECASE)


@dataclass
class IndexedFunction:
    """One function as the worker's FunctionMetadataResponse described it."""

    name: str
    function_id: str
    metadata: Any  # RpcFunctionMetadata, sent back in the FunctionLoadRequest
    bindings: list[dict[str, Any]]  # raw_bindings decoded: what a function.json would say
    route: re.Pattern[str] | None = None

    @property
    def trigger(self) -> dict[str, Any]:
        return next(b for b in self.bindings if str(b.get("type", "")).endswith("Trigger"))

    def methods(self) -> set[str]:
        return {str(m).upper() for m in self.trigger.get("methods") or ()}


@dataclass
class Invocation:
    """One InvocationRequest and its response (times from time.monotonic())."""

    invocation_id: str
    function: str
    sent_at: float
    finished_at: float | None = None
    response: Any = None  # InvocationResponse

    @property
    def ok(self) -> bool:
        return self.response is not None and self.response.result.status == protos.StatusResult.Success

    @property
    def error(self) -> str:
        return "no response" if self.response is None else self.response.result.exception.message


@dataclass
class EntitySignal:
    """One entity operation signalled through the durable client, and what became of it."""

    index: int
    entity: str  # as signalled
    key: str
    operation: str
    raw_input: str | None  # the request body: the operation's input, JSON text of JSON text
    url: str
    exists_before: bool | None = None  # what the batch it ran in was given
    state_before: str | None = None
    result: Any = None  # the operation's result, decoded
    is_error: bool | None = None
    failure: str | None = None  # the whole batch failed
    started_at: float | None = None
    finished_at: float | None = None
    _done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def public(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")} | {"done": self._done.is_set()}


def durable_client_binding(rpc_base_url: str, hub: str) -> str:
    """The `durableClient` binding value, shaped like the Durable extension's (only `rpcBaseUrl` is served)."""
    webhooks = f"{rpc_base_url}runtime/webhooks/durabletask"
    query = f"taskHub={hub}&connection=Storage"
    instance = f"{webhooks}/instances/INSTANCEID"
    return json.dumps({
        "taskHubName": hub,
        "creationUrls": {
            "createNewInstancePostUri": f"{webhooks}/orchestrators/{{functionName}}[/{{instanceId}}]?{query}",
            "createAndWaitOnNewInstancePostUri": f"{webhooks}/orchestrators/{{functionName}}[/{{instanceId}}]"
                                                 f"?timeout={{timeoutInSeconds}}&pollingInterval={{intervalInSeconds}}"
                                                 f"&{query}",
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
        "rpcBaseUrl": rpc_base_url,
        "httpBaseUrl": "",
        "maxGrpcMessageSizeInBytes": 0,
        "grpcHttpClientTimeout": "00:01:40",
    })


class EntityScheduler:
    """Signalled operations run through the worker: a queue per entity id, one batch per id at a time."""

    def __init__(self, host: FunctionsHost, max_concurrent: int) -> None:
        self._host = host
        self._slots = asyncio.Semaphore(max_concurrent)  # maxConcurrentEntityFunctions
        self.signals: list[EntitySignal] = []
        self._queues: dict[tuple[str, str], list[EntitySignal]] = {}
        self._drains: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._states: dict[tuple[str, str], tuple[bool, str | None]] = {}  # (exists, entityState JSON)
        self.changed = asyncio.Condition()

    def signal(self, entity: str, key: str, operation: str, raw_input: str | None, url: str) -> None:
        signal = EntitySignal(len(self.signals), entity, key, operation, raw_input, url)
        self.signals.append(signal)
        entity_id = (entity.lower(), key)
        self._queues.setdefault(entity_id, []).append(signal)
        if entity_id not in self._drains:
            self._drains[entity_id] = asyncio.create_task(self._drain(entity_id), name=f"entity:{entity_id}")

    async def idle(self, within: float) -> None:
        deadline = time.monotonic() + within
        while self._drains and time.monotonic() < deadline:
            await asyncio.wait(list(self._drains.values()), timeout=deadline - time.monotonic())

    async def _drain(self, entity_id: tuple[str, str]) -> None:
        try:
            while batch := self._queues.pop(entity_id, None):
                async with self._slots:
                    await self._run_batch(entity_id, batch)
                async with self.changed:
                    self.changed.notify_all()
        finally:
            del self._drains[entity_id]

    async def _run_batch(self, entity_id: tuple[str, str], batch: list[EntitySignal]) -> None:
        name, key = entity_id
        exists, state = self._states.get(entity_id, (False, None))
        payload = {"self": {"name": name, "key": key}, "exists": exists, "state": state,
                   "batch": [{"name": s.operation, "signal": True, "input": s.raw_input} for s in batch]}
        started = time.monotonic()
        for s in batch:
            s.exists_before, s.state_before, s.started_at = exists, state, started
        try:
            function = self._host.entity_function(name)
            record = await self._host.invoke(function, [protos.ParameterBinding(
                name=function.trigger["name"], data=protos.TypedData(string=json.dumps(payload)))])
            if not record.ok:
                raise HostError(f"the entity function failed: {record.error}")
            returned = record.response.return_value
            output = json.loads(getattr(returned, returned.WhichOneof("data")))
            results = output.get("results") or []
            if len(results) != len(batch):
                raise HostError(f"{len(results)} results for a batch of {len(batch)}")
        except Exception as error:  # the extension keeps the previous state and fails the batch
            logger.exception("entity batch %s failed", entity_id)
            for s in batch:
                s.failure, s.finished_at = f"{type(error).__name__}: {error}", time.monotonic()
                s._done.set()
            return
        self._states[entity_id] = (bool(output.get("entityExists")), output.get("entityState"))
        for s, result in zip(batch, results, strict=True):
            s.is_error = bool(result.get("isError"))
            raw = result.get("result")
            s.result = json.loads(raw) if isinstance(raw, str) else raw
            s.finished_at = time.monotonic()
            s._done.set()

    def state(self, entity: str, key: str) -> Any:
        exists, state = self._states.get((entity.lower(), key), (False, None))
        return json.loads(state) if exists and state is not None else None


class FunctionsHost:
    """One host with one Python worker process."""

    def __init__(self, app: Path, settings: Mapping[str, str], *, port: int, log_dir: Path) -> None:
        self.app = app.resolve()
        self.settings = {"FUNCTIONS_WORKER_RUNTIME": "python", "AzureWebJobsScriptRoot": str(self.app),
                         **settings}
        self.config = HostConfig.read(self.app, self.settings)
        self.port = port
        self.log_dir = log_dir
        self.worker_id, self.request_id = str(uuid.uuid4()), str(uuid.uuid4())
        self.worker_capabilities: dict[str, str] = {}
        self.worker_metadata: dict[str, str] = {}
        self.functions: list[IndexedFunction] = []
        self.entities = EntityScheduler(self, self.config.max_concurrent_entities)
        self.rpc_base_url = ""
        self.client_binding = ""
        self._outbound: asyncio.Queue[Any] = asyncio.Queue()
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._grpc: grpc.aio.Server | None = None
        self._runners: list[web.AppRunner] = []
        self._proxy: aiohttp.ClientSession | None = None
        self._process: asyncio.subprocess.Process | None = None

    # --- lifecycle

    async def start(self) -> None:
        grpc_port = await self._start_grpc()
        await self._serve(self._front_door(), self.port)
        self.rpc_base_url = f"http://127.0.0.1:{await self._serve(self._durable_rpc(), 0)}/durabletask/"
        self.client_binding = durable_client_binding(self.rpc_base_url, self.config.hub_name)
        # A new connection per request: after an unhandled exception the worker's server answers 500 and closes
        # the connection, and a pooled connection reused in that moment would fail the next request.
        self._proxy = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0),
                                            auto_decompress=False,
                                            timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
        await self._start_worker(grpc_port)
        await asyncio.wait_for(asyncio.shield(self._connected), 60)
        await self._initialize()

    async def stop(self, drain_seconds: float = 8.0, grace_seconds: float = 3.0) -> None:
        if self._process is not None and self._process.returncode is None and self._connected.done() \
                and self._connected.exception() is None:
            deadline = time.monotonic() + drain_seconds
            await self.entities.idle(drain_seconds)
            outstanding = [f for key, f in self._pending.items() if key.startswith("invocation:")]
            if outstanding:
                await asyncio.wait(outstanding, timeout=max(0.0, deadline - time.monotonic()))
            self._send(protos.StreamingMessage(worker_terminate=protos.WorkerTerminate(
                grace_period={"seconds": int(grace_seconds)})))
            try:
                await asyncio.wait_for(self._process.wait(), grace_seconds)
            except TimeoutError:
                pass
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
        self._outbound.put_nowait(None)
        if self._proxy is not None:
            await self._proxy.close()
        for runner in self._runners:
            await runner.cleanup()
        if self._grpc is not None:
            await self._grpc.stop(grace=1)

    # --- gRPC

    async def _start_grpc(self) -> int:
        self._grpc = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                                              ("grpc.max_send_message_length", MAX_MESSAGE)])
        handler = grpc.stream_stream_rpc_method_handler(self._event_stream, request_deserializer=protos.deserialize,
                                                        response_serializer=protos.serialize)
        self._grpc.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            protos.SERVICE, {"EventStream": handler}),))
        port = self._grpc.add_insecure_port("127.0.0.1:0")
        await self._grpc.start()
        return port

    async def _event_stream(self, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        first = await anext(aiter(requests))
        if first.WhichOneof("content") != "start_stream" or first.start_stream.worker_id != self.worker_id:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "expected StartStream from our worker")
        if not self._connected.done():
            self._connected.set_result(None)
        reader = asyncio.create_task(self._read_stream(requests))
        try:
            while (message := await self._outbound.get()) is not None:
                yield message
        finally:
            reader.cancel()

    async def _read_stream(self, requests: AsyncIterator[Any]) -> None:
        async for message in requests:
            kind = message.WhichOneof("content")
            if kind == "rpc_log":
                log = message.rpc_log
                if log.level >= protos.RpcLog.Warning:
                    print(f"[worker {protos.RpcLog.Level.Name(log.level)}] {log.category}: {log.message}", flush=True)
                continue
            body = getattr(message, kind)
            key = {"invocation_response": f"invocation:{getattr(body, 'invocation_id', '')}",
                   "function_load_response": f"load:{getattr(body, 'function_id', '')}"}.get(
                kind, {"worker_init_response": "init", "function_metadata_response": "metadata"}.get(kind, ""))
            future = self._pending.pop(key, None)
            if future is not None and not future.done():
                future.set_result(body)
            else:
                logger.warning("unexpected %s from the worker", kind)

    def _send(self, message: Any) -> None:
        message.request_id = message.request_id or self.request_id
        self._outbound.put_nowait(message)

    async def _request(self, key: str, message: Any, within: float | None = None) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        self._send(message)
        return await asyncio.wait_for(future, within)

    def _worker_log(self) -> Any:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return open(self.log_dir / f"worker-{self.worker_id[:8]}.log", "wb")  # noqa: SIM115 - the child's

    async def _start_worker(self, grpc_port: int) -> None:
        log = self._worker_log()
        command = [sys.executable, str(WORKER), "--host", "127.0.0.1", "--port", str(grpc_port),
                   "--workerId", self.worker_id, "--requestId", self.request_id,
                   "--grpcMaxMessageLength", str(MAX_MESSAGE)]
        self._process = await asyncio.create_subprocess_exec(*command, cwd=self.app, stdout=log, stderr=log,
                                                             env={**os.environ, **self.settings})
        log.close()
        asyncio.create_task(self._watch_worker())

    async def _watch_worker(self) -> None:
        """A worker that exits fails whatever waits on it, rather than leaving it hanging."""
        assert self._process is not None
        code = await self._process.wait()
        error = HostError(f"the worker exited with code {code}; see {self.log_dir}")
        if not self._connected.done():
            self._connected.set_exception(error)
        for key, future in list(self._pending.items()):
            if not future.done():
                future.set_exception(error)
            self._pending.pop(key, None)

    async def _initialize(self) -> None:
        init = await self._request("init", protos.StreamingMessage(worker_init_request=protos.WorkerInitRequest(
            host_version=HOST_VERSION,
            capabilities={"RpcHttpBodyOnly": "true", "RpcHttpTriggerMetadataRemoved": "true",
                          "RawHttpBodyBytes": "true", "TypedDataCollection": "true",
                          "HandlesWorkerTerminateMessage": "true", "HandlesInvocationCancelMessage": "true"},
            log_categories={"Function": protos.RpcLog.Information},
            worker_directory=str(WORKER.parent), function_app_directory=str(self.app))), 120)
        if init.result.status != protos.StatusResult.Success:
            raise HostError(f"WorkerInitRequest failed: {init.result.exception.message}\n"
                            f"{init.result.exception.stack_trace}")
        self.worker_capabilities = dict(init.capabilities)
        meta = init.worker_metadata
        self.worker_metadata = {"runtime_name": meta.runtime_name, "runtime_version": meta.runtime_version,
                                "worker_version": meta.worker_version}
        if "HttpUri" not in self.worker_capabilities:
            raise HostError("the worker reported no HttpUri: the app does not use the HTTP streams extension")

        metadata = await self._request("metadata", protos.StreamingMessage(
            functions_metadata_request=protos.FunctionsMetadataRequest(function_app_directory=str(self.app))), 120)
        if metadata.result.status != protos.StatusResult.Success or metadata.use_default_metadata_indexing:
            raise HostError(f"indexing failed: {metadata.result.exception.message}\n"
                            f"{metadata.result.exception.stack_trace}")
        for item in metadata.function_metadata_results:
            function = IndexedFunction(item.name, item.function_id, item, [json.loads(b) for b in item.raw_bindings])
            if function.trigger.get("type") == "httpTrigger":
                function.route = compile_route(self.config.route_prefix, function.trigger.get("route") or item.name)
            self.functions.append(function)

        loads = await asyncio.gather(*(self._request(f"load:{f.function_id}", protos.StreamingMessage(
            function_load_request=protos.FunctionLoadRequest(function_id=f.function_id, metadata=f.metadata)), 120)
            for f in self.functions))
        failed = [(f.name, r.result.exception.message) for f, r in zip(self.functions, loads, strict=True)
                  if r.result.status != protos.StatusResult.Success]
        if failed:
            raise HostError(f"FunctionLoadRequest failed: {failed}")

    def entity_function(self, entity_name: str) -> IndexedFunction:
        for function in self.functions:
            trigger = function.trigger
            if trigger.get("type") == "entityTrigger" and \
                    str(trigger.get("entityName") or function.name).lower() == entity_name.lower():
                return function
        raise HostError(f"no entity function for {entity_name!r}")

    async def invoke(self, function: IndexedFunction, inputs: list[Any],
                     invocation_id: str | None = None) -> Invocation:
        record = Invocation(invocation_id or str(uuid.uuid4()), function.name, time.monotonic())
        request = protos.InvocationRequest(
            invocation_id=record.invocation_id, function_id=function.function_id, input_data=inputs,
            trace_context=protos.RpcTraceContext(trace_parent=f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"),
            retry_context=protos.RetryContext(retry_count=0, max_retry_count=0))
        try:
            record.response = await self._request(f"invocation:{record.invocation_id}",
                                                   protos.StreamingMessage(invocation_request=request))
        finally:
            record.finished_at = time.monotonic()
        return record

    # --- HTTP

    async def _serve(self, app: web.Application, port: int) -> int:
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        self._runners.append(runner)
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    def _front_door(self) -> web.Application:
        app = web.Application(client_max_size=100 * 1024 * 1024)  # the host's request size limit
        app.router.add_get("/admin/functions", self._admin_functions)
        app.router.add_get("/admin/host/status", self._admin_status)
        app.router.add_get("/admin/durable/signals", self._admin_signals)
        app.router.add_route("*", "/{tail:.*}", self._route)
        return app

    def _durable_rpc(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/durabletask/entities/{name}/{key}", self._signal_entity)
        app.router.add_route("*", "/{tail:.*}", self._durable_not_served)
        return app

    async def _route(self, request: web.Request) -> web.StreamResponse:
        for function in self.functions:
            match = function.route.fullmatch(request.path) if function.route else None
            methods = function.methods()
            if match and (not methods or request.method in methods):
                values = {k: v for k, v in match.groupdict().items() if v is not None}
                return await self._proxy_http(function, request, values)
        return web.Response(status=404)

    def _other_inputs(self, function: IndexedFunction) -> list[Any]:
        inputs = []
        for binding in function.bindings:
            if binding.get("type") == "durableClient":
                inputs.append(protos.ParameterBinding(name=binding["name"],
                                                      data=protos.TypedData(string=self.client_binding)))
            elif str(binding.get("direction", "")).upper() == "IN" and not str(binding.get("type")).endswith("Trigger"):
                raise HostError(f"{function.name}: input binding {binding.get('type')!r} is not served here")
        return inputs

    async def _proxy_http(self, function: IndexedFunction, request: web.Request,
                          route_values: dict[str, str]) -> web.StreamResponse:
        assert self._proxy is not None
        invocation_id = str(uuid.uuid4())
        trigger = protos.ParameterBinding(name=function.trigger["name"],
                                          data=protos.TypedData(http=protos.RpcHttp(params=route_values)))
        # Both halves always go out: the worker's server waits for the invocation, the invocation for the request.
        invocation = asyncio.create_task(self.invoke(function, [trigger, *self._other_inputs(function)],
                                                     invocation_id))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers.update({INVOCATION_ID_HEADER: invocation_id, "X-Forwarded-Host": request.host,
                        "X-Forwarded-Proto": request.scheme, "X-Forwarded-For": request.remote or ""})
        body = await request.read()
        target = self.worker_capabilities["HttpUri"].rstrip("/") + request.path_qs
        try:
            async with self._proxy.request(request.method, target, headers=headers, data=body or None,
                                           allow_redirects=False) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for name, value in upstream.headers.items():
                    if name.lower() not in HOP_BY_HOP:
                        response.headers.add(name, value)
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, ConnectionResetError) as error:
            if request.transport is None or request.transport.is_closing():
                raise  # the client left; nothing to answer
            return web.Response(status=502, text=f"proxying to the worker failed: {error}")
        finally:
            invocation.add_done_callback(lambda task: self._log_failure(function, task))

    @staticmethod
    def _log_failure(function: IndexedFunction, task: asyncio.Task[Invocation]) -> None:
        if not task.cancelled() and task.exception() is None and not task.result().ok:
            print(f"[host] {function.name} failed: {task.result().error}", flush=True)

    async def _signal_entity(self, request: web.Request) -> web.Response:
        operation = request.query.get("op")
        if not operation:
            return web.json_response({"error": "an entity signal needs ?op=<operation>"}, status=400)
        body = (await request.read()).decode("utf-8")
        self.entities.signal(request.match_info["name"], request.match_info["key"], operation, body or None,
                             str(request.url))
        return web.Response(status=202)

    async def _durable_not_served(self, request: web.Request) -> web.Response:
        return web.json_response({"error": f"only entity signals are served here, not {request.method} "
                                           f"{request.path}"}, status=501)

    # --- inspection

    async def _admin_functions(self, request: web.Request) -> web.Response:
        return web.json_response([{"name": f.name, "id": f.function_id, "bindings": f.bindings}
                                  for f in self.functions])

    async def _admin_status(self, request: web.Request) -> web.Response:
        return web.json_response({"state": "Running", "capabilities": self.worker_capabilities,
                                  "worker": self.worker_metadata, "pid": self._process.pid if self._process else None})

    async def _admin_signals(self, request: web.Request) -> web.Response:
        key = request.query.get("key")
        chosen = [s for s in self.entities.signals if key is None or s.key == key]
        if "wait" in request.query:
            try:
                async with self.entities.changed:
                    await asyncio.wait_for(self.entities.changed.wait_for(
                        lambda: all(s._done.is_set() for s in chosen)), float(request.query["wait"]))
            except TimeoutError:
                return web.json_response({"error": "signals still running",
                                          "signals": [s.public() for s in chosen]}, status=504)
        states = {s.key: self.entities.state(s.entity, s.key) for s in chosen}
        return web.json_response({"signals": [s.public() for s in chosen], "states": states})


async def serve(app: Path, port: int, log_dir: Path) -> None:
    host = FunctionsHost(app, dict(os.environ), port=port, log_dir=log_dir)
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stopping.set)
    try:
        await host.start()
        print(f"Functions host stand-in on http://127.0.0.1:{port} (worker {host.worker_metadata}); "
              f"functions: {', '.join(f.name for f in host.functions)}", flush=True)
        await stopping.wait()
    finally:
        await host.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Functions host stand-in around the real Python worker")
    parser.add_argument("--app", type=Path, required=True, help="the app folder (the deployment package)")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--log-dir", type=Path, default=Path("."))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[host] %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args.app, args.port, args.log_dir))


if __name__ == "__main__":
    main()
