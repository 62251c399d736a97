"""The `all` role: the production topology on one machine, as one process group.

`make run` (HOST_ROLE=all, the default) starts this supervisor. It keeps what
the group shares, then starts the processes that do the work, each a
`python -m travelplanner` of its own role, exactly as `web` and `worker`
hosts run in production:

- the run log's Redis: REDIS_CONNECTION_STRING, or an embedded redis-server
  with an append-only file in DATA_DIR (fsynced before every reply), started
  again if it dies: writers ride out the gap, nothing written is lost;
- the durable backend: DURABLE_TASK_SCHEDULER_CONNECTION_STRING, or the
  embedded one, served from this process on loopback;
- WEB_PROCESSES web processes on one listening socket they share;
- WORKER_PROCESSES worker processes (default: one per core).

A child that exits unexpectedly is started again (after 1 s, doubling to
30 s while it keeps failing); a worker that dies hands the runs it held back
to the backend, and the next worker starts them again (readers see a `reset`).
On SIGINT or SIGTERM the web processes end their open streams first (clients
resume elsewhere at once), then the workers finish their runs within
SHUTDOWN_GRACE_SECONDS and end the rest with an error, then runs still queued
in the embedded backend are ended with an error saying they never started,
then Redis and the backend stop. A second signal ends everything at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from redis_stream_response_handler import Retention, RunLog
from streaming.redis_clients import connect
from travelplanner.children import command as child_command
from travelplanner.embedded_backend import EmbeddedBackend
from travelplanner.embedded_redis import EmbeddedRedis, free_port
from travelplanner.settings import Settings, environment_with

logger = logging.getLogger(__name__)

NEVER_STARTED = "the run was not started: the server shut down before a worker took it; start it again"
CONFIGURATION_ERROR = 2  # a child that exits with this will not do better on a restart


@dataclass
class Child:
    role: str  # "web" or "worker"
    number: int
    env: dict[str, str]
    pass_fds: tuple[int, ...] = ()
    process: asyncio.subprocess.Process | None = None

    @property
    def name(self) -> str:
        return f"{self.role} {self.number}"


@dataclass
class Group:
    settings: Settings
    redis_url: str = ""
    redis: EmbeddedRedis | None = None
    backend: EmbeddedBackend | None = None
    listener: socket.socket | None = None
    children: list[Child] = field(default_factory=list)
    exit_code: int = 0
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _data_lock: IO[str] | None = None
    _signals: int = 0

    # --- start

    def start_shared(self) -> None:
        """Redis, the durable backend and the listening socket (blocking calls: before the event loop)."""
        settings = self.settings
        self.listener = _listen(settings.host, settings.port)
        self.listener.set_inheritable(True)
        self.redis_url = settings.redis_url or ""
        if not self.redis_url:
            self._lock_data_dir()
            self.redis = EmbeddedRedis(settings.data_dir, persistent=True, unix_socket=True).start()
            self.redis_url = self.redis.url
        scheduler = settings.durable_task_scheduler_connection_string
        if scheduler is None:
            # Started once the children are: forking after gRPC's threads exist makes gRPC complain.
            self.backend = EmbeddedBackend(port=free_port(), max_concurrent_runs=settings.max_concurrent_runs,
                                           retention_seconds=settings.stream_ttl_seconds)
            scheduler = f"Endpoint=http://{self.backend.address};Authentication=None"
        shared = {"REDIS_CONNECTION_STRING": self.redis_url, "DURABLE_TASK_SCHEDULER_CONNECTION_STRING": scheduler,
                  "PORT": str(self.listener.getsockname()[1])}
        web_env = environment_with({**shared, "HOST_ROLE": "web", "LISTEN_FD": str(self.listener.fileno())})
        worker_env = environment_with({**shared, "HOST_ROLE": "worker"})
        self.children = [Child("web", n + 1, web_env, (self.listener.fileno(),))
                         for n in range(settings.web_processes)]
        self.children += [Child("worker", n + 1, worker_env) for n in range(settings.worker_process_count)]

    def _lock_data_dir(self) -> None:
        """One group per DATA_DIR: two redis-servers must not share an append-only file."""
        folder = Path(self.settings.data_dir)
        folder.mkdir(parents=True, exist_ok=True)
        self._data_lock = open(folder / "host.lock", "w")  # noqa: SIM115 - held for the group's life
        try:
            fcntl.flock(self._data_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another TravelPlanner host uses DATA_DIR {folder.resolve()}; "
                               "give this one a DATA_DIR of its own") from None

    def stop_shared(self) -> None:
        if self.backend is not None:
            self.backend.stop(grace=1)
        if self.redis is not None:
            self.redis.stop()
        if self.listener is not None:
            self.listener.close()
        if self._data_lock is not None:
            self._data_lock.close()

    # --- run

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        for child in self.children:
            await self._spawn(child)
        if self.backend is not None:
            await asyncio.to_thread(self.backend.start)
        keepers = [asyncio.create_task(self._keep(child), name=f"keep {child.name}") for child in self.children]
        if self.redis is not None:
            keepers.append(asyncio.create_task(self._keep_redis(), name="keep redis"))
        await self._stopping.wait()
        await self._shut_down()
        await asyncio.to_thread(self.stop_shared)
        for keeper in keepers:
            keeper.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        return self.exit_code

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        if self._signals == 1:
            logger.info("stopping (%s): streams end, runs finish for up to %g s",
                        signal.Signals(sig).name, self.settings.shutdown_grace_seconds)
            self._stopping.set()
        else:
            logger.warning("second signal: stopping at once")
            for child in self.children:
                _send(child, signal.SIGKILL)
            self.stop_shared()
            os._exit(1)

    async def _spawn(self, child: Child) -> asyncio.subprocess.Process:
        child.process = await asyncio.create_subprocess_exec(
            *child_command(sys.executable, "-m", "travelplanner"), env=child.env, pass_fds=child.pass_fds,
            start_new_session=True)  # a terminal's Ctrl-C reaches the supervisor alone: it stops them in order
        return child.process

    async def _keep(self, child: Child) -> None:
        """Wait for the child's process to end; unless the group is stopping, start it again."""
        backoff = 1.0
        process = child.process
        while not self._stopping.is_set():
            started = asyncio.get_running_loop().time()
            if process is None:
                process = await self._spawn(child)
            code = await process.wait()
            if self._stopping.is_set():
                return
            if code == CONFIGURATION_ERROR:
                logger.error("%s exited: configuration error (see above); stopping", child.name)
                self.exit_code = CONFIGURATION_ERROR
                self._stopping.set()
                return
            if asyncio.get_running_loop().time() - started > 60:
                backoff = 1.0  # it ran for a while: this is a new failure, not the same one again
            logger.error("%s (pid %d) exited with %s; starting it again in %g s", child.name, process.pid, code,
                         backoff)
            process = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            backoff = min(backoff * 2, 30.0)

    async def _keep_redis(self) -> None:
        """The run log's embedded Redis: if it dies, start it again on the same socket and append-only file."""
        assert self.redis is not None
        backoff = 0.5
        while not self._stopping.is_set():
            code = await asyncio.to_thread(self.redis.wait)
            if self._stopping.is_set():
                return
            logger.error("the embedded redis-server exited (%s); starting it again", code)
            try:
                self.redis.spawn()  # from this thread: the launcher's parent-death signal follows it
                await asyncio.to_thread(self.redis.wait_ready)
                backoff = 0.5
            except Exception as error:  # keep trying: the group has no run log without it
                logger.error("the embedded redis-server did not start (%s); trying again in %g s", error, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, 10.0)

    # --- stop

    async def _shut_down(self) -> None:
        webs = [c for c in self.children if c.role == "web"]
        workers = [c for c in self.children if c.role == "worker"]
        await _stop_all(webs, signal.SIGTERM, within=10.0)
        if self.backend is not None:
            self.backend.drain()
        await _stop_all(workers, signal.SIGTERM, within=self.settings.shutdown_grace_seconds + 10.0)
        if self.backend is not None:
            await self._end_outstanding_runs()

    async def _end_outstanding_runs(self) -> None:
        """Runs the embedded backend still holds die with it: say so in their logs."""
        assert self.backend is not None
        outstanding = self.backend.outstanding_runs()
        if not outstanding:
            return
        log = RunLog(connect(self.redis_url), Retention(self.settings.stream_ttl_seconds,
                                                        self.settings.redis_stream_maxlen))
        try:
            for conversation_id, correlation_id in outstanding:
                with contextlib.suppress(Exception):
                    await log.end_unstarted(conversation_id, correlation_id, NEVER_STARTED)
        finally:
            await log.redis.aclose()
        logger.warning("ended %d runs that no worker had finished", len(outstanding))


def _listen(host: str, port: int, patience: float = 5.0) -> socket.socket:
    """The group's listening socket. A group that just died may still be closing its own: wait a moment."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return socket.create_server((host, port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


async def _stop_all(children: list[Child], sig: signal.Signals, *, within: float) -> None:
    running = [c for c in children if c.process is not None and c.process.returncode is None]
    for child in running:
        _send(child, sig)
    waits = [asyncio.create_task(c.process.wait()) for c in running if c.process is not None]
    if not waits:
        return
    _, late = await asyncio.wait(waits, timeout=within)
    if late:
        for child in running:
            _send(child, signal.SIGKILL)
        await asyncio.wait(late)


def _send(child: Child, sig: signal.Signals) -> None:
    if child.process is not None and child.process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            child.process.send_signal(sig)
