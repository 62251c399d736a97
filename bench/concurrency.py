"""Figure 3, idle connections: SSE connections one host process holds, its RSS per connection,
and the Redis connections it uses meanwhile.

The host is fresh for this figure (its memory not yet shaped by load). Every
stream reads an open run with no activity: the host sends only heartbeats
(STREAM_HEARTBEAT_SECONDS=5). The clients live in the bench process, on raw
sockets. RSS is VmRSS of the host process; Redis connections are the entries
of CLIENT LIST whose client port is a socket of the host process.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from typing import Any
from urllib.parse import urlsplit

from bench import processes, redis_server
from bench.sse_client import open_streams
from bench.workload import new_id

HEARTBEAT_SECONDS = 5.0
CONNECTING = 100  # requests in flight while the connections ramp up (a gentle ramp, not a reconnection storm)


async def _open_runs(redis_url: str, conversations: list[str]) -> None:
    from redis_stream_response_handler import Retention, RunLog
    from streaming.redis_clients import connect

    log = RunLog(connect(redis_url), Retention(ttl_seconds=900))
    try:
        for start in range(0, len(conversations), 500):
            await asyncio.gather(*(log.open_run(c, "run-1") for c in conversations[start:start + 500]))
    finally:
        await log.redis.aclose()


async def _hold(host_url: str, host_pid: int, redis_url: str, paths: list[str], sse: bool,
                hold_seconds: float) -> dict[str, Any]:
    parts = urlsplit(host_url)
    sync = redis_server.client(redis_url)
    # Warm-up: the code paths of a stream request, then back to idle.
    warm = await open_streams(parts.hostname or "127.0.0.1", parts.port or 80, paths[:5], array("q"), sse=sse)
    for client in warm:
        client.close()
    await asyncio.sleep(1.0)
    rss_before = processes.rss_bytes(host_pid)
    redis_before = processes.redis_connections_of(host_pid, redis_url, redis_server.client_ports(sync))
    started = time.monotonic()
    clients = await open_streams(parts.hostname or "127.0.0.1", parts.port or 80, paths, array("q"), sse=sse,
                                 concurrency=CONNECTING, within_seconds=180)
    connect_seconds = time.monotonic() - started
    refused = sum(1 for c in clients if c.status not in (0, 200) or (c.done.done() and not c.closing_comment))
    await asyncio.sleep(2.0 + len(paths) / 5000)  # let the host finish setting up every stream
    rss_open = processes.rss_bytes(host_pid)
    redis_open = processes.redis_connections_of(host_pid, redis_url, redis_server.client_ports(sync))
    cpu0 = processes.cpu_seconds(host_pid)
    await asyncio.sleep(hold_seconds)
    host_cpu = processes.cpu_seconds(host_pid) - cpu0
    rss_held = processes.rss_bytes(host_pid)
    redis_held = processes.redis_connections_of(host_pid, redis_url, redis_server.client_ports(sync))
    alive = sum(1 for c in clients if not c.done.done() and c.status in (0, 200))
    with_heartbeat = sum(1 for c in clients if c.heartbeats > 0)
    for client in clients:
        client.close()
    sync.close()
    grown = max(rss_open, rss_held) - rss_before
    return {
        "connections": len(paths),
        "opened": len(clients),
        "alive_after_hold": alive,
        "with_heartbeat": with_heartbeat,
        "refused_or_closed_while_opening": refused,
        "connect_seconds": connect_seconds,
        "opened_per_second": len(paths) / connect_seconds,
        "rss_before_mib": rss_before / 2**20,
        "rss_held_mib": max(rss_open, rss_held) / 2**20,
        "rss_per_connection_kib": grown / len(paths) / 1024,
        "redis_connections_idle": redis_before,
        "redis_connections_held": max(redis_open, redis_held),
        "host_cpu_percent_idle": 100 * host_cpu / hold_seconds,
    }


def measure(design: str, redis_url: str, connections: int) -> dict[str, Any]:
    hold = HEARTBEAT_SECONDS + 1.5
    if design == "ours":
        conversations = [new_id("c") for _ in range(connections)]
        asyncio.run(_open_runs(redis_url, conversations))
        paths = [f"/api/agent/stream/{c}?run=run-1" for c in conversations]
        with processes.our_host(redis_url, STREAM_HEARTBEAT_SECONDS=str(HEARTBEAT_SECONDS)) as host:
            assert host.process is not None
            return asyncio.run(_hold(host.base_url, host.process.pid, redis_url, paths, True, hold))
    paths = [f"/api/agent/stream/{new_id('bc')}" for _ in range(connections)]  # the baseline polls, unbuffered
    with processes.BaselineHost(redis_url) as baseline:
        assert baseline.process is not None
        return asyncio.run(_hold(baseline.base_url, baseline.process.pid, redis_url, paths, False, hold))
