"""The embedded durable backend: durabletask's in-memory backend, on loopback.

Used when no DURABLE_TASK_SCHEDULER_CONNECTION_STRING is given: runs survive
nothing but need nothing. Also a program of its own, so `web` and `worker`
processes can share one on a machine:

    python -m travelplanner.embedded_backend [PORT]
    then HOST_ROLE=web|worker DURABLE_TASK_SCHEDULER_CONNECTION_STRING="Endpoint=http://127.0.0.1:PORT;Authentication=None"
"""

from __future__ import annotations

import signal
import sys
import threading
from concurrent import futures

import grpc
from durabletask.internal import orchestrator_service_pb2_grpc as stubs
from durabletask.testing.in_memory_backend import InMemoryOrchestrationBackend

from travelplanner.durable import MAX_CONCURRENT_RUNS


class LoopbackInMemoryBackend(InMemoryOrchestrationBackend):
    """durabletask's in-memory backend, served on 127.0.0.1 only (the stock one binds every interface)."""

    def start(self) -> str:
        self._shutdown_event.clear()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=MAX_CONCURRENT_RUNS + 16))
        stubs.add_TaskHubSidecarServiceServicer_to_server(self, self._server)
        self._port = self._server.add_insecure_port(f"127.0.0.1:{self._port}")
        self._server.start()
        return f"127.0.0.1:{self._port}"


def main() -> None:
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
