"""Durable Task backends for the standalone host: the Durable Task Scheduler, or an embedded one.

With DURABLE_TASK_SCHEDULER_CONNECTION_STRING the host talks to the Durable
Task Scheduler (its local emulator or Azure) through durabletask-azuremanaged.
Without it, durabletask's in-memory backend runs inside the process, bound to
loopback only: runs survive nothing but need nothing.
"""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from agent_framework_durabletask import RunRequest
from durabletask.client import AsyncTaskHubGrpcClient
from durabletask.entities import EntityInstanceId
from durabletask.testing.in_memory_backend import InMemoryOrchestrationBackend
from durabletask.worker import ConcurrencyOptions, TaskHubGrpcWorker

from recorded_agent import run_log_options

logger = logging.getLogger(__name__)

# Entity operations each hold a worker thread while their agent streams; this many runs execute at once.
MAX_CONCURRENT_RUNS = 256


class LoopbackInMemoryBackend(InMemoryOrchestrationBackend):
    """durabletask's in-memory backend, served on 127.0.0.1 only (the stock one binds every interface)."""

    def start(self) -> str:
        self._shutdown_event.clear()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=MAX_CONCURRENT_RUNS + 16))
        from durabletask.internal import orchestrator_service_pb2_grpc as stubs

        stubs.add_TaskHubSidecarServiceServicer_to_server(self, self._server)
        self._port = self._server.add_insecure_port(f"127.0.0.1:{self._port}")
        self._server.start()
        return f"127.0.0.1:{self._port}"


@dataclass(frozen=True)
class SchedulerConnection:
    """A parsed Durable Task Scheduler connection string."""

    endpoint: str
    authentication: str
    client_id: str | None
    taskhub: str | None

    @property
    def host_address(self) -> str:
        return self.endpoint.split("://", 1)[-1].rstrip("/")

    @property
    def secure(self) -> bool:
        return self.endpoint.lower().startswith("https://")

    @classmethod
    def parse(cls, text: str) -> SchedulerConnection:
        parts = {}
        for item in text.split(";"):
            name, sep, value = item.partition("=")
            if sep:
                parts[name.strip().lower()] = value.strip()
        if "endpoint" not in parts:
            raise ValueError("DURABLE_TASK_SCHEDULER_CONNECTION_STRING needs Endpoint=...")
        return cls(parts["endpoint"], parts.get("authentication", "None"), parts.get("clientid"), parts.get("taskhub"))

    def credential(self, *, asynchronous: bool) -> Any:
        """The token credential the string asks for (None for the unauthenticated emulator)."""
        kind = self.authentication.lower()
        if kind == "none":
            return None
        if asynchronous:
            from azure.identity import aio as identity
        else:
            import azure.identity as identity  # type: ignore[no-redef]
        if kind == "managedidentity":
            return identity.ManagedIdentityCredential(client_id=self.client_id)
        if kind in ("defaultazure", "default"):
            return identity.DefaultAzureCredential(managed_identity_client_id=self.client_id)
        raise ValueError(
            f"unsupported Authentication={self.authentication!r}; use None, DefaultAzure or ManagedIdentity")


def _concurrency() -> ConcurrencyOptions:
    return ConcurrencyOptions(maximum_concurrent_entity_work_items=MAX_CONCURRENT_RUNS)


def make_worker(address: str | None, scheduler: SchedulerConnection | None, taskhub: str) -> TaskHubGrpcWorker:
    if scheduler is None:
        return TaskHubGrpcWorker(host_address=address, concurrency_options=_concurrency())
    from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker

    return DurableTaskSchedulerWorker(
        host_address=scheduler.host_address, taskhub=scheduler.taskhub or taskhub, secure_channel=scheduler.secure,
        token_credential=scheduler.credential(asynchronous=False), concurrency_options=_concurrency(),
    )


def make_client(address: str | None, scheduler: SchedulerConnection | None, taskhub: str) -> AsyncTaskHubGrpcClient:
    if scheduler is None:
        return AsyncTaskHubGrpcClient(host_address=address)
    from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient

    return AsyncDurableTaskSchedulerClient(
        host_address=scheduler.host_address, taskhub=scheduler.taskhub or taskhub, secure_channel=scheduler.secure,
        token_credential=scheduler.credential(asynchronous=True),
    )


def run_request(conversation_id: str, correlation_id: str, message: str) -> dict[str, Any]:
    """The entity operation input for a fire-and-forget, recorded run."""
    request = RunRequest(message=message, correlation_id=correlation_id, wait_for_response=False,
                         options=run_log_options(conversation_id, correlation_id))
    return request.to_dict()


class DurableTaskDispatcher:
    """Starts runs by signalling the agent's durable entity (`dafx-<agent>`, keyed by conversation)."""

    def __init__(self, client: AsyncTaskHubGrpcClient) -> None:
        self._client = client

    async def dispatch(self, agent_name: str, conversation_id: str, correlation_id: str, message: str) -> None:
        entity = EntityInstanceId(f"dafx-{agent_name}", conversation_id)
        await self._client.signal_entity(entity, "run", run_request(conversation_id, correlation_id, message))


def main() -> None:
    """Serve the in-memory backend alone, so `web` and `worker` processes can share it on one machine.

    python durable_backend.py [PORT]
    then HOST_ROLE=web|worker DURABLE_TASK_SCHEDULER_CONNECTION_STRING="Endpoint=http://127.0.0.1:PORT;Authentication=None"
    """
    import signal
    import sys
    import threading

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 4001
    backend = LoopbackInMemoryBackend(port=port)
    print(f"in-memory Durable Task backend on {backend.start()} (runs are lost when it stops)", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    backend.stop(grace=1)


if __name__ == "__main__":
    main()
