"""A stand-in for the Azure Functions *proxy worker*, driving the real `azure_functions_runtime`.

From Python 3.13 on, the Python worker comes in two halves:

- the proxy worker: the process the host starts. It owns the gRPC stream to the host, the protobuf
  classes, log forwarding and the app's sys.path. It ships inside the Functions host (Core Tools, the
  Azure images), not on PyPI, so it cannot be installed here.
- the library worker, `azure_functions_runtime` (PyPI azure-functions-runtime, pinned in the app's
  requirements.txt): indexing, binding conversion, the HTTP streams server, the thread pool and the
  invocation of functions. It is driven through five coroutines (`worker_init_request`,
  `functions_metadata_request`, `function_load_request`, `invocation_request`,
  `function_environment_reload_request`), each given an object with `.name`, `.request` (the host's
  StreamingMessage) and `.properties` (`protos` and `host` on init and reload), and returns the protobuf
  response built from `protos`.

This module is the first half, written for the tests, so that the second half, everything that decides
how the app behaves, is the real package, unmodified. Its command line is the one the host gives every
language worker:

    python worker.py --host 127.0.0.1 --port 50051 --workerId W --requestId R --grpcMaxMessageLength N

It connects to the host's FunctionRpc.EventStream, sends StartStream, then serves each host request in its
own task, as the proxy worker does (start the runtime's thread pool before init; put the app folder on
sys.path), and forwards Python logging to the host as RpcLog messages. It exits as soon as the stream
ends: the runtime's pool threads may still be inside a long entity call, and the host would kill the
process after its grace period anyway.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import logging
import os
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import rpc as protos  # this folder is sys.path[0] when run as a script

sys.path.remove(str(Path(__file__).resolve().parent))  # the app must not see the harness's modules

logger = logging.getLogger("azure_functions_worker.proxy")

# The invocation a log record belongs to, within the invocation's task (the runtime has its own
# context variable for its pool threads).
_invocation: contextvars.ContextVar[str | None] = contextvars.ContextVar("invocation", default=None)
_LEVELS = ((logging.CRITICAL, "Critical"), (logging.ERROR, "Error"), (logging.WARNING, "Warning"),
           (logging.INFO, "Information"), (logging.DEBUG, "Debug"))
_SYSTEM_LOGGERS = ("azure.functions", "azure_functions_runtime", "azure_functions_worker")


@dataclass
class WorkerRequest:
    name: str
    request: Any  # the host's StreamingMessage
    properties: dict[str, Any] = field(default_factory=dict)


class HostLogHandler(logging.Handler):
    """Every log record to the host as an RpcLog; callable from any thread."""

    def __init__(self, worker: ProxyWorker) -> None:
        super().__init__()
        self._worker = worker

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = next((name for number, name in _LEVELS if record.levelno >= number), "Trace")
            system = record.name == "azure.functions" or record.name.startswith(_SYSTEM_LOGGERS)
            log = protos.RpcLog(invocation_id=_invocation.get() or self._worker.runtime_invocation_id() or "",
                                category=record.name, level=getattr(protos.RpcLog, level),
                                message=self.format(record),
                                log_category=protos.RpcLog.System if system else protos.RpcLog.User)
            self._worker.send_threadsafe(protos.StreamingMessage(request_id=self._worker.request_id, rpc_log=log))
        except Exception:  # logging must never break the worker
            print(f"worker: a log record was lost: {traceback.format_exc()}", file=sys.stderr)


class ProxyWorker:
    def __init__(self, host: str, port: int, worker_id: str, request_id: str, max_message_length: int) -> None:
        self.host, self.port = host, port
        self.worker_id, self.request_id = worker_id, request_id
        self.max_message_length = max_message_length
        self.runtime: Any = None  # azure_functions_runtime, imported at WorkerInitRequest
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbound: asyncio.Queue[Any] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()

    def send_threadsafe(self, message: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._outbound.put_nowait(message)
        else:
            loop.call_soon_threadsafe(self._outbound.put_nowait, message)

    def runtime_invocation_id(self) -> str | None:
        variable = getattr(self.runtime, "invocation_id_cv", None)
        return variable.get() if variable is not None else None

    async def _requests_to_host(self) -> AsyncIterator[Any]:
        yield protos.StreamingMessage(request_id=self.request_id,
                                      start_stream=protos.StartStream(worker_id=self.worker_id))
        while (message := await self._outbound.get()) is not None:
            yield message

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        options = [("grpc.max_receive_message_length", self.max_message_length),
                   ("grpc.max_send_message_length", self.max_message_length)] if self.max_message_length > 0 else []
        async with grpc.aio.insecure_channel(f"{self.host}:{self.port}", options=options) as channel:
            await asyncio.wait_for(channel.channel_ready(), timeout=30)
            event_stream = channel.stream_stream(protos.EVENT_STREAM, request_serializer=protos.serialize,
                                                 response_deserializer=protos.deserialize)
            handler = HostLogHandler(self)
            handler.setFormatter(logging.Formatter("%(message)s"))
            root = logging.getLogger()
            root.addHandler(handler)  # from here on, logs go to the host (as the proxy worker does)
            root.setLevel(logging.INFO)
            try:
                async for message in event_stream(self._requests_to_host()):
                    if message.WhichOneof("content") == "worker_terminate":
                        break
                    task = asyncio.create_task(self._dispatch(message))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            finally:
                root.removeHandler(handler)
                self._outbound.put_nowait(None)
        leave(0)

    async def _dispatch(self, message: Any) -> None:
        kind = message.WhichOneof("content")
        handlers: dict[str, Callable[[Any], Awaitable[Any]]] = {
            "worker_init_request": self._worker_init,
            "function_environment_reload_request": self._environment_reload,
            "functions_metadata_request": self._functions_metadata,
            "function_load_request": self._function_load,
            "invocation_request": self._invocation,
            "worker_status_request": self._worker_status,
        }
        handler = handlers.get(kind or "")
        if handler is None:
            logger.error("unknown message from the host: %s", kind)
            return
        try:
            response = await handler(message)
        except Exception:  # the runtime reports failures in its responses; anything else is a bug here
            logger.exception("%s failed", kind)
            return
        self._outbound.put_nowait(response)

    def _load_runtime(self, app_directory: str) -> None:
        # The proxy worker puts the app folder on sys.path (so `import function_app` resolves) and then
        # imports the library worker found among the app's packages.
        if app_directory and app_directory not in sys.path:
            sys.path.insert(0, app_directory)
        if self.runtime is None:
            import azure_functions_runtime

            self.runtime = azure_functions_runtime

    async def _worker_init(self, message: Any) -> Any:
        self._load_runtime(message.worker_init_request.function_app_directory)
        self.runtime.start_threadpool_executor()  # sized by PYTHON_THREADPOOL_THREAD_COUNT
        response = await self.runtime.worker_init_request(
            WorkerRequest("WorkerInitRequest", message, {"protos": protos, "host": self.host}))
        return protos.StreamingMessage(request_id=self.request_id, worker_init_response=response)

    async def _environment_reload(self, message: Any) -> Any:
        self._load_runtime(message.function_environment_reload_request.function_app_directory)
        self.runtime.start_threadpool_executor()
        response = await self.runtime.function_environment_reload_request(
            WorkerRequest("FunctionEnvironmentReloadRequest", message, {"protos": protos, "host": self.host}))
        return protos.StreamingMessage(request_id=self.request_id, function_environment_reload_response=response)

    async def _functions_metadata(self, message: Any) -> Any:
        response = await self.runtime.functions_metadata_request(WorkerRequest("WorkerMetadataRequest", message))
        return protos.StreamingMessage(request_id=message.request_id, function_metadata_response=response)

    async def _function_load(self, message: Any) -> Any:
        response = await self.runtime.function_load_request(WorkerRequest("FunctionLoadRequest", message))
        return protos.StreamingMessage(request_id=self.request_id, function_load_response=response)

    async def _invocation(self, message: Any) -> Any:
        _invocation.set(message.invocation_request.invocation_id)  # this task's context only
        response = await self.runtime.invocation_request(WorkerRequest("FunctionInvocationRequest", message))
        return protos.StreamingMessage(request_id=self.request_id, invocation_response=response)

    async def _worker_status(self, message: Any) -> Any:
        return protos.StreamingMessage(request_id=message.request_id,
                                       worker_status_response=protos.WorkerStatusResponse())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Proxy-worker stand-in for azure_functions_runtime")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workerId", dest="worker_id", required=True)
    parser.add_argument("--requestId", dest="request_id", required=True)
    parser.add_argument("--grpcMaxMessageLength", dest="max_message_length", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="worker %(levelname)s %(name)s: %(message)s")
    worker = ProxyWorker(args.host, args.port, args.worker_id, args.request_id, args.max_message_length)
    try:
        asyncio.run(worker.run())
    except BaseException:
        traceback.print_exc()
    leave(1)


def leave(code: int) -> None:
    """Exit now, without cancelling the runtime's HTTP server or joining its pool threads (see the docstring)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
