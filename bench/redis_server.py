"""The bench's Redis: an embedded redis-server on loopback (or --redis-url), and what we read off it."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator

import redis

from travelplanner.embedded_redis import EmbeddedRedis


@contextlib.contextmanager
def bench_redis(url: str | None) -> Iterator[str]:
    """A Redis URL for the whole run: `url` as given, else a fresh embedded redis-server."""
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as folder, EmbeddedRedis(folder) as server:
        yield server.url


def client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def command_calls(r: redis.Redis) -> dict[str, int]:
    """Calls per command since the server started (INFO commandstats), e.g. {'xadd': 12, 'evalsha': 3}."""
    stats = r.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def calls_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    delta.pop("info", None)  # our own INFO calls
    return {name: n for name, n in delta.items() if n}


def memory_usage(r: redis.Redis, *keys: str) -> int:
    """Exact bytes (SAMPLES 0) the keys take, 0 for a missing key."""
    return sum(int(r.memory_usage(key, samples=0) or 0) for key in keys)


def keys_without_ttl(r: redis.Redis, pattern: str = "*") -> list[str]:
    return [key for key in r.scan_iter(match=pattern, count=1000) if r.ttl(key) == -1]


def client_ports(r: redis.Redis) -> list[int]:
    """The client-side port of every connection Redis holds (CLIENT LIST `addr`)."""
    return [int(c["addr"].rsplit(":", 1)[1]) for c in r.client_list()]
