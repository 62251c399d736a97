"""Shared fixtures: a real Redis (REDIS_CONNECTION_STRING, else an embedded redis-server), run logs on it."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator

import hypothesis  # noqa: F401  imported early: CPython 3.11.7 can fail compiling it deep in pytest's hooks
import pytest

from redis_stream_response_handler import Retention, RunLog
from streaming.live_tail import LiveTail
from streaming.redis_clients import connect
from travelplanner.embedded_redis import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis for the whole session. Tests use random conversation ids, so they never collide."""
    configured = os.environ.get("REDIS_CONNECTION_STRING")
    if configured:
        yield configured
        return
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture
def conversation_id() -> str:
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
async def run_log(redis_url: str) -> AsyncIterator[RunLog]:
    log = RunLog(connect(redis_url), Retention(ttl_seconds=120, maxlen=20000))
    yield log
    await log.redis.aclose()


@pytest.fixture
async def live_tail(redis_url: str, run_log: RunLog) -> AsyncIterator[LiveTail]:
    tail = LiveTail(connect(redis_url, blocking_reader=True), run_log.redis, block_seconds=2)
    tail.start()
    yield tail
    await tail.stop()


def require_tool(name: str) -> str:
    """The path of an external tool; skipped on a developer machine without it, a failure in CI."""
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{name} is required in CI; .ci/run installs it")
    pytest.skip(f"{name} is not installed (see README: Tests)")


# The contract tests' hosts: short windows so the window and heartbeat rules can be seen quickly.
CONTRACT_ENV = {
    "STREAM_MAX_SECONDS": "3",
    "STREAM_HEARTBEAT_SECONDS": "0.3",
    "STREAM_STALL_SECONDS": "30",
    "OFFLINE_MODEL_CHUNKS_PER_SECOND": "400",
}


@pytest.fixture(scope="session", params=["standalone", "functions"])
def host(request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Each host that serves the HTTP contract, started once per session on a real socket."""
    if request.param == "standalone":
        from testing.hosts import StandaloneHost

        server = StandaloneHost(redis_url, CONTRACT_ENV, log_path=tmp_path_factory.mktemp("host") / "host.log")
        server.stream_max_seconds = float(CONTRACT_ENV["STREAM_MAX_SECONDS"])
        with server:
            yield server
    else:
        yield request.getfixturevalue("functions_host")


@pytest.fixture(scope="session")
def functions_host(redis_url: str) -> Iterator:
    """function_app.py in process behind a real socket (one per process: the app is a module)."""
    from testing.functions_host import FunctionsHost

    server = FunctionsHost(redis_url, CONTRACT_ENV)
    server.stream_max_seconds = float(CONTRACT_ENV["STREAM_MAX_SECONDS"])
    with server:
        yield server
