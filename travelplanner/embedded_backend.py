"""The embedded durable backend: durabletask's in-memory backend, on loopback, fit to serve a process group.

Used when no DURABLE_TASK_SCHEDULER_CONNECTION_STRING is given: runs survive
nothing but need nothing. The `all` role keeps one in its supervisor process
and points its web and worker processes at it. As shipped, durabletask's
backend is a test double; three things make it fit for that job:

- **A worker that dies hands its runs back.** The stock backend keeps an entity
  "in flight" for ever once a worker took its batch: the run is lost and the
  conversation's later turns never start. Here, when the work-item stream of
  the worker that holds a batch ends without completing it, the batch goes
  back to the queue, and the next worker to take it starts a new attempt
  (which the run log fences and marks with a `reset`).
- **Memory stays flat.** Entity state (a conversation's history) is forgotten
  once the conversation has been idle for `retention_seconds` (its run log has
  expired by then too).
- **A group can shut down in order.** `drain()` stops handing out work, and
  `outstanding_runs()` names the runs still queued or taken, so they can be
  ended in the run log with an error that says why.

It relies on the backend's internal bookkeeping (`_entities`, `_entity_in_flight`,
`_lock`), checked against durabletask 1.12 by tests/test_embedded_backend.py.

Also a program of its own, so `web` and `worker` processes can share one on a machine:

    python -m travelplanner.embedded_backend [PORT]
    then HOST_ROLE=web|worker DURABLE_TASK_SCHEDULER_CONNECTION_STRING="Endpoint=http://127.0.0.1:PORT;Authentication=None"
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as stubs
from durabletask.testing.in_memory_backend import InMemoryOrchestrationBackend

from travelplanner.recorder import RUN_LOG_OPTION

logger = logging.getLogger(__name__)

SWEEP_SECONDS = 60.0


class EmbeddedBackend(InMemoryOrchestrationBackend):
    def __init__(self, *, port: int = 0, max_concurrent_runs: int = 256, retention_seconds: float = 600.0) -> None:
        super().__init__(port=port)
        # Every connected worker's work-item stream holds a server thread for its life; calls need the rest.
        self._threads = max_concurrent_runs + 32
        self._retention = timedelta(seconds=retention_seconds)
        self._held: dict[str, tuple[object, str]] = {}  # completion token -> (stream that took it, entity id)
        self._draining = False
        self._sweeper: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._port}"

    def start(self) -> str:
        """Serve on 127.0.0.1 only (the stock backend binds every interface); returns host:port."""
        self._shutdown_event.clear()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=self._threads))
        stubs.add_TaskHubSidecarServiceServicer_to_server(self, self._server)
        self._port = self._server.add_insecure_port(self.address)
        if not self._port:
            raise RuntimeError(f"the embedded durable backend could not listen on {self.address}")
        self._server.start()
        self._sweeper = threading.Thread(target=self._sweep_forever, name="embedded-backend-sweep", daemon=True)
        self._sweeper.start()
        return f"127.0.0.1:{self._port}"

    # --- a worker's stream ends: what it held goes back

    def GetWorkItems(self, request: pb.GetWorkItemsRequest, context: grpc.ServicerContext) -> Iterator[pb.WorkItem]:
        stream = object()
        try:
            for item in super().GetWorkItems(request, context):
                if item.HasField("entityRequestV2"):
                    with self._lock:
                        self._held[item.completionToken] = (stream, item.entityRequestV2.instanceId)
                yield item
        finally:
            if not self._draining:
                self._hand_back(stream)

    def CompleteEntityTask(self, request: pb.EntityBatchResult, context: grpc.ServicerContext) -> Any:
        with self._lock:
            self._held.pop(request.completionToken, None)
            return super().CompleteEntityTask(request, context)

    def _hand_back(self, stream: object) -> None:
        with self._lock:
            for token, (holder, entity_id) in list(self._held.items()):
                if holder is not stream:
                    continue
                del self._held[token]
                entity = self._entities.get(entity_id)
                if entity is None or str(entity.completion_token) != token:
                    continue  # completed meanwhile
                entity.pending_operations[0:0] = entity.dispatched_operations
                del entity.dispatched_operations[:]
                entity.completion_token = self._next_completion_token  # a late completion is now stale
                self._next_completion_token += 1
                self._entity_in_flight.discard(entity_id)
                self._enqueue_entity(entity_id)
                logger.warning("a worker left with %s's runs unfinished: they are handed to the next worker",
                               entity_id)

    # --- memory

    def _sweep_forever(self) -> None:
        while not self._shutdown_event.wait(SWEEP_SECONDS):
            self.forget_idle()

    def forget_idle(self, now: datetime | None = None) -> int:
        """Forget conversations idle for longer than the retention; returns how many."""
        cutoff = (now or datetime.now(UTC)) - self._retention
        with self._lock:
            idle = [entity_id for entity_id, entity in self._entities.items()
                    if entity.last_modified_at < cutoff and entity_id not in self._entity_in_flight
                    and not entity.pending_operations]
            for entity_id in idle:
                del self._entities[entity_id]
        return len(idle)

    @property
    def conversations(self) -> int:
        """Conversations whose history the backend holds."""
        with self._lock:
            return len(self._entities)

    @property
    def busy(self) -> int:
        """Conversations with operations queued or being executed."""
        with self._lock:
            return sum(1 for entity_id, entity in self._entities.items()
                       if entity.pending_operations or entity_id in self._entity_in_flight)

    # --- an orderly end

    def drain(self) -> None:
        """Hand out no more work: workers finish what they hold, the queue stays as it is."""
        with self._lock:
            self._draining = True
            self._entity_queue.clear()
            self._entity_queue_set.clear()

    def _enqueue_entity(self, entity_id: str) -> None:
        if not self._draining:
            super()._enqueue_entity(entity_id)

    def outstanding_runs(self) -> list[tuple[str, str]]:
        """(conversation id, correlation id) of every recorded run still queued or being executed."""
        with self._lock:
            operations = [op for entity in self._entities.values()
                          for op in (*entity.dispatched_operations, *entity.pending_operations)]
        return [run for op in operations if (run := _recorded_run(op)) is not None]


def _recorded_run(operation: pb.HistoryEvent) -> tuple[str, str] | None:
    """The run log address in a signalled run request (the standalone host's durable client sends JSON once)."""
    if not operation.HasField("entityOperationSignaled"):
        return None
    try:
        request: Any = json.loads(operation.entityOperationSignaled.input.value)
        target = request["options"][RUN_LOG_OPTION]
        return str(target["conversation_id"]), str(target["correlation_id"])
    except (ValueError, KeyError, TypeError):
        return None


def main() -> None:
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 4001
    backend = EmbeddedBackend(port=port)
    print(f"in-memory Durable Task backend on {backend.start()} (runs are lost when it stops)", flush=True)
    received: list[int] = []  # the handler takes no lock: it may run while this thread holds one
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _: received.append(signum))
    while not received:
        signal.pause()
    backend.stop(grace=1)


if __name__ == "__main__":
    main()
