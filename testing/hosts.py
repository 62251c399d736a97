"""The standalone host as users run it: `python -m travelplanner` in a subprocess, on a real socket."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import httpx

from testing import ROOT
from testing.procnet import process_tree


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """A server in a subprocess on a loopback port: ready once `GET /api/health` answers 200."""

    def __init__(self, command: list[str], *, port: int, env: dict[str, str] | None, cwd: Path,
                 log_path: Path, open_files: int | None = None) -> None:
        self.command, self.port, self.env, self.cwd, self.log_path = command, port, env, cwd, log_path
        self.open_files = open_files  # a hard limit on the server's open files (sockets included)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Self:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(self.command, cwd=self.cwd, env=self.env,
                                        preexec_fn=self._limit_open_files if self.open_files else None,
                                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command[-1]} exited ({self.process.returncode}):\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"{self.command[-1]} did not become healthy:\n{self.log()}")

    def _limit_open_files(self) -> None:
        if self.open_files is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful: open streams are closed so clients resume), then wait."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def children(self) -> list[int]:
        """The pids of the processes this host started (the `all` role's web and worker processes, Redis)."""
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/task/{self.process.pid}/children") as listing:
            return [int(pid) for pid in listing.read().split()]

    def kill(self) -> None:
        """SIGKILL to every process of the host at once: it dies mid-run, as a crashed machine would.

        Killing only the first process would not do that: the processes it started are told to stop
        when it dies, and a worker stopping gracefully may finish its run within the grace.
        """
        if self.process is None or self.process.poll() is not None:
            return
        for pid in reversed(process_tree(self.process.pid)):  # the started ones first: none sees its parent go
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class StandaloneHost(ServerProcess):
    """`python -m travelplanner` with the given environment.

    `redis_url=None` lets it start its own embedded redis-server.
    """

    def __init__(self, redis_url: str | None, env: dict[str, str] | None = None, *, port: int | None = None,
                 data_dir: Path | None = None, log_path: Path | None = None, open_files: int | None = None) -> None:
        port = port or free_port()
        environment = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "STREAM_", "API_KEY", "HOST"))},
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "OFFLINE_MODEL_CHUNKS_PER_SECOND": "0",
            "WORKER_PROCESSES": "1",  # one worker process per test host is enough, and cheaper on a 2-core CI
            "SHUTDOWN_GRACE_SECONDS": "2",
            "PYTHONUNBUFFERED": "1",
            **({"REDIS_CONNECTION_STRING": redis_url} if redis_url else {}),
            **({"DATA_DIR": str(data_dir)} if data_dir else {}),
            **(env or {}),
        }
        log_path = log_path or Path(os.environ.get("TMPDIR", "/tmp")) / f"standalone-{port}.log"
        super().__init__([sys.executable, "-m", "travelplanner"], port=port, env=environment, cwd=ROOT,
                         log_path=log_path, open_files=open_files)
