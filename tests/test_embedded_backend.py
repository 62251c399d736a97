"""The embedded durable backend against real durabletask workers over gRPC: hand-back, memory, an orderly end.

A plain entity stands in for the agent: these are the backend's duties, whatever runs in the entity.
(The same duties through the whole host: tests/test_process_group.py.)
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from durabletask.client import TaskHubGrpcClient
from durabletask.entities import EntityInstanceId
from durabletask.worker import TaskHubGrpcWorker

from travelplanner.dispatch import run_request
from travelplanner.embedded_backend import EmbeddedBackend

STATE = "x" * 20_000  # about what an agent's history weighs after a turn or two


def remember(ctx: Any, _: Any) -> None:
    ctx.set_state(STATE)


class Gate:
    """An entity operation that blocks until released, so a test can hold a batch in flight."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.ran = 0

    def __call__(self, ctx: Any, _: Any) -> None:
        self.ran += 1
        self.entered.set()
        self.release.wait(30)


@pytest.fixture
def backend() -> Iterator[EmbeddedBackend]:
    running = EmbeddedBackend(retention_seconds=60)
    running.start()
    yield running
    running.stop(grace=1)


def worker(backend: EmbeddedBackend, **entities: Any) -> TaskHubGrpcWorker:
    made = TaskHubGrpcWorker(host_address=backend.address)
    for name, fn in entities.items():
        made.add_entity(fn, name=name)
    made.start()
    return made


def wait_until(condition, seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.02)


def test_it_serves_loopback_only(backend: EmbeddedBackend) -> None:
    assert backend.address.startswith("127.0.0.1:")


# A worker process whose entity takes the batch and never finishes: it says so, then waits to be killed.
HOLDING_WORKER = """
import sys, threading
from durabletask.worker import TaskHubGrpcWorker

def gate(ctx, _):
    print("entered", flush=True)
    threading.Event().wait()

worker = TaskHubGrpcWorker(host_address=sys.argv[1])
worker.add_entity(gate, name="gate")
worker.start()
threading.Event().wait()
"""


def test_a_batch_held_by_a_worker_that_dies_goes_to_the_next(backend: EmbeddedBackend) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDING_WORKER, backend.address], stdout=subprocess.PIPE,
                              text=True)
    gate = Gate()
    try:
        TaskHubGrpcClient(host_address=backend.address).signal_entity(EntityInstanceId("gate", "c1"), "run", "hi")
        assert holder.stdout is not None and holder.stdout.readline().strip() == "entered"
        second = worker(backend, gate=gate)
        try:
            holder.kill()
            assert gate.entered.wait(15), "the batch was not handed to the other worker"
        finally:
            gate.release.set()
            second.stop()
    finally:
        holder.kill()
        holder.wait()
    assert gate.ran == 1


def test_idle_conversations_are_forgotten_and_memory_stays_flat(backend: EmbeddedBackend) -> None:
    """A soak: waves of conversations, each leaving 20 KB of state. Forgotten once idle, RSS stops growing."""
    running = worker(backend, remember=remember)
    client = TaskHubGrpcClient(host_address=backend.address)

    def wave(name: str, conversations: int) -> None:
        for n in range(conversations):
            client.signal_entity(EntityInstanceId("remember", f"{name}-{n}"), "run", None)
        wait_until(lambda: backend.conversations >= conversations and not backend.busy, 120, f"wave {name}")

    try:
        wave("warm-up", 1500)
        assert backend.forget_idle() == 0, "nothing is forgotten before the retention has passed"
        later = datetime.now(UTC) + timedelta(seconds=61)
        assert backend.forget_idle(now=later) == 1500 and backend.conversations == 0
        rss_after_first = peak_rss_kib()
        for name in ("a", "b", "c"):
            wave(name, 1500)
            backend.forget_idle(now=datetime.now(UTC) + timedelta(seconds=61))
        grown_mib = (peak_rss_kib() - rss_after_first) / 1024
    finally:
        running.stop()
    # Three more waves kept would add about 90 MB of state; forgotten, the process does not grow.
    assert grown_mib < 15, f"peak RSS grew {grown_mib:.0f} MiB over three waves of forgotten conversations"


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def test_a_drained_backend_hands_out_nothing_and_names_the_runs_it_holds(backend: EmbeddedBackend) -> None:
    gate = Gate()
    running = worker(backend, gate=gate)
    client = TaskHubGrpcClient(host_address=backend.address)
    try:
        client.signal_entity(EntityInstanceId("gate", "c1"), "run", run_request("c1", "r1", "hi"))
        assert gate.entered.wait(10)
        backend.drain()
        client.signal_entity(EntityInstanceId("gate", "c2"), "run", run_request("c2", "r2", "hi"))
        client.signal_entity(EntityInstanceId("gate", "c1"), "run", run_request("c1", "r3", "again"))
        wait_until(lambda: len(backend.outstanding_runs()) == 3, 10, "three runs held")
        assert sorted(backend.outstanding_runs()) == [("c1", "r1"), ("c1", "r3"), ("c2", "r2")]
        gate.release.set()
        wait_until(lambda: len(backend.outstanding_runs()) == 2, 10, "the held batch done")
        # A backend that still handed out work would have given the worker c2 at once, long before this.
        assert gate.ran == 1
        assert sorted(backend.outstanding_runs()) == [("c1", "r3"), ("c2", "r2")]
    finally:
        gate.release.set()
        running.stop()


def test_run_requests_are_named_by_their_run_log_address() -> None:
    encoded = json.dumps(run_request("conv", "corr", "Plan a trip"))
    assert json.loads(encoded)["options"]["run_log"] == {"conversation_id": "conv", "correlation_id": "corr"}
