"""Failure semantics, one test per guarantee (README "Delivery guarantees"), against real Redis and the real host.

Nothing lost, nothing doubled, nothing hangs: each test breaks one thing (the
model, the worker, Redis, the host process, the client) and checks what
readers see. Injected executions run `RecordedAgent` in this process on the
run the host is executing: exactly what a second durable worker executing the
same entity operation does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Iterator
from pathlib import Path

import httpx
import pytest
import redis as sync_redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response as HttpResponse
from starlette.routing import Route

from redis_stream_response_handler import (
    Liveness,
    Retention,
    RunLog,
    WritePolicy,
    meta_key,
    normalize_newlines,
    stream_key,
)
from streaming.http_api import Services, start_run
from streaming.live_tail import LiveTail
from streaming.redis_clients import connect
from testing.hosts import StandaloneHost
from testing.scripted_model import ScriptedModel, ScriptedModelError, execute
from testing.sse import ReceivedEvent, Response, get_stream, reassemble, terminals
from testing.waiting import until
from travelplanner.embedded_redis import EmbeddedRedis

AGENT = "TravelPlanner"
STALL = 2.0
RETENTION = Retention(ttl_seconds=300, maxlen=20000)
POLICY = WritePolicy(outage_seconds=20, liveness=Liveness(stall_seconds=1.5))
ANSWER = [f"word{i} " for i in range(60)] + ["\n## The end\r\n"]


def new_ids() -> tuple[str, str]:
    return f"fail-{uuid.uuid4().hex}", uuid.uuid4().hex


def text_of(chunks: list[str]) -> str:
    return normalize_newlines("".join(chunks))


async def log_of(redis_url: str, conversation_id: str) -> list[tuple[str, dict[str, str]]]:
    log = RunLog(connect(redis_url), RETENTION)
    try:
        return list(await log.redis.xrange(stream_key(conversation_id)))
    finally:
        await log.redis.aclose()


def run_events(entries: list[tuple[str, dict[str, str]]], run: str = "1") -> list[ReceivedEvent]:
    names = {"m": "message", "t": "tool", "u": "usage", "r": "reset", "d": "done", "e": "error", "x": "cancelled"}
    return [ReceivedEvent(i, names[f["k"]], f["t"]) for i, f in entries if f["r"] == run and f["k"] in names]


async def open_run(redis_url: str, conversation_id: str, correlation_id: str) -> None:
    """What POST /run does before dispatching: readers can attach at once."""
    log = RunLog(connect(redis_url), RETENTION)
    try:
        await log.open_run(conversation_id, correlation_id)
    finally:
        await log.redis.aclose()


async def read_to_terminal(base_url: str, url: str, *, deadline: float = 30.0, cursor: str | None = None
                           ) -> tuple[list[ReceivedEvent], list[Response]]:
    """Read, resuming after every early end, until the run's terminal event (or fail after `deadline`)."""
    events: list[ReceivedEvent] = []
    responses: list[Response] = []
    until = time.monotonic() + deadline
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        while time.monotonic() < until:
            try:
                response = await get_stream(client, url, last_event_id=cursor, within=until - time.monotonic())
            except httpx.TransportError:
                await asyncio.sleep(0.2)  # the host is restarting
                continue
            responses.append(response)
            if response.status in (502, 503):
                await asyncio.sleep(0.2)
                continue
            assert response.status == 200, response.body[:300]
            events += response.stream.events
            cursor = response.stream.last_id or cursor
            if events and events[-1].terminal:
                return events, responses
    raise AssertionError(f"no terminal event within {deadline} s; got {[e.kind for e in events]}")


def tail_is_reading(server: EmbeddedRedis) -> bool:
    """A client of this Redis is blocked in XREAD: a host's live tail is following streams for its readers."""
    with sync_redis.Redis(port=server.port, decode_responses=True) as admin:
        return any("b" in c["flags"] and c["cmd"] == "xread" for c in admin.client_list())


def refuses_connections(server: EmbeddedRedis) -> bool:
    try:
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


async def expired(log: RunLog, conversation_id: str) -> bool:
    return not await log.redis.exists(stream_key(conversation_id), meta_key(conversation_id))


def redis_pid(server: EmbeddedRedis) -> int:
    with sync_redis.Redis(port=server.port) as client:
        return int(client.info("server")["process_id"])


@pytest.fixture
def dedicated_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of the test's own, persistent (a restart keeps every acknowledged write), to stop and freeze."""
    server = EmbeddedRedis(tmp_path, persistent=True).start()
    pid = redis_pid(server)
    try:
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)  # never leave it frozen
        server.stop()


@pytest.fixture(scope="module")
def host(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneHost]:
    env = {"STREAM_STALL_SECONDS": str(STALL), "STREAM_START_SECONDS": str(STALL), "REDIS_OUTAGE_SECONDS": "1",
           "STREAM_MAX_SECONDS": "20", "STREAM_HEARTBEAT_SECONDS": "0.5", "OFFLINE_MODEL_CHUNKS_PER_SECOND": "100"}
    with StandaloneHost(redis_url, env, log_path=tmp_path_factory.mktemp("host") / "host.log") as running:
        yield running


# --- The agent or the model fails -------------------------------------------------------


async def test_a_model_failure_mid_stream_ends_the_run_with_one_useful_error(redis_url: str) -> None:
    conversation, run = new_ids()
    await open_run(redis_url, conversation, run)
    model = ScriptedModel(ANSWER, fail_stream_after=5, fail_whole=True)
    outcome = await execute(model, redis_url, conversation, run, policy=POLICY, retention=RETENTION)
    assert isinstance(outcome.error, ScriptedModelError)  # re-raised: the durable host records the failure
    events = run_events(await log_of(redis_url, conversation))
    assert [e.kind for e in terminals(events)] == ["error"]
    assert events[-1].kind == "error"
    assert events[-1].data == "the agent failed: the model is overloaded (HTTP 529)"
    assert reassemble(events) == text_of(ANSWER[:5])


@pytest.mark.parametrize("fail_after", [0, 1, 30])
async def test_a_failed_stream_falls_back_to_one_complete_answer(redis_url: str, fail_after: int) -> None:
    conversation, run = new_ids()
    await open_run(redis_url, conversation, run)
    whole = "The complete answer, written whole.\r\nDay 1: museums."
    model = ScriptedModel(ANSWER, fail_stream_after=fail_after, whole_text=whole)
    outcome = await execute(model, redis_url, conversation, run, policy=POLICY, retention=RETENTION)
    assert outcome.error is None and outcome.text == whole
    events = run_events(await log_of(redis_url, conversation))
    kinds = [e.kind for e in events]
    assert kinds.count("reset") == (1 if fail_after else 0)
    assert [e.kind for e in terminals(events)] == ["done"] and kinds[-1] == "done"
    assert reassemble(events) == normalize_newlines(whole)


async def test_a_fallback_answer_starting_with_a_newline_keeps_it_after_a_streamed_cr(redis_url: str) -> None:
    """Regression: the writer remembered the streamed text's trailing CR across the reset and ate the LF."""
    conversation, run = new_ids()
    await open_run(redis_url, conversation, run)
    model = ScriptedModel(["Partial line\r"] * 3, fail_stream_after=1, whole_text="\nThe whole answer")
    await execute(model, redis_url, conversation, run, policy=POLICY, retention=RETENTION)
    assert reassemble(run_events(await log_of(redis_url, conversation))) == "\nThe whole answer"


# --- Redelivery --------------------------------------------------------------------------


async def test_an_overlapping_redelivery_replaces_the_first_attempt_and_fences_it(redis_url: str) -> None:
    conversation, run = new_ids()
    await open_run(redis_url, conversation, run)
    first = ScriptedModel([f"old{i} " for i in range(200)], chunks_per_second=100)
    second = ScriptedModel([f"new{i} " for i in range(30)], chunks_per_second=100)
    first_task = asyncio.create_task(execute(first, redis_url, conversation, run, policy=POLICY, retention=RETENTION))
    await until(lambda: first.produced >= 20, what="the first attempt streaming")
    replacement = await execute(second, redis_url, conversation, run, policy=POLICY, retention=RETENTION)
    stale = await asyncio.wait_for(first_task, 10)
    assert stale.writer is not None and stale.writer.fenced in ("replaced", "sealed")
    assert first.produced < 120, "the replaced attempt kept generating"
    assert replacement.writer is not None and replacement.writer.attempt == 2
    events = run_events(await log_of(redis_url, conversation))
    kinds = [e.kind for e in events]
    assert kinds.count("reset") == 1 and [e.kind for e in terminals(events)] == ["done"]
    after_reset = events[kinds.index("reset") + 1:]
    assert all("old" not in e.data for e in after_reset), "the stale attempt wrote after it was replaced"
    assert reassemble(events) == "".join(second.chunks)


async def test_a_redelivery_over_http_shows_reset_then_the_replacement(host: StandaloneHost, redis_url: str) -> None:
    async with httpx.AsyncClient(base_url=host.base_url, timeout=10) as client:
        started = (await client.post(f"/api/agents/{AGENT}/run", content="Plan 5 days in Tokyo")).json()
        conversation, run = started["conversation_id"], started["correlation_id"]
        reader = asyncio.create_task(read_to_terminal(host.base_url, started["stream_url"]))
        first = await get_stream(client, started["stream_url"], until_kind="message")  # the attempt is streaming
        assert first.stream.events, first.body
    injected = ScriptedModel([f"replacement {i}\n" for i in range(40)], chunks_per_second=200)
    outcome = await execute(injected, redis_url, conversation, run, policy=POLICY, retention=RETENTION)
    events, _ = await reader
    assert outcome.writer is not None and outcome.writer.attempt == 2
    assert [e.kind for e in events].count("reset") == 1
    assert reassemble(events) == "".join(injected.chunks)
    logged = run_events(await log_of(redis_url, conversation))
    assert [e.id for e in logged] == [e.id for e in events], "the live reader missed or doubled an event"
    assert len(terminals(logged)) == 1


async def test_a_redelivery_after_the_run_ended_writes_nothing(redis_url: str) -> None:
    conversation, run = new_ids()
    await open_run(redis_url, conversation, run)
    await execute(ScriptedModel(["first answer"]), redis_url, conversation, run, policy=POLICY, retention=RETENTION)
    before = await log_of(redis_url, conversation)
    late = await execute(ScriptedModel(["second answer"]), redis_url, conversation, run, policy=POLICY,
                         retention=RETENTION)
    assert late.writer is not None and late.writer.fenced == "sealed"
    assert await log_of(redis_url, conversation) == before


async def test_a_stale_attempt_cannot_write_once_replaced(redis_url: str) -> None:
    conversation, run = new_ids()
    log = RunLog(connect(redis_url), RETENTION)
    try:
        await log.open_run(conversation, run)
        assert await log.begin_attempt(conversation, run) == 1
        assert await log.begin_attempt(conversation, run) == 2
        results = await asyncio.gather(*[log.append(conversation, run, 1, [("message", f"stale{i}")])
                                         for i in range(50)],
                                       *[log.append(conversation, run, 2, [("message", f"live{i}")])
                                         for i in range(50)])
        assert results[:50] == ["replaced"] * 50 and results[50:] == ["ok"] * 50
        assert await log.append(conversation, run, 1, [("done", "")]) == "replaced"
        entries = await log.redis.xrange(stream_key(conversation))
        assert not any(f["t"].startswith("stale") for _, f in entries)
    finally:
        await log.redis.aclose()


# --- Stall -------------------------------------------------------------------------------


async def test_a_run_nobody_starts_ends_in_an_error_that_later_readers_see(
    host: StandaloneHost, redis_url: str
) -> None:
    conversation, run = new_ids()
    await open_run(redis_url, conversation, run)  # accepted, but no worker ever picks it up
    url = f"/api/agent/stream/{conversation}?run={run}"
    started = time.monotonic()
    events, _ = await read_to_terminal(host.base_url, url, deadline=STALL * 4)
    assert STALL <= time.monotonic() - started < STALL * 3
    assert [e.kind for e in events] == ["error"] and "not started" in events[0].data
    again, _ = await read_to_terminal(host.base_url, url, deadline=5)
    assert again == events, "a later reader sees a different terminal event"
    assert len(terminals(run_events(await log_of(redis_url, conversation)))) == 1


async def test_a_host_killed_mid_run_leaves_one_stalled_error_after_a_restart(
    redis_url: str, tmp_path: Path
) -> None:
    env = {"STREAM_STALL_SECONDS": str(STALL), "REDIS_OUTAGE_SECONDS": "1", "OFFLINE_MODEL_CHUNKS_PER_SECOND": "20",
           "STREAM_HEARTBEAT_SECONDS": "0.5"}
    server = StandaloneHost(redis_url, env, log_path=tmp_path / "host.log").start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            started = (await client.post(f"/api/agents/{AGENT}/run", content="Plan 5 days in Rome")).json()
            seen = await get_stream(client, started["stream_url"], until_kind="message")
        assert seen.stream.events, seen.body
        server.kill()  # SIGKILL: the in-memory durable backend loses the run itself
        server.start()
        events, _ = await read_to_terminal(server.base_url, started["stream_url"],
                                           cursor=seen.stream.last_id, deadline=STALL * 5)
        assert events[-1].kind == "error" and "stalled" in events[-1].data
        everything, _ = await read_to_terminal(server.base_url, started["stream_url"], deadline=5)
        assert everything == seen.stream.events + events, "a resume missed or doubled events"
        assert len(terminals(run_events(await log_of(redis_url, started["conversation_id"])))) == 1
    finally:
        server.stop()


# --- Redis unavailable during a run ----------------------------------------------------------


async def outage(server: EmbeddedRedis, flavour: str, seconds: float) -> None:
    """Redis away for `seconds`: frozen (SIGSTOP: unreachable but intact) or restarted (persistent)."""
    if flavour == "freeze":
        pid = redis_pid(server)
        os.kill(pid, signal.SIGSTOP)
        await asyncio.sleep(seconds)
        os.kill(pid, signal.SIGCONT)
    else:
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(seconds)
        await asyncio.to_thread(server.start)


@pytest.mark.parametrize("flavour", ["freeze", "restart"])
async def test_a_short_redis_outage_loses_nothing(dedicated_redis: EmbeddedRedis, flavour: str) -> None:
    conversation, run = new_ids()
    await open_run(dedicated_redis.url, conversation, run)
    model = ScriptedModel(ANSWER, chunks_per_second=15)  # 4 s of streaming
    running = asyncio.create_task(execute(model, dedicated_redis.url, conversation, run, policy=POLICY,
                                          retention=RETENTION))
    await until(lambda: model.produced >= 10, what="the run streaming")  # the outage comes mid-run
    await outage(dedicated_redis, flavour, 2.5)
    outcome = await asyncio.wait_for(running, 30)
    assert outcome.error is None and outcome.writer is not None and outcome.writer.interrupted is None
    events = run_events(await log_of(dedicated_redis.url, conversation))
    assert reassemble(events) == text_of(ANSWER)
    assert [e.kind for e in terminals(events)] == ["done"]


async def test_a_redis_freeze_longer_than_the_socket_timeout_doubles_nothing(dedicated_redis: EmbeddedRedis) -> None:
    """A write that timed out may still have been applied: retrying it must not append it twice.

    Fails today: the run log's append is retried blindly (redis-py's Retry and RunWriter's own), so the
    chunk in flight when Redis froze is written twice once it thaws.
    """
    conversation, run = new_ids()
    await open_run(dedicated_redis.url, conversation, run)
    model = ScriptedModel(ANSWER, chunks_per_second=15)
    running = asyncio.create_task(execute(model, dedicated_redis.url, conversation, run, policy=POLICY,
                                          retention=RETENTION))
    await until(lambda: model.produced >= 10, what="the run streaming")
    await outage(dedicated_redis, "freeze", 7.0)  # the client's socket timeout is 5 s
    outcome = await asyncio.wait_for(running, 60)
    assert outcome.error is None
    events = run_events(await log_of(dedicated_redis.url, conversation))
    assert reassemble(events) == text_of(ANSWER), "a chunk was lost or doubled"
    assert [e.kind for e in terminals(events)] == ["done"]


async def test_a_long_redis_outage_ends_the_run_with_an_error_once_redis_is_back(
    dedicated_redis: EmbeddedRedis,
) -> None:
    """Restart flavour only: a freeze shorter than the client's socket timeout (5 s) is mere latency, and one
    long enough to exhaust REDIS_OUTAGE_SECONDS through timeouts takes 15 s+ per call (3 tries of 5 s)."""
    conversation, run = new_ids()
    await open_run(dedicated_redis.url, conversation, run)
    model = ScriptedModel(ANSWER, chunks_per_second=30)
    policy = WritePolicy(outage_seconds=1.5, liveness=Liveness(stall_seconds=1.5))
    running = asyncio.create_task(execute(model, dedicated_redis.url, conversation, run, policy=policy,
                                          retention=RETENTION, settle_seconds=30))
    await until(lambda: model.produced >= 8, what="the run streaming")
    await outage(dedicated_redis, "restart", 4.0)
    outcome = await asyncio.wait_for(running, 60)
    assert outcome.error is None and outcome.text == "".join(ANSWER), "the agent run itself must not fail"
    assert outcome.writer is not None and outcome.writer.interrupted
    events = run_events(await log_of(dedicated_redis.url, conversation))
    assert [e.kind for e in terminals(events)] == ["error"] and events[-1].kind == "error"
    assert "interrupted" in events[-1].data
    assert text_of(ANSWER).startswith(reassemble(events)), "what was written is a prefix of the answer"


def outage_host(redis: EmbeddedRedis, tmp_path: Path) -> StandaloneHost:
    env = {"STREAM_STALL_SECONDS": "30", "STREAM_MAX_SECONDS": "60", "STREAM_HEARTBEAT_SECONDS": "0.5"}
    return StandaloneHost(redis.url, env, log_path=tmp_path / "host.log").start()


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await request
    return response, time.monotonic() - started


async def test_a_frozen_redis_gets_prompt_honest_503s_not_slow_answers(
    dedicated_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    """Regression: with Redis stopped (SIGSTOP), health, POST and stream answered 503 only after 15 s, later
    requests after 46 s, and some hung for 40 s. A health check must answer within 2 s whatever Redis does, and
    every other request within a few seconds, including requests that arrive while earlier ones still wait."""
    server = outage_host(dedicated_redis, tmp_path)
    pid = redis_pid(dedicated_redis)
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
            started = (await client.post(f"/api/agents/{AGENT}/run", content="Plan 1 day in Oslo")).json()
            await read_to_terminal(server.base_url, started["stream_url"])
            os.kill(pid, signal.SIGSTOP)
            for wave in range(2):  # the second wave comes while the first one's connections are still stuck
                answers = await asyncio.gather(
                    timed(client.get("/api/health")),
                    *[timed(client.post(f"/api/agents/{AGENT}/run", content="Plan 2 days in Rome")) for _ in range(5)],
                    *[timed(client.get(started["stream_url"])) for _ in range(5)],
                    timed(client.post(f"/api/agent/stream/{started['conversation_id']}/cancel")))
                (health, health_took), *others = answers
                assert health.status_code == 503 and health.json()["redis"] == "unreachable", health.text
                assert health_took < 2, f"wave {wave}: health took {health_took:.1f} s"
                for response, took in others:
                    assert response.status_code == 503, (wave, response.status_code, response.text)
                    assert "Redis" in response.json()["error"] and "Retry-After" in response.headers
                    what = f"{response.request.method} {response.request.url.path}"
                    assert took < 5, f"wave {wave}: {what} took {took:.1f} s"
            os.kill(pid, signal.SIGCONT)
            await until(lambda: _answers(client, "/api/health", 200), within=15, what="health back after the thaw")
            again = await client.post(f"/api/agents/{AGENT}/run", content="Plan 1 day in Oslo")
            assert again.status_code == 202, again.text
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        server.stop()
    assert "Traceback" not in server.log()


async def _answers(client: httpx.AsyncClient, path: str, status: int) -> bool:
    return (await client.get(path)).status_code == status


async def test_a_run_log_pool_busy_while_redis_answers_is_reported_as_overload_not_an_outage(
    dedicated_redis: EmbeddedRedis,
) -> None:
    """Regression: at 1,500 POSTs, 200 at a time, some answered 503 "the run log (Redis) is unreachable" while
    Redis was fine: the process's few pooled connections were all busy (No connection available). Here one
    pooled connection is kept busy by a queue of 20 ms commands that Redis does answer."""
    redis = connect(dedicated_redis.url, connections=1)
    log = RunLog(redis, RETENTION)
    services = Services(log, LiveTail(redis, redis), DispatchNothing(), ("TravelPlanner",), redis_seconds=1.0)

    async def run(request: Request) -> HttpResponse:
        return await start_run(request, services, "TravelPlanner")

    app = Starlette(routes=[Route("/run", run, methods=["POST"])])
    twenty_ms = redis.register_script(
        "local t = redis.call('TIME') local start = t[1] * 1e6 + t[2] "
        "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - start >= 20000 return 1")
    try:
        assert await redis.ping()
        waiting = 0

        async def queued() -> None:
            nonlocal waiting
            waiting += 1
            await twenty_ms()

        queue = [asyncio.create_task(queued()) for _ in range(300)]  # 6 s of work for one connection
        await until(lambda: waiting == 300, what="the queue in line for the connection")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            response, took = await timed(client.post("/run", content="Plan a trip",
                                                     headers={"Content-Type": "text/plain"}))
        await asyncio.gather(*queue, return_exceptions=True)  # some of the queue wait out the pool, too
    finally:
        await redis.aclose()
    assert response.status_code == 503, response.text
    assert "busy" in response.json()["error"] and "unreachable" not in response.json()["error"]
    assert int(response.headers["retry-after"]) >= 1
    assert took < 3


class DispatchNothing:
    async def dispatch(self, agent_name: str, conversation_id: str, correlation_id: str, message: str) -> None:
        return None


async def test_a_reader_during_a_redis_restart_ends_cleanly_and_resumes_after(
    dedicated_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    server = outage_host(dedicated_redis, tmp_path)
    conversation, run = new_ids()
    url = f"/api/agent/stream/{conversation}?run={run}"
    try:
        await open_run(dedicated_redis.url, conversation, run)
        model = ScriptedModel(ANSWER, chunks_per_second=6)  # 10 s of streaming
        writing = asyncio.create_task(execute(model, dedicated_redis.url, conversation, run, policy=POLICY,
                                              retention=RETENTION))
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            reading = asyncio.create_task(get_stream(client, url, within=60))
            await until(lambda: model.produced >= 10 and tail_is_reading(dedicated_redis), what="a live reader")
            down = asyncio.create_task(outage(dedicated_redis, "restart", 5.0))
            await until(lambda: refuses_connections(dedicated_redis), what="Redis down")
            cut = time.monotonic()
            first = await reading
            ended_after = time.monotonic() - cut
            assert first.status == 200 and first.ended, first.body[-300:]
            assert first.stream.closing is not None, first.body[-300:]
            assert ended_after < 3, f"the response took {ended_after:.1f} s to end"
            refused = await client.get(url)
            assert refused.status_code == 503 and set(refused.json()) == {"error"}
            assert (await client.get("/api/health")).status_code == 503
            await down
        rest, responses = await read_to_terminal(server.base_url, url, cursor=first.stream.last_id, deadline=40)
        await asyncio.wait_for(writing, 30)
        assert all(r.status in (200, 503) for r in responses)
        assert reassemble(first.stream.events + rest) == text_of(ANSWER)
        ids = [e.id for e in first.stream.events + rest]
        assert len(ids) == len(set(ids))
    finally:
        server.stop()
    assert "Traceback" not in server.log()


async def test_a_reader_rides_out_a_redis_freeze_with_heartbeats(
    dedicated_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    """Unreachable but intact for 4 s (under the 5 s socket timeout): the response stays alive with
    heartbeats, then carries on; nothing lost or doubled."""
    server = outage_host(dedicated_redis, tmp_path)
    conversation, run = new_ids()
    url = f"/api/agent/stream/{conversation}?run={run}"
    try:
        await open_run(dedicated_redis.url, conversation, run)
        model = ScriptedModel(ANSWER, chunks_per_second=10)
        writing = asyncio.create_task(execute(model, dedicated_redis.url, conversation, run, policy=POLICY,
                                              retention=RETENTION))
        reading = asyncio.create_task(read_to_terminal(server.base_url, url, deadline=60))
        await until(lambda: model.produced >= 15 and tail_is_reading(dedicated_redis), what="a live reader")
        await outage(dedicated_redis, "freeze", 4.0)
        events, responses = await reading
        await asyncio.wait_for(writing, 30)
        assert reassemble(events) == text_of(ANSWER)
        assert len({e.id for e in events}) == len(events)
        assert sum(r.body.count(b": heartbeat") for r in responses) >= 4, "silent during the freeze"
    finally:
        server.stop()
    assert "Traceback" not in server.log()


# --- Cancel ------------------------------------------------------------------------------


async def test_cancel_ends_the_run_with_one_cancelled_event_and_stops_the_model(
    host: StandaloneHost, redis_url: str
) -> None:
    conversation, run = new_ids()
    await open_run(redis_url, conversation, run)
    model = ScriptedModel([f"w{i} " for i in range(300)], chunks_per_second=50)
    running = asyncio.create_task(execute(model, redis_url, conversation, run, policy=POLICY, retention=RETENTION))
    url = f"/api/agent/stream/{conversation}?run={run}"
    reader = asyncio.create_task(read_to_terminal(host.base_url, url, deadline=15))
    await until(lambda: model.produced >= 20, what="the run streaming")
    async with httpx.AsyncClient(base_url=host.base_url, timeout=10) as client:
        cancelled = await client.post(f"/api/agent/stream/{conversation}/cancel", params={"run": run})
        assert cancelled.status_code == 200, cancelled.text
        produced_at_cancel = model.produced
        again = await client.post(f"/api/agent/stream/{conversation}/cancel", params={"run": run})
        assert again.status_code == 409
    outcome = await asyncio.wait_for(running, 5)
    assert outcome.writer is not None and outcome.writer.fenced == "sealed"
    assert model.produced <= produced_at_cancel + 3, "the model kept generating after the cancel"
    events, _ = await reader
    assert events[-1].kind == "cancelled"
    logged = run_events(await log_of(redis_url, conversation))
    assert [e.kind for e in terminals(logged)] == ["cancelled"] and logged[-1].kind == "cancelled"


async def test_a_disconnect_is_not_a_cancel(host: StandaloneHost) -> None:
    async with httpx.AsyncClient(base_url=host.base_url, timeout=10) as client:
        started = (await client.post(f"/api/agents/{AGENT}/run", content="Plan 4 days in Paris")).json()
        for _ in range(3):
            cut = await get_stream(client, started["stream_url"], max_bytes=150)
            assert not cut.ended
    events, _ = await read_to_terminal(host.base_url, started["stream_url"])
    assert [e.kind for e in terminals(events)] == ["done"]


async def test_cancel_of_a_named_earlier_run_leaves_the_latest_alone(host: StandaloneHost, redis_url: str) -> None:
    conversation, older = new_ids()
    newer = uuid.uuid4().hex
    await open_run(redis_url, conversation, older)
    await open_run(redis_url, conversation, newer)
    async with httpx.AsyncClient(base_url=host.base_url, timeout=10) as client:
        response = await client.post(f"/api/agent/stream/{conversation}/cancel", params={"run": older})
        assert response.json()["correlation_id"] == older
    entries = await log_of(redis_url, conversation)
    assert [e.kind for e in run_events(entries, "1")] == ["cancelled"]
    assert run_events(entries, "2") == []


# --- Exactly once per cursor ---------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_resuming_from_the_last_complete_event_gets_every_later_event_once(
    host: StandaloneHost, seed: int
) -> None:
    import random

    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=host.base_url, timeout=10) as client:
        started = (await client.post(f"/api/agents/{AGENT}/run", content="Plan 5 days in Kyoto")).json()
        received: list[ReceivedEvent] = []
        cursor: str | None = None
        for attempt in range(200):
            use_header = attempt % 2 == 0
            response = await get_stream(client, started["stream_url"], max_bytes=rng.randint(1, 3000),
                                        last_event_id=cursor if use_header else None,
                                        cursor=None if use_header else cursor)
            assert response.status == 200
            received += response.stream.events
            cursor = response.stream.last_id or cursor
            if received and received[-1].terminal:
                break
            await asyncio.sleep(rng.random() * 0.05)
    whole, _ = await read_to_terminal(host.base_url, started["stream_url"])
    assert received == whole, "a resume skipped or repeated an event"
    assert reassemble(received) == reassemble(whole)


# --- Nothing leaks ---------------------------------------------------------------------------


async def test_readers_hanging_up_while_they_join_the_live_tail_leave_nothing_subscribed(
    dedicated_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    """Regression: a reader cancelled inside LiveTail.subscribe (while it woke the running XREAD) left its stream
    in the tail for ever: the tail kept XREADing with nobody to read for."""
    import random

    server = outage_host(dedicated_redis, tmp_path)
    rng = random.Random(7)
    try:
        runs = [new_ids() for _ in range(600)]
        for conversation, run in runs:
            await open_run(dedicated_redis.url, conversation, run)
        keeper_conversation, keeper_run = new_ids()
        await open_run(dedicated_redis.url, keeper_conversation, keeper_run)
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10, limits=limits) as client:
            # One reader that stays: the tail is inside XREAD BLOCK whenever another reader joins.
            keeper = asyncio.create_task(get_stream(client, f"/api/agent/stream/{keeper_conversation}"
                                                    f"?run={keeper_run}", within=60))
            await until(lambda: tail_is_reading(dedicated_redis), what="the live tail in XREAD BLOCK")

            async def hang_up_soon(conversation: str, run: str) -> None:
                with contextlib.suppress(TimeoutError, httpx.HTTPError):
                    async with asyncio.timeout(rng.uniform(0.001, 0.02)):
                        await get_stream(client, f"/api/agent/stream/{conversation}?run={run}", within=5)

            for start in range(0, len(runs), 50):
                await asyncio.gather(*[hang_up_soon(c, r) for c, r in runs[start:start + 50]])
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        # An idle tail stops reading once its XREAD BLOCK (5 s) ends; one that kept a gone reader never does.
        await until(lambda: not tail_is_reading(dedicated_redis), within=20,
                    what="the live tail to stop reading for readers that have all gone")
    finally:
        server.stop()


# --- Graceful shutdown ---------------------------------------------------------------------


async def test_sigterm_closes_open_streams_at_once_and_a_restarted_host_resumes(
    redis_url: str, tmp_path: Path
) -> None:
    env = {"STREAM_STALL_SECONDS": "60", "STREAM_HEARTBEAT_SECONDS": "0.5", "OFFLINE_MODEL_CHUNKS_PER_SECOND": "300"}
    server = StandaloneHost(redis_url, env, log_path=tmp_path / "host.log").start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            started = (await client.post(f"/api/agents/{AGENT}/run", content="Plan 3 days in Oslo")).json()
            finished, _ = await read_to_terminal(server.base_url, started["stream_url"])
            waiting, opened = [], []
            for _ in range(5):  # readers of runs nobody executes: their streams stay open
                conversation, run = new_ids()
                await open_run(redis_url, conversation, run)
                opened.append(asyncio.Event())
                waiting.append(asyncio.create_task(get_stream(client, f"/api/agent/stream/{conversation}?run={run}",
                                                              within=30, opened=opened[-1])))
            await until(lambda: all(event.is_set() for event in opened), what="five open streams")
            stopped = time.monotonic()
            server.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            closed = await asyncio.gather(*waiting)
            assert time.monotonic() - stopped < 3, "open streams were not closed promptly"
            for response in closed:
                assert response.ended and response.stream.closing is not None
                assert "shutting down" in response.stream.closing
            # uvicorn re-raises the signal once it has shut down gracefully: -SIGTERM, not a kill.
            assert await asyncio.to_thread(server.process.wait, 10) in (0, -signal.SIGTERM)  # type: ignore[union-attr]
        server.start()
        assert len(finished) >= 3
        middle = finished[len(finished) // 2]  # not the terminal event
        rest, _ = await read_to_terminal(server.base_url, started["stream_url"], cursor=middle.id)
        assert rest == finished[finished.index(middle) + 1:]
    finally:
        server.stop()


# --- Retention -----------------------------------------------------------------------------


async def test_an_expired_conversation_is_404_at_once(host: StandaloneHost, redis_url: str) -> None:
    conversation, run = new_ids()
    log = RunLog(connect(redis_url), Retention(ttl_seconds=1, maxlen=100))
    try:
        await log.open_run(conversation, run)
        writer = log.writer(conversation, run, POLICY)
        writer.add("soon gone")
        await writer.finish("done")
        assert 0 < await log.redis.ttl(meta_key(conversation)) <= 1
        await until(lambda: expired(log, conversation), within=5, what="Redis to expire the conversation")
    finally:
        await log.redis.aclose()
    async with httpx.AsyncClient(base_url=host.base_url, timeout=5) as client:
        response = await client.get(f"/api/agent/stream/{conversation}", params={"run": run})
        assert response.status_code == 404 and "expired" in response.json()["error"]


@pytest.fixture(autouse=True)
def _bounded() -> Iterator[None]:
    started = time.monotonic()
    yield
    assert time.monotonic() - started < 90, "a failure test ran for more than 90 s"

