"""The HTTP contract (README "API reference"), line by line, against every host over real sockets.

Each test takes a `host` and runs once per host, so the hosts cannot drift apart.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from redis_stream_response_handler import Retention, RunLog, WritePolicy, stream_key
from streaming.redis_clients import connect
from testing.sse import SSEStream, read_stream, reassemble
from testing.waiting import until

PLAN = "Plan a 3-day trip to Tokyo"


@pytest.fixture
def client(host) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=host.base_url, timeout=30) as http:
        yield http


def start(client: httpx.Client, message: str = PLAN, **fields: str) -> dict[str, str]:
    if fields:
        response = client.post("/api/agents/TravelPlanner/run", json={"message": message, **fields})
    else:
        response = client.post("/api/agents/TravelPlanner/run", content=message,
                               headers={"Content-Type": "text/plain"})
    assert response.status_code == 202, response.text
    return response.json()


def finished_run(client: httpx.Client, message: str = PLAN, **fields: str) -> tuple[dict[str, str], list]:
    run = start(client, message, **fields)
    read = read_stream(client, run["stream_url"])
    assert read.status == 200
    assert read.events[-1].kind == "done", read.text[-500:]
    return run, read.events


def write_run(redis_url: str, conversation_id: str, pieces: list[tuple[str, str]], *,
              maxlen: int = 20000, through_writer: bool = False) -> str:
    """A run written straight into the shared Redis, for cases a model cannot be asked for; returns its id.

    One entry per piece, or `through_writer` as the agent writes (its buffering and newline rules).
    """
    correlation_id = uuid.uuid4().hex

    async def write() -> None:
        log = RunLog(connect(redis_url), Retention(ttl_seconds=120, maxlen=maxlen))
        try:
            await log.open_run(conversation_id, correlation_id)
            if through_writer:
                writer = log.writer(conversation_id, correlation_id, WritePolicy())
                for kind, text in pieces:
                    if kind == "message":
                        writer.add(text)
                        await until(lambda: writer.unwritten == 0, what="the chunk in the log")  # one entry each
                    else:
                        await writer.finish(kind, text)
                return
            await log.begin_attempt(conversation_id, correlation_id)
            for piece in pieces:
                await log.append(conversation_id, correlation_id, 1, [piece])
        finally:
            await log.redis.aclose()

    asyncio.run(write())
    return correlation_id


def append(redis_url: str, conversation_id: str, correlation_id: str, pieces: list[tuple[str, str]]) -> None:
    """More entries for a run that `write_run` left open."""

    async def write() -> None:
        log = RunLog(connect(redis_url), Retention(ttl_seconds=120, maxlen=20000))
        try:
            for piece in pieces:
                assert await log.append(conversation_id, correlation_id, 1, [piece]) == "ok"
        finally:
            await log.redis.aclose()

    asyncio.run(write())


# --- POST /api/agents/TravelPlanner/run ----------------------------------------------------------


def test_run_answers_202_with_ids_and_a_stream_url(client: httpx.Client) -> None:
    response = client.post("/api/agents/TravelPlanner/run", content=PLAN, headers={"Content-Type": "text/plain"})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted"
    assert set(body) == {"status", "conversation_id", "correlation_id", "stream_url"}
    assert body["stream_url"].startswith(f"/api/agent/stream/{body['conversation_id']}")
    assert response.headers["location"] == body["stream_url"]


def test_stream_right_after_202_is_never_404(client: httpx.Client) -> None:
    for _ in range(5):
        run = start(client)
        with client.stream("GET", run["stream_url"]) as response:
            assert response.status_code == 200


@pytest.mark.parametrize("alias", ["conversation_id", "session_id", "thread_id"])
def test_json_body_continues_a_conversation_by_id_or_alias(client: httpx.Client, alias: str) -> None:
    conversation_id = f"trip-{uuid.uuid4().hex[:12]}"  # 16 characters at least: ids are secrets
    run = start(client, "Plan a weekend in Rome", **{alias: conversation_id})
    assert run["conversation_id"] == conversation_id


@pytest.mark.parametrize(("body", "content_type", "status"), [
    (b"", "text/plain", 400),
    (b"   \n", "text/plain", 400),
    (b"{not json", "application/json", 400),
    (b'{"message": ""}', "application/json", 400),
    (b'["a list"]', "application/json", 400),
    (b'{"message": "hi", "conversation_id": "bad id!"}', "application/json", 400),
    (b'{"message": "hi", "conversation_id": "' + b"x" * 129 + b'"}', "application/json", 400),
    (b"x" * (32 * 1024 + 1), "text/plain", 413),
])
def test_bad_run_requests_get_a_clear_json_error_and_start_nothing(
    client: httpx.Client, body: bytes, content_type: str, status: int
) -> None:
    response = client.post("/api/agents/TravelPlanner/run", content=body, headers={"Content-Type": content_type})
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    assert isinstance(response.json()["error"], str) and response.json()["error"]


def test_unknown_agent_is_404(client: httpx.Client) -> None:
    response = client.post("/api/agents/Nobody/run", content="hi", headers={"Content-Type": "text/plain"})
    assert response.status_code == 404
    assert "TravelPlanner" in response.json()["error"]


# --- GET /api/agent/stream/{conversation_id}: SSE ----------------------------------------------


def test_sse_framing_headers_and_terminal_event(client: httpx.Client) -> None:
    run = start(client)
    read = read_stream(client, run["stream_url"])
    assert read.headers["content-type"].startswith("text/event-stream")
    assert read.headers["cache-control"] == "no-cache"
    assert read.headers["x-accel-buffering"] == "no"
    assert read.headers["x-conversation-id"] == run["conversation_id"]
    assert read.body.startswith(b"retry: ")
    events = read.events
    assert read.stream.retry is not None
    data_events = [e for e in events if e.data]
    assert all(e.id for e in data_events)
    assert [e.kind for e in data_events].count("done") == 1
    assert events[-1].kind == "done" and events[-1].data == "[DONE]"
    assert {e.kind for e in data_events} == {"tool", "message", "done"}  # the offline model reports no usage


def test_tool_events_are_json_steps_each_asked_for_then_answered_before_the_text(client: httpx.Client) -> None:
    run, events = finished_run(client, "Plan a 2-day trip to Kyoto")
    kinds = [e.kind for e in events]
    tools = [json.loads(e.data) for e in events if e.kind == "tool"]
    assert kinds.index("message") > max(i for i, kind in enumerate(kinds) if kind == "tool")
    assert all(e.id for e in events if e.kind == "tool")
    assert [t["status"] for t in tools] == ["started"] * 4 + ["completed"] * 4
    assert {t["name"] for t in tools} == {"get_weather_forecast", "get_local_events"}
    for tool in tools:
        assert {"call_id", "name", "status", "label", "arguments"} <= set(tool)
        assert tool["arguments"]["destination"] == "Kyoto" and "Kyoto" in tool["label"]
    assert all(t["summary"] for t in tools if t["status"] == "completed")
    plain = client.get(run["stream_url"], headers={"Accept": "text/plain"}).text
    assert "call_id" not in plain and "Checking the weather" not in plain  # plain text is the answer alone


def test_sse_rebuilds_multi_line_unicode_text_exactly(client: httpx.Client) -> None:
    run, events = finished_run(client)
    text = reassemble(events)
    plain = client.get(run["stream_url"], headers={"Accept": "text/plain"}).text
    assert "\n" in text and "°" in text and text.count("## Day") == 3
    assert plain == text + "\n"


def test_sse_carries_newlines_cr_and_blank_lines(client: httpx.Client, redis_url: str) -> None:
    conversation_id = f"lines-{uuid.uuid4().hex}"
    tricky = ["first\n\nsecond", "\r\nthird\r", "\n", "  leading spaces", "data: not a field", "ünï 🗼\u2028"]
    write_run(redis_url, conversation_id, [("message", piece) for piece in tricky] + [("done", "")],
              through_writer=True)
    read = read_stream(client, f"/api/agent/stream/{conversation_id}")
    expected = "".join(tricky).replace("\r\n", "\n").replace("\r", "\n")
    assert reassemble(read.events) == expected
    assert client.get(f"/api/agent/stream/{conversation_id}", headers={"Accept": "text/plain"}).text == expected + "\n"


def test_resume_by_cursor_at_every_position_gives_exactly_the_rest(client: httpx.Client) -> None:
    run, events = finished_run(client, "Plan a 2-day trip to Paris")
    assert [e.kind for e in events[:3]] == ["tool"] * 3  # positions inside the tool activity too
    full = reassemble(events)
    separator = "&" if "?" in run["stream_url"] else "?"
    for index, event in enumerate(e for e in events if e.id):
        rest = read_stream(client, f"{run['stream_url']}{separator}cursor={event.id}").events
        assert reassemble(events[: index + 1]) + reassemble(rest) == full
        assert [(e.id, e.kind, e.data) for e in rest if e.id] == [(e.id, e.kind, e.data)
                                                                  for e in events[index + 1:] if e.id]


def test_resume_by_last_event_id_and_the_header_wins_over_the_cursor(client: httpx.Client) -> None:
    run, events = finished_run(client)
    ids = [e.id for e in events if e.id]
    middle = ids[len(ids) // 2]
    by_header = read_stream(client, f"{run['stream_url']}&cursor={ids[1]}", headers={"Last-Event-ID": middle})
    assert [e.id for e in by_header.events if e.id] == ids[ids.index(middle) + 1:]


def test_cut_anywhere_including_mid_event_then_resume_loses_and_repeats_nothing(client: httpx.Client) -> None:
    run, events = finished_run(client)
    reference = read_stream(client, run["stream_url"]).body
    full = reassemble(events)
    rng = random.Random(7)
    for cut in sorted(rng.sample(range(10, len(reference) - 1), 12)):
        received = read_stream(client, run["stream_url"], max_bytes=cut).events
        last_id = next((e.id for e in reversed(received) if e.id), None)
        headers = {"Last-Event-ID": last_id} if last_id else {}
        rest = read_stream(client, run["stream_url"], headers=headers).events
        assert reassemble(received) + reassemble(rest) == full, f"cut at byte {cut}"
        assert rest[-1].kind == "done"


def test_live_stream_delivers_while_the_run_is_still_writing(client: httpx.Client, redis_url: str) -> None:
    """The first event reaches the client while the run is still open, and the rest follows on the same response.

    The run's end is written only once the client holds its first event: a host that buffered the response
    (until the run ended, or until the window closed) would send nothing, or end the response first.
    """
    conversation_id = f"live-{uuid.uuid4().hex}"
    run = write_run(redis_url, conversation_id, [("message", "Day 1: ")])  # no terminal: still running
    received = SSEStream()
    with client.stream("GET", f"/api/agent/stream/{conversation_id}", timeout=10) as response:
        chunks = response.iter_raw()
        while not received.events:
            received.feed(next(chunks))  # a buffering host sends nothing: the read times out
        assert received.closing is None, "the response ended before the run did"
        append(redis_url, conversation_id, run, [("message", "Day 2"), ("done", "")])
        for chunk in chunks:
            received.feed(chunk)
    assert [(e.kind, e.data) for e in received.events] == [("message", "Day 1: "), ("message", "Day 2"),
                                                            ("done", "[DONE]")]
    assert received.closing is None, "the run's end came on a later response, not this one"


# --- plain text -----------------------------------------------------------------------------------


@pytest.mark.parametrize("accept", ["text/plain", "text/plain, text/event-stream;q=0.5", "text/*;q=0.2, text/plain"])
def test_plain_text_when_accept_prefers_it(client: httpx.Client, accept: str) -> None:
    run, events = finished_run(client)
    response = client.get(run["stream_url"], headers={"Accept": accept})
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == reassemble(events) + "\n"


@pytest.mark.parametrize("accept", ["text/event-stream", "*/*", "text/event-stream, text/plain;q=0.9", ""])
def test_sse_unless_accept_prefers_plain_text(client: httpx.Client, accept: str) -> None:
    run = start(client)
    read = read_stream(client, run["stream_url"], headers={"Accept": accept} if accept else {})
    assert read.headers["content-type"].startswith("text/event-stream")


def test_plain_text_ends_an_error_run_with_an_error_line(client: httpx.Client, redis_url: str) -> None:
    conversation_id = f"err-{uuid.uuid4().hex}"
    write_run(redis_url, conversation_id, [("message", "Day 1: "), ("error", "the model timed out")])
    plain = client.get(f"/api/agent/stream/{conversation_id}", headers={"Accept": "text/plain"}).text
    assert plain == "Day 1: \n[Error: the model timed out]\n"
    events = read_stream(client, f"/api/agent/stream/{conversation_id}").events
    assert events[-1].kind == "error" and events[-1].data == "the model timed out" and events[-1].id


# --- multi-turn -----------------------------------------------------------------------------------


def test_each_runs_stream_url_yields_that_run_only_and_the_default_is_the_latest(client: httpx.Client) -> None:
    first, first_events = finished_run(client, "Plan a 2-day trip to Lisbon")
    second, second_events = finished_run(client, "Make day 2 more relaxed",
                                         conversation_id=first["conversation_id"])
    assert second["conversation_id"] == first["conversation_id"]
    assert reassemble(first_events) != reassemble(second_events)
    assert reassemble(read_stream(client, first["stream_url"]).events) == reassemble(first_events)
    latest = read_stream(client, f"/api/agent/stream/{first['conversation_id']}").events
    assert reassemble(latest) == reassemble(second_events)
    assert not {e.id for e in latest} & {e.id for e in first_events if e.id}


# --- errors of the stream route ------------------------------------------------------------------


def test_unknown_conversation_is_404_at_once(client: httpx.Client) -> None:
    started = time.monotonic()
    response = client.get(f"/api/agent/stream/never-{uuid.uuid4().hex}")
    assert response.status_code == 404 and "error" in response.json()
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("cursor", ["abc", "1-", "12-x", "-1-0", "1-2-3"])
def test_malformed_cursor_is_400(client: httpx.Client, cursor: str) -> None:
    run = start(client)
    assert client.get(f"{run['stream_url']}&cursor={cursor}").status_code == 400
    assert client.get(run["stream_url"], headers={"Last-Event-ID": cursor}).status_code == 400


def test_cursor_older_than_the_retained_stream_is_410(client: httpx.Client, redis_url: str) -> None:
    conversation_id = f"trim-{uuid.uuid4().hex}"
    write_run(redis_url, conversation_id, [("message", f"{i} ") for i in range(400)] + [("done", "")], maxlen=100)
    import redis

    with redis.Redis.from_url(redis_url, decode_responses=True) as direct:
        oldest_kept = direct.xrange(stream_key(conversation_id), count=1)[0][0]
    ms, seq = (int(part) for part in oldest_kept.split("-"))
    trimmed = f"{ms}-{seq - 1}" if seq else f"{ms - 1}-99"
    gone = client.get(f"/api/agent/stream/{conversation_id}?cursor={trimmed}")
    assert gone.status_code == 410 and "error" in gone.json()
    assert client.get(f"/api/agent/stream/{conversation_id}?cursor=1-0").status_code == 400  # not from here


# --- the response window and heartbeats -------------------------------------------------------------


def test_an_idle_stream_gets_heartbeats_and_ends_cleanly_after_the_window(
    client: httpx.Client, redis_url: str, host  # type: ignore[no-untyped-def]
) -> None:
    conversation_id = f"idle-{uuid.uuid4().hex}"
    write_run(redis_url, conversation_id, [("message", "thinking…")])  # no terminal: still running
    started = time.monotonic()
    read = read_stream(client, f"/api/agent/stream/{conversation_id}")
    elapsed = time.monotonic() - started
    assert b": heartbeat" in read.body
    assert read.body.rstrip().endswith(b"resume from the last event id")
    assert host.stream_max_seconds <= elapsed < host.stream_max_seconds + 3
    assert reassemble(read.events) == "thinking…"


def test_a_plain_text_response_cut_by_the_window_says_so(client: httpx.Client, redis_url: str) -> None:
    conversation_id = f"idle-{uuid.uuid4().hex}"
    write_run(redis_url, conversation_id, [("message", "thinking…")])  # no terminal: still running
    read = read_stream(client, f"/api/agent/stream/{conversation_id}", headers={"Accept": "text/plain"})
    assert read.text == ("thinking…\n[Ended early: the response window closed; read again for the whole text]\n")


# --- cancel and health ----------------------------------------------------------------------------


def test_cancel_ends_the_run_with_one_cancelled_event(client: httpx.Client, redis_url: str) -> None:
    conversation_id = f"cancel-{uuid.uuid4().hex}"
    write_run(redis_url, conversation_id, [("message", "Day 1")])
    response = client.post(f"/api/agent/stream/{conversation_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert client.post(f"/api/agent/stream/{conversation_id}/cancel").status_code == 409
    events = read_stream(client, f"/api/agent/stream/{conversation_id}").events
    assert [e.kind for e in events if e.data] == ["message", "cancelled"]
    assert client.post(f"/api/agent/stream/nobody-{uuid.uuid4().hex}/cancel").status_code == 404


def test_cancel_with_an_invalid_id_is_400(client: httpx.Client) -> None:
    for path in ("/api/agent/stream/short/cancel", f"/api/agent/stream/{uuid.uuid4().hex}/cancel?run=no%20such"):
        response = client.post(path)
        assert response.status_code == 400 and response.json()["error"], path


def test_health_names_the_agents_redis_and_the_model(client: httpx.Client) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "agents": ["TravelPlanner"], "redis": "ok",
                               "model": {"kind": "offline", "host": None, "name": "offline-demo"}}

