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


def _functions_hosts() -> list[str]:
    from testing.functions_worker.environment import WorkerPythonMissing, find_python

    try:
        find_python()
    except WorkerPythonMissing:
        return ["functions", "functions-worker"]  # the second is skipped with the reason, or fails in CI
    return ["functions-worker"]


# The Functions hosts the suites run against: the deployment package under the real Python worker, and the
# in-process double of the host and worker only where the real one cannot run (no Python 3.13 here).
FUNCTIONS_HOSTS = _functions_hosts()


def pytest_report_header() -> str:
    hosts = {"functions": "in-process double (no Python 3.13 here)", "functions-worker": "real Python worker"}
    return "Functions hosts: " + ", ".join(hosts[name] for name in FUNCTIONS_HOSTS)


@pytest.fixture(scope="session", params=["standalone", *FUNCTIONS_HOSTS])
def host(request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Each host that serves the HTTP contract, started once per session on a real socket: the standalone
    host, function_app.py behind the in-process double of the Functions host, and the deployment package
    under the real Python worker (testing/functions_worker)."""
    if request.param == "standalone":
        from testing.hosts import StandaloneHost

        server = StandaloneHost(redis_url, CONTRACT_ENV, log_path=tmp_path_factory.mktemp("host") / "host.log")
        server.stream_max_seconds = float(CONTRACT_ENV["STREAM_MAX_SECONDS"])
        with server:
            yield server
    elif request.param == "functions":
        yield request.getfixturevalue("functions_host")
    else:
        yield request.getfixturevalue("functions_worker")


@pytest.fixture(scope="session")
def functions_host(redis_url: str) -> Iterator:
    """function_app.py in process behind a real socket (one per process: the app is a module).

    The double stands in for the Functions host and worker only where the real worker cannot run: where
    Python 3.13 is missing. Elsewhere its cases are skipped: `functions-worker` runs them under the real one.
    """
    from testing.functions_host import FunctionsHost

    if "functions" not in FUNCTIONS_HOSTS:
        pytest.skip("the real Python worker runs here (functions-worker); the in-process double stands in for it "
                    "only where Python 3.13 is missing")

    server = FunctionsHost(redis_url, CONTRACT_ENV)
    server.stream_max_seconds = float(CONTRACT_ENV["STREAM_MAX_SECONDS"])
    with server:
        yield server


@pytest.fixture(scope="session")
def functions_worker(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """The deployment package under the real Python worker (Python 3.13), behind the host stand-in."""
    from testing.functions_worker import FunctionsWorkerHost, worker_python_or_skip

    server = FunctionsWorkerHost(redis_url, CONTRACT_ENV, python=worker_python_or_skip(),
                                 work_dir=tmp_path_factory.mktemp("functions-worker"))
    server.stream_max_seconds = float(CONTRACT_ENV["STREAM_MAX_SECONDS"])
    with server:
        yield server
