"""A worker process: executes agent runs that the durable backend hands it, and leaves in order.

HOST_ROLE=worker runs one; the `all` role starts WORKER_PROCESSES of them.
Each executes up to MAX_CONCURRENT_RUNS runs at once (agent-framework-durabletask
holds a pool thread per run while its model streams) on one event loop.

On SIGTERM or SIGINT it stops taking work, lets the runs it is executing
finish for up to SHUTDOWN_GRACE_SECONDS, ends the rest in the run log with an
`error` saying the worker shut down, and exits: a bounded shutdown, whatever
the runs are doing. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
from types import FrameType

from agent_framework_durabletask import DurableAIAgentWorker

from travelplanner.durable import SchedulerConnection, make_worker
from travelplanner.wiring import Wiring

logger = logging.getLogger(__name__)

INTERRUPTED = "the run was interrupted: its worker shut down before the run finished; start it again"


def tune_for_many_runs() -> None:
    """Make one process carry hundreds of streaming runs (measured: see BENCHMARKS.md, "runs end to end").

    - The agent's event loop on uvloop: agent-framework-durabletask creates it with asyncio.new_event_loop(),
      which follows the policy.
    - agent-framework's OpenTelemetry instrumentation stays off unless telemetry is configured
      (`travelplanner.telemetry` decides, before this runs): each streamed run it traces leaves a reference
      cycle behind it (about 1,900 objects) that only a full collection frees.
    - Fewer, cheaper collections: objects alive after start-up are frozen out of the collector's scans, and
      the young generation is collected every 20,000 allocations rather than 700 (a run allocates several
      objects per chunk, and each full collection paused the process for 150-250 ms).
    """
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # Windows: the standard loop
        pass
    gc.freeze()
    gc.set_threshold(20_000, 10, 20)


def serve(wiring: Wiring, durable_address: str | None, scheduler: SchedulerConnection | None) -> int:
    settings = wiring.settings
    tune_for_many_runs()
    agent = wiring.agent()
    worker = make_worker(durable_address, scheduler, settings.taskhub_name, settings.max_concurrent_runs)
    DurableAIAgentWorker(worker).add_agent(agent)
    stop = _StopSignal()
    worker.start()
    logger.info("worker process %d: executes up to %d runs at once", os.getpid(), settings.max_concurrent_runs)
    stop.wait()
    _quiet_own_cancel()
    # durabletask's stop() waits for every work item it holds, however long; it runs aside while we wait
    # only as long as the grace period allows.
    threading.Thread(target=worker.stop, name="durable-worker-stop", daemon=True).start()
    if not agent.wait_until_idle(settings.shutdown_grace_seconds):
        ended = agent.interrupt_running(INTERRUPTED)
        logger.warning("worker process %d: ended %d unfinished runs after the %g s grace period",
                       os.getpid(), ended, settings.shutdown_grace_seconds)
    if wiring.telemetry is not None:
        wiring.telemetry.flush()  # os._exit runs no exit handlers: export the last spans and metrics now
    logging.shutdown()
    # Pool threads blocked in a run would keep a normal interpreter exit waiting for them.
    os._exit(0)


def _quiet_own_cancel() -> None:
    """Once stopping, durabletask logs the work item stream its own stop() cancels as a warning: that is no error,
    and every Ctrl-C would end on it."""
    logging.getLogger("durabletask.worker").addFilter(
        lambda record: "Locally cancelled by application" not in record.getMessage())


class _StopSignal:
    """SIGTERM/SIGINT: the first asks for an orderly stop, a second exits at once.

    The handler only writes a byte to a pipe that the main thread reads: a Python signal handler runs in
    the main thread between any two bytecodes, so one that took a lock (an Event's, the logging module's)
    could wait for ever on a lock its own thread holds.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        self._received_one = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._received)

    def _received(self, signum: int, frame: FrameType | None) -> None:
        if self._received_one:
            os._exit(1)
        self._received_one = True
        os.write(self._write, bytes([signum]))

    def wait(self) -> None:
        signum = os.read(self._read, 1)[0]
        logger.info("worker process %d: stopping (%s)", os.getpid(), signal.Signals(signum).name)
