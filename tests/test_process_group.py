"""The `all` role as `make run` starts it: web and worker processes, many runs at once, and an orderly end.

Each test runs the real host (`python -m travelplanner`) with the offline model at a pace a user would
see, reads runs over SSE as clients do, and breaks one thing: too many runs at once, a worker killed
mid-run, the embedded Redis killed, a SIGTERM with runs still streaming or queued.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from redis_stream_response_handler import QUEUE_KEY, Retention, RunLog, stream_key
from streaming.redis_clients import connect
from testing.hosts import StandaloneHost
from testing.sse import ReceivedEvent, get_stream, reassemble
from travelplanner.group import NEVER_STARTED
from travelplanner.worker import INTERRUPTED

CORES = os.cpu_count() or 1


@dataclass
class Reading:
    """One run as its client saw it."""

    posted_at: float
    first_message_at: float | None = None
    done_at: float | None = None
    events: list[ReceivedEvent] | None = None


async def start_run(client: httpx.AsyncClient, message: str = "Plan a 3-day trip to Kyoto") -> dict[str, str]:
    response = await client.post("/api/agents/TravelPlanner/run", content=message,
                                 headers={"Content-Type": "text/plain"})
    assert response.status_code == 202, response.text
    return dict(response.json())


async def read_timed(client: httpx.AsyncClient, url: str, reading: Reading) -> None:
    """Read a run to its terminal event, noting when its first message and its end arrived."""
    events: list[ReceivedEvent] = []
    from testing.sse import SSEStream

    parsed = SSEStream()
    async with client.stream("GET", url) as response:
        assert response.status_code == 200
        async for piece in response.aiter_raw():
            for event in parsed.feed(piece):
                events.append(event)
                if event.kind == "message" and reading.first_message_at is None:
                    reading.first_message_at = time.monotonic()
                if event.terminal:
                    reading.done_at = time.monotonic()
    reading.events = events


async def many_runs_at_once(base_url: str, count: int) -> list[Reading]:
    limits = httpx.Limits(max_connections=count * 2, max_keepalive_connections=count * 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:
        readings = [Reading(time.monotonic()) for _ in range(count)]
        runs = await asyncio.gather(*(start_run(client) for _ in range(count)))
        await asyncio.gather(*(read_timed(client, run["stream_url"], reading)
                               for run, reading in zip(runs, readings, strict=True)))
    return readings


def children_with_role(host: StandaloneHost, role: str) -> list[int]:
    pids = []
    for pid in host.children():
        try:
            if f"HOST_ROLE={role}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                pids.append(pid)
        except OSError:
            continue
    return pids


def redis_children(host: StandaloneHost) -> list[int]:
    return [pid for pid in host.children() if b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def wait_until(condition, seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.05)


def test_no_run_waits_for_another(redis_url: str, tmp_path: Path) -> None:
    """3 x (cores + 4) runs at once: more than a default thread pool holds. Every one streams before any ends."""
    count = 3 * (CORES + 4)
    env = {"OFFLINE_MODEL_CHUNKS_PER_SECOND": "40", "WORKER_PROCESSES": "0"}
    with StandaloneHost(redis_url, env, log_path=tmp_path / "host.log") as host:
        assert len(children_with_role(host, "worker")) == CORES  # 0: one worker process per core
        readings = asyncio.run(many_runs_at_once(host.base_url, count))
    assert all(r.events and r.events[-1].kind == "done" and "## Day 3" in reassemble(r.events) for r in readings)
    last_first_message = max(r.first_message_at for r in readings if r.first_message_at)
    first_done = min(r.done_at for r in readings if r.done_at)
    assert last_first_message < first_done, (
        f"a run's first message came {last_first_message - first_done:.2f} s after another run had finished")


def test_max_concurrent_runs_is_what_a_worker_executes_at_once(redis_url: str, tmp_path: Path) -> None:
    env = {"OFFLINE_MODEL_CHUNKS_PER_SECOND": "100", "MAX_CONCURRENT_RUNS": "2", "WORKER_PROCESSES": "1"}
    with StandaloneHost(redis_url, env, log_path=tmp_path / "host.log") as host:
        readings = asyncio.run(many_runs_at_once(host.base_url, 3))
    starts = sorted(r.first_message_at for r in readings if r.first_message_at)
    ends = sorted(r.done_at for r in readings if r.done_at)
    assert len(starts) == len(ends) == 3
    assert starts[1] < ends[0] < starts[2], "two runs at once, the third once one of them is done"


def test_a_worker_that_dies_hands_its_run_to_the_next(redis_url: str, tmp_path: Path) -> None:
    env = {"OFFLINE_MODEL_CHUNKS_PER_SECOND": "30", "STREAM_STALL_SECONDS": "60"}
    with StandaloneHost(redis_url, env, log_path=tmp_path / "host.log") as host:

        async def scenario() -> list[ReceivedEvent]:
            async with httpx.AsyncClient(base_url=host.base_url, timeout=60) as client:
                run = await start_run(client, "Plan a 2-day trip to Rome")
                first = await get_stream(client, run["stream_url"], until_kind="message")
                assert any(e.kind == "message" for e in first.events), first.body
                (worker,) = children_with_role(host, "worker")
                os.kill(worker, signal.SIGKILL)
                rest = await get_stream(client, run["stream_url"], last_event_id=first.stream.last_id, within=60)
                return first.events + rest.events

        events = asyncio.run(scenario())
        wait_until(lambda: len(children_with_role(host, "worker")) == 1, 20, "the worker started again")
        log = host.log()
    kinds = [e.kind for e in events]
    assert kinds[-1] == "done" and "reset" in kinds, kinds
    assert "## Day 2" in reassemble(events)
    assert "exited with -9; starting it again" in log
    assert "handed to the next worker" in log


def test_shutdown_ends_running_and_queued_runs_with_errors_that_say_so(redis_url: str, tmp_path: Path) -> None:
    env = {"OFFLINE_MODEL_CHUNKS_PER_SECOND": "10", "MAX_CONCURRENT_RUNS": "1", "SHUTDOWN_GRACE_SECONDS": "1"}
    host = StandaloneHost(redis_url, env, log_path=tmp_path / "host.log").start()
    try:
        async def two_runs() -> tuple[dict[str, str], dict[str, str]]:
            async with httpx.AsyncClient(base_url=host.base_url, timeout=60) as client:
                running, queued = await start_run(client), await start_run(client)
                first = await get_stream(client, running["stream_url"], until_kind="message")
                assert any(e.kind == "message" for e in first.events)
                return running, queued

        running, queued = asyncio.run(two_runs())
        began = time.monotonic()
        code = host.stop(timeout=30)
        took = time.monotonic() - began
    finally:
        host.kill()
    assert code == 0 and took < 15, (code, took)
    assert "Error in work item stream" not in host.log(), "a stop the worker asked for was logged as an error"
    assert asyncio.run(terminal_of(redis_url, running)) == ("e", INTERRUPTED)
    assert asyncio.run(terminal_of(redis_url, queued)) == ("e", NEVER_STARTED)
    assert queued["correlation_id"] not in asyncio.run(still_waiting(redis_url)), "ended, yet counted as waiting"


async def still_waiting(redis_url: str) -> set[str]:
    """The runs counted as waiting for a worker (what MAX_QUEUED_RUNS caps)."""
    redis = connect(redis_url)
    try:
        return set(await redis.zrange(QUEUE_KEY, 0, -1))
    finally:
        await redis.aclose()


async def terminal_of(redis_url: str, run: dict[str, str]) -> tuple[str, str] | None:
    log = RunLog(connect(redis_url), Retention())
    try:
        ordinal = await log.redis.hget(f"agent-stream:{{{run['conversation_id']}}}:meta",
                                       f"run:{run['correlation_id']}")
        entries = await log.redis.xrange(stream_key(run["conversation_id"]))
    finally:
        await log.redis.aclose()
    ends = [(f["k"], f["t"]) for _, f in entries if f["r"] == ordinal and f["k"] in ("d", "e", "x")]
    assert len(ends) <= 1, ends
    return ends[0] if ends else None


def test_a_second_signal_stops_everything_at_once(redis_url: str, tmp_path: Path) -> None:
    env = {"OFFLINE_MODEL_CHUNKS_PER_SECOND": "5", "SHUTDOWN_GRACE_SECONDS": "60"}
    host = StandaloneHost(redis_url, env, log_path=tmp_path / "host.log").start()
    try:
        async def one_run() -> None:
            async with httpx.AsyncClient(base_url=host.base_url, timeout=60) as client:
                run = await start_run(client)
                first = await get_stream(client, run["stream_url"], until_kind="message")
                assert any(e.kind == "message" for e in first.events)

        asyncio.run(one_run())
        children = host.children()
        assert host.process is not None
        host.process.send_signal(signal.SIGTERM)
        wait_until(lambda: "stopping (SIGTERM)" in host.log(), 10, "the supervisor began stopping")
        began = time.monotonic()
        host.process.send_signal(signal.SIGTERM)
        host.process.wait(10)
        assert time.monotonic() - began < 5
        wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children), 10, "every child gone")
    finally:
        host.kill()


def test_the_embedded_redis_is_started_again_if_it_dies(tmp_path: Path) -> None:
    env = {"OFFLINE_MODEL_CHUNKS_PER_SECOND": "30"}
    with StandaloneHost(None, env, data_dir=tmp_path / "data", log_path=tmp_path / "host.log") as host:

        async def scenario() -> list[ReceivedEvent]:
            async with httpx.AsyncClient(base_url=host.base_url, timeout=60) as client:
                run = await start_run(client, "Plan a 2-day trip to Lisbon")
                first = await get_stream(client, run["stream_url"], until_kind="message")
                assert any(e.kind == "message" for e in first.events)
                (redis_pid,) = redis_children(host)
                os.kill(redis_pid, signal.SIGKILL)
                events = list(first.events)
                deadline = time.monotonic() + 60
                while not events or not events[-1].terminal:  # resume through the outage, as a client does
                    assert time.monotonic() < deadline, [e.kind for e in events]
                    try:
                        more = await get_stream(client, run["stream_url"], last_event_id=events[-1].id, within=30)
                        events += more.events
                    except httpx.HTTPError:
                        pass
                    if not events[-1].terminal:
                        await asyncio.sleep(0.2)  # the client's reconnection delay (a shorter `retry:`)
                return events

        async def the_same_request_undisturbed() -> str:
            async with httpx.AsyncClient(base_url=host.base_url, timeout=60) as client:
                run = await start_run(client, "Plan a 2-day trip to Lisbon")
                return reassemble((await get_stream(client, run["stream_url"], within=60)).events)

        events = asyncio.run(scenario())
        expected = asyncio.run(the_same_request_undisturbed())
        assert httpx.get(f"{host.base_url}/api/health", timeout=5).json()["redis"] == "ok"
        log = host.log()
    assert [e.kind for e in events][-1] == "done"
    assert reassemble(events) == expected, "the run's text lost or repeated something across the restart"
    assert "## Day 2" in expected and len({e.id for e in events}) == len(events)
    assert "the embedded redis-server exited" in log


@pytest.mark.parametrize("role", ["web", "worker"])
def test_a_web_or_worker_process_needs_the_shared_services(role: str, tmp_path: Path) -> None:
    host = StandaloneHost(None, {"HOST_ROLE": role}, data_dir=tmp_path, log_path=tmp_path / "host.log")
    with pytest.raises(RuntimeError, match="needs REDIS_CONNECTION_STRING and DURABLE_TASK_SCHEDULER"):
        host.start(timeout=20)
