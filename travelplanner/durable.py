"""The standalone host's Durable Task worker and client: on the Durable Task Scheduler, or the embedded backend.

With DURABLE_TASK_SCHEDULER_CONNECTION_STRING the host talks to the Durable
Task Scheduler (its local emulator or Azure) through durabletask-azuremanaged.
Without it, to the embedded in-memory backend (`travelplanner.embedded_backend`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from durabletask.client import AsyncTaskHubGrpcClient
from durabletask.entities import EntityInstanceId
from durabletask.worker import ConcurrencyOptions, TaskHubGrpcWorker

from travelplanner.dispatch import EntityDispatcher


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


# durabletask makes loggers of its own outside the logging tree unless given one: these follow LOG_LEVEL.
_WORKER_LOG = logging.getLogger("durabletask.worker")
_CLIENT_LOG = logging.getLogger("durabletask.client")


def _concurrency(max_concurrent_runs: int) -> ConcurrencyOptions:
    # agent-framework-durabletask blocks a pool thread for the whole of each run (it waits for the agent's
    # coroutine on its own loop), so the thread pool, not only the entity limit, decides how many runs
    # stream at once. Idle threads cost memory only (a stack each); a few spare ones serve the other work.
    return ConcurrencyOptions(maximum_concurrent_entity_work_items=max_concurrent_runs,
                              maximum_thread_pool_workers=max_concurrent_runs + 4)


def make_worker(address: str | None, scheduler: SchedulerConnection | None, taskhub: str,
                max_concurrent_runs: int) -> TaskHubGrpcWorker:
    if scheduler is None:
        return TaskHubGrpcWorker(host_address=address, concurrency_options=_concurrency(max_concurrent_runs),
                                 logger=_WORKER_LOG)
    from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker

    return DurableTaskSchedulerWorker(
        host_address=scheduler.host_address, taskhub=scheduler.taskhub or taskhub, secure_channel=scheduler.secure,
        token_credential=scheduler.credential(asynchronous=False),
        concurrency_options=_concurrency(max_concurrent_runs), logger=_WORKER_LOG,
    )


def make_client(address: str | None, scheduler: SchedulerConnection | None, taskhub: str) -> AsyncTaskHubGrpcClient:
    if scheduler is None:
        return AsyncTaskHubGrpcClient(host_address=address, logger=_CLIENT_LOG)
    from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient

    return AsyncDurableTaskSchedulerClient(
        host_address=scheduler.host_address, taskhub=scheduler.taskhub or taskhub, secure_channel=scheduler.secure,
        token_credential=scheduler.credential(asynchronous=True), logger=_CLIENT_LOG,
    )


def dispatcher(client: AsyncTaskHubGrpcClient) -> EntityDispatcher:
    return EntityDispatcher(client, EntityInstanceId)
