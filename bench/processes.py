"""Processes: the hosts under test, bench worker processes, and what /proc tells about them."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testing import ROOT
from testing.hosts import ServerProcess, StandaloneHost, free_port  # the host as users run it
from testing.procnet import process_tree

LOG_DIR = Path(os.environ.get("TMPDIR", "/tmp"))


def raise_open_files(wanted: int = 65536) -> int:
    """Raise this process's (and so its children's) open-file limit as far as allowed; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def our_host(redis_url: str, **env: str) -> StandaloneHost:
    """The real standalone host (offline model at full speed) against the bench Redis."""
    settings = {"LOG_LEVEL": "WARNING", "STREAM_HEARTBEAT_SECONDS": "5", "STREAM_MAX_SECONDS": "3600", **env}
    return StandaloneHost(redis_url, settings, log_path=LOG_DIR / f"bench-host-{os.getpid()}.log")


class BaselineHost(ServerProcess):
    """bench/baseline.py's app under uvicorn in a subprocess."""

    def __init__(self, redis_url: str) -> None:
        port = free_port()
        super().__init__([sys.executable, "-m", "bench.baseline", "--port", str(port), "--redis-url", redis_url],
                         port=port, env=None, cwd=ROOT, log_path=LOG_DIR / f"bench-baseline-{os.getpid()}.log")


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and the processes it started."""
    total = 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/status") as status:
                total += next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process `pid` and the processes it started have used (all their threads)."""
    total = 0.0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended meanwhile
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time the whole machine has spent busy (all cores, /proc/stat), to see who else was running."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def tcp_peers(pid: int) -> list[tuple[int, int]]:
    """(local port, remote port) of every established TCP socket process `pid` holds (IPv4 and IPv6)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    peers = []
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    if fields[9] in inodes and fields[3] == "01":  # ESTABLISHED
                        local = int(fields[1].rsplit(":", 1)[1], 16)
                        remote = int(fields[2].rsplit(":", 1)[1], 16)
                        peers.append((local, remote))
        except FileNotFoundError:
            continue
    return peers


def redis_connections_of(pid: int, redis_url: str, client_ports: list[int]) -> int:
    """How many of the connections Redis lists (CLIENT LIST) belong to process `pid`."""
    redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    ours = {local for local, remote in tcp_peers(pid) if remote == redis_port}
    return sum(1 for port in client_ports if port in ours)


# --- bench worker processes (feeders, readers) --------------------------------------------------

_CONTEXT = multiprocessing.get_context("spawn")


class Worker:
    """A child process running `target(connection, params)`; messages go both ways over a pipe."""

    def __init__(self, target: Callable[[multiprocessing.connection.Connection, dict[str, Any]], None],
                 params: dict[str, Any]) -> None:
        self._conn, child = _CONTEXT.Pipe()
        self.process = _CONTEXT.Process(target=target, args=(child, params), daemon=True)
        self.process.start()
        child.close()

    def send(self, message: Any) -> None:
        self._conn.send(message)

    def poll(self) -> bool:
        """Whether a message is waiting."""
        return self._conn.poll(0)

    def recv(self, timeout: float) -> Any:
        if not self._conn.poll(timeout):
            raise TimeoutError(f"worker {self.process.pid} said nothing for {timeout:.0f} s")
        return self._conn.recv()

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(5)
