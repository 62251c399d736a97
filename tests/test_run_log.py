"""The run log against a real Redis: layout, fencing, terminal entries, cursors, retention."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from redis_stream_response_handler import (
    QUEUE_KEY,
    Admission,
    ConversationBusy,
    ConversationNotFound,
    CursorExpired,
    InvalidCursor,
    Liveness,
    QueueFull,
    Retention,
    RunEvent,
    RunLog,
    RunNotFound,
    RunRef,
    WritePolicy,
    meta_key,
    normalize_newlines,
    previous_entry_id,
    stream_key,
)
from testing.waiting import until

FAST = WritePolicy(outage_seconds=2.0, liveness=Liveness(stall_seconds=1.5))


async def logged(log: RunLog, ref: RunRef) -> list[RunEvent]:
    """Every event of the run the log holds after `ref.after`, up to its terminal event (no waiting)."""
    events, after, more = [], ref.after, True
    while more:
        page, after, more = await log.read_after(ref, after)
        events += page
    terminal = next((i for i, event in enumerate(events) if event.terminal), len(events) - 1)
    return events[: terminal + 1]


async def events_of(log: RunLog, conversation_id: str, **where: str) -> list[RunEvent]:
    return await logged(log, await log.resolve(conversation_id, **where))


async def lease_older_than(log: RunLog, conversation_id: str, seconds: float) -> bool:
    """The run's last sign of life is older than `seconds` by the Redis server's own clock (which leases use)."""
    lease = int(await log.redis.hget(meta_key(conversation_id), "lease"))
    now_seconds, now_micros = await log.redis.time()
    return now_seconds * 1000 + now_micros // 1000 - lease > seconds * 1000


async def gone(log: RunLog, conversation_id: str) -> bool:
    return not await log.redis.exists(stream_key(conversation_id), meta_key(conversation_id))


def text_of(events: list[RunEvent]) -> str:
    text = ""
    for event in events:
        if event.kind == "reset":
            text = ""
        elif event.kind == "message":
            text += event.text
    return text


async def test_keys_share_one_cluster_slot(conversation_id: str) -> None:
    assert stream_key(conversation_id) == f"agent-stream:{{{conversation_id}}}"
    assert meta_key(conversation_id).startswith(f"agent-stream:{{{conversation_id}}}")


async def test_a_run_is_readable_from_the_moment_it_is_accepted(run_log: RunLog, conversation_id: str) -> None:
    await run_log.open_run(conversation_id, "run-1")
    ref = await run_log.resolve(conversation_id)
    assert ref.correlation_id == "run-1"
    assert await logged(run_log, ref) == []


async def test_writer_appends_chunks_then_exactly_one_terminal(run_log: RunLog, conversation_id: str) -> None:
    await run_log.open_run(conversation_id, "run-1")
    writer = run_log.writer(conversation_id, "run-1", FAST)
    for word in ["Day 1", "\n", "## Tokyo ", "🗼 ünïcode"]:
        writer.add(word)
    await writer.finish("done")
    await writer.finish("done")  # idempotent: still one terminal entry
    events = await events_of(run_log, conversation_id)
    assert text_of(events) == "Day 1\n## Tokyo 🗼 ünïcode"
    assert [e.kind for e in events if e.terminal] == ["done"]
    assert events[-1].kind == "done"


async def test_one_round_trip_per_flush_merges_waiting_chunks(run_log: RunLog, conversation_id: str) -> None:
    await run_log.open_run(conversation_id, "run-1")
    writer = run_log.writer(conversation_id, "run-1", FAST)
    for i in range(500):
        writer.add(f"{i} ")  # added faster than Redis answers: they wait and merge
    await writer.finish("done")
    events = await events_of(run_log, conversation_id)
    assert text_of(events) == "".join(f"{i} " for i in range(500))
    assert writer.flushes < 50
    assert len(events) <= writer.flushes + 1


async def test_tool_and_usage_entries_stand_alone_in_order_among_merged_chunks(
    run_log: RunLog, conversation_id: str
) -> None:
    await run_log.open_run(conversation_id, "run-1")
    writer = run_log.writer(conversation_id, "run-1", FAST)
    for i in range(50):  # added faster than Redis answers: chunks around the events still merge
        writer.add(f"{i} ")
        if i % 10 == 9:
            writer.add_event("tool", f'{{"call_id":"c{i}","status":"started"}}')
    writer.add_event("usage", '{"input_tokens":3}')
    await writer.finish("done")
    events = await events_of(run_log, conversation_id)
    assert [e.text for e in events if e.kind == "tool"] == [f'{{"call_id":"c{i}","status":"started"}}'
                                                            for i in (9, 19, 29, 39, 49)]
    assert [e.kind for e in events][-2:] == ["usage", "done"]
    assert text_of(events) == "".join(f"{i} " for i in range(50))
    before_each_event = [text_of(events[:index]) for index, e in enumerate(events) if e.kind == "tool"]
    assert before_each_event == ["".join(f"{i} " for i in range(n)) for n in (10, 20, 30, 40, 50)]
    assert len([e for e in events if e.kind == "message"]) < 50  # merged, but never across an event


async def test_a_redelivery_resets_the_old_attempts_tool_activity_too(run_log: RunLog, conversation_id: str) -> None:
    await run_log.open_run(conversation_id, "run-1")
    first = run_log.writer(conversation_id, "run-1", FAST)
    first.add_event("tool", '{"call_id":"a","status":"started"}')
    await until(lambda: first.unwritten == 0, what="the first attempt's tool event in the log")
    second = run_log.writer(conversation_id, "run-1", FAST)
    second.add_event("tool", '{"call_id":"b","status":"started"}')
    second.add("answer")
    await second.finish("done")
    first.add_event("tool", '{"call_id":"late","status":"completed"}')  # fenced: never written
    await first.finish("done")
    events = await events_of(run_log, conversation_id)
    assert [(e.kind, e.text) for e in events] == [
        ("tool", '{"call_id":"a","status":"started"}'), ("reset", "restarted"),
        ("tool", '{"call_id":"b","status":"started"}'), ("message", "answer"), ("done", "")]


async def test_entries_carry_run_sequence_kind_and_text(run_log: RunLog, conversation_id: str) -> None:
    start = await run_log.open_run(conversation_id, "run-1")
    writer = run_log.writer(conversation_id, "run-1", FAST)
    writer.add("hello")
    await writer.finish("done")
    entries = await run_log.redis.xrange(stream_key(conversation_id))
    assert entries[0] == (start, {"r": "1", "n": "0", "k": "s", "t": "run-1"})
    assert [fields["n"] for _, fields in entries] == ["0", "1", "2"]
    assert [fields["k"] for _, fields in entries] == ["s", "m", "d"]


async def test_a_sealed_run_refuses_every_later_write(run_log: RunLog, conversation_id: str) -> None:
    await run_log.open_run(conversation_id, "run-1")
    first = run_log.writer(conversation_id, "run-1", FAST)
    first.add("answer")
    await first.finish("done")
    late = run_log.writer(conversation_id, "run-1", FAST)  # a redelivery after the run ended
    late.add("a different answer")
    await late.finish("done")
    assert late.fenced == "sealed"
    assert text_of(await events_of(run_log, conversation_id)) == "answer"


async def test_a_redelivered_run_resets_readers_and_fences_the_old_attempt(
    run_log: RunLog, conversation_id: str
) -> None:
    await run_log.open_run(conversation_id, "run-1")
    old = run_log.writer(conversation_id, "run-1", FAST)
    old.add("partial answ")
    await until(lambda: old.unwritten == 0, what="the first attempt's text in the log")
    new = run_log.writer(conversation_id, "run-1", FAST)  # the durable host runs it again
    new.add("complete answer")
    await until(lambda: new.attempt == 2 and new.unwritten == 0, what="the second attempt's text in the log")
    old.add("er from a zombie")
    await old.finish("done")
    await new.finish("done")
    assert old.fenced == "replaced"
    events = await events_of(run_log, conversation_id)
    assert [e.kind for e in events] == ["message", "reset", "message", "done"]
    assert text_of(events) == "complete answer"


async def test_cancel_seals_the_run_and_stops_its_writer(run_log: RunLog, conversation_id: str) -> None:
    await run_log.open_run(conversation_id, "run-1")
    writer = run_log.writer(conversation_id, "run-1", FAST)
    writer.add("start")
    await until(lambda: writer.unwritten == 0, what="the text in the log")
    assert await run_log.cancel(conversation_id, "run-1") == "ok"
    assert await run_log.cancel(conversation_id, "run-1") == "sealed"
    writer.add(" more")
    await writer.finish("done")
    assert writer.fenced == "sealed"
    events = await events_of(run_log, conversation_id)
    assert [e.kind for e in events] == ["message", "cancelled"]


async def test_a_stalled_run_is_ended_once_with_an_error(run_log: RunLog, conversation_id: str) -> None:
    await run_log.open_run(conversation_id, "run-1")
    await run_log.begin_attempt(conversation_id, "run-1")  # a worker began it, then went silent
    assert await run_log.seal_if_stalled(conversation_id, "run-1", Liveness(5, 5)) == "alive"
    await until(lambda: lease_older_than(run_log, conversation_id, 0.3), what="the lease to age")
    assert await run_log.seal_if_stalled(conversation_id, "run-1", Liveness(0.2, 0.2)) == "stalled"
    assert await run_log.seal_if_stalled(conversation_id, "run-1", Liveness(0.2, 0.2)) == "sealed"
    events = await events_of(run_log, conversation_id)
    assert [e.kind for e in events] == ["error"]
    assert "stalled" in events[0].text


async def test_a_live_writer_keeps_its_run_from_stalling(run_log: RunLog, conversation_id: str) -> None:
    await run_log.open_run(conversation_id, "run-1")
    writer = run_log.writer(conversation_id, "run-1", WritePolicy(liveness=Liveness(stall_seconds=0.3)))
    await until(lambda: writer.flushes >= 6, what="six lease renewals")  # silent, like a long tool call, but alive
    assert await run_log.seal_if_stalled(conversation_id, "run-1", Liveness(0.4, 0.4)) == "alive"
    await writer.finish("done")


async def test_readers_of_a_run_never_see_other_runs(run_log: RunLog, conversation_id: str) -> None:
    for run, text in [("run-1", "first answer"), ("run-2", "second answer")]:
        await run_log.open_run(conversation_id, run)
        writer = run_log.writer(conversation_id, run, FAST)
        writer.add(text)
        await writer.finish("done")
    assert text_of(await events_of(run_log, conversation_id)) == "second answer"
    assert text_of(await events_of(run_log, conversation_id, correlation_id="run-1")) == "first answer"
    assert text_of(await events_of(run_log, conversation_id, correlation_id="run-2")) == "second answer"


async def test_interleaved_runs_stay_apart(run_log: RunLog, conversation_id: str) -> None:
    await run_log.open_run(conversation_id, "a")
    await run_log.open_run(conversation_id, "b")
    a, b = run_log.writer(conversation_id, "a", FAST), run_log.writer(conversation_id, "b", FAST)
    for i in range(20):
        a.add(f"a{i}")
        b.add(f"b{i}")
        await until(lambda: a.unwritten == 0 and b.unwritten == 0, what="both chunks in the log")
    await a.finish("done")
    await b.finish("error", "model failed")
    assert text_of(await events_of(run_log, conversation_id, correlation_id="a")) == "".join(f"a{i}" for i in range(20))
    b_events = await events_of(run_log, conversation_id, correlation_id="b")
    assert b_events[-1] == RunEvent(b_events[-1].id, "error", "model failed")


async def test_cursor_resumes_strictly_after_it_at_every_position(run_log: RunLog, conversation_id: str) -> None:
    await run_log.open_run(conversation_id, "run-1")
    writer = run_log.writer(conversation_id, "run-1", FAST)
    for i in range(8):
        writer.add(f"w{i} ")
        await until(lambda: writer.unwritten == 0, what="the chunk in the log")  # one entry per chunk
    await writer.finish("done")
    events = await events_of(run_log, conversation_id)
    for index, event in enumerate(events):
        rest = await events_of(run_log, conversation_id, cursor=event.id)
        assert rest == events[index + 1:]


async def test_cursor_errors_are_told_apart(run_log: RunLog, conversation_id: str) -> None:
    with pytest.raises(ConversationNotFound):
        await run_log.resolve(conversation_id)
    with pytest.raises(ConversationNotFound):
        await run_log.resolve(conversation_id, cursor="1-0")
    await run_log.open_run(conversation_id, "run-1")
    with pytest.raises(RunNotFound):
        await run_log.resolve(conversation_id, correlation_id="nope")
    for malformed in ["abc", "1-", "-1", "1-2-3", "99999999999999999999999-0", "1.5-0", " 1-0"]:
        with pytest.raises(InvalidCursor):
            await run_log.resolve(conversation_id, cursor=malformed)
    with pytest.raises(InvalidCursor):
        await run_log.resolve(conversation_id, cursor="99999999999999-0")  # from the future
    with pytest.raises(InvalidCursor):
        await run_log.resolve(conversation_id, cursor="1-0")  # older than the conversation: not its own


async def test_a_trimmed_cursor_is_gone_not_a_silent_gap(redis_url: str, conversation_id: str) -> None:
    from streaming.redis_clients import connect

    log = RunLog(connect(redis_url), Retention(ttl_seconds=60, maxlen=100))
    try:
        await log.open_run(conversation_id, "run-1")
        await log.begin_attempt(conversation_id, "run-1")
        for i in range(400):  # one entry per append: more than the cap keeps
            await log.append(conversation_id, "run-1", 1, [("message", f"{i} ")])
        first_chunk = (await log.redis.xrange(stream_key(conversation_id), count=2))[1][0]
        for i in range(400):
            await log.append(conversation_id, "run-1", 1, [("message", f"{i} ")])
        await log.append(conversation_id, "run-1", 1, [("done", "")])
        assert await log.redis.xlen(stream_key(conversation_id)) < 800
        with pytest.raises(CursorExpired):
            await log.resolve(conversation_id, cursor=first_chunk)
    finally:
        await log.redis.aclose()


async def test_every_write_slides_the_ttl_of_both_keys(redis_url: str, conversation_id: str) -> None:
    """A long run must not expire while it is still writing: each kind of write renews both keys' TTL."""
    from streaming.redis_clients import connect

    log = RunLog(connect(redis_url), Retention(ttl_seconds=60, maxlen=100))
    keys = (stream_key(conversation_id), meta_key(conversation_id))

    async def expiring_soon() -> None:  # as if 59 s had passed since the last write
        for key in keys:
            assert await log.redis.pexpire(key, 1000)

    async def renewed() -> bool:
        return all([await log.redis.pttl(key) > 59_000 for key in keys])

    try:
        await log.open_run(conversation_id, "run-1")
        assert await renewed()
        await expiring_soon()
        assert await log.begin_attempt(conversation_id, "run-1") == 1
        assert await renewed(), "beginning an attempt did not renew the TTL"
        await expiring_soon()
        assert await log.append(conversation_id, "run-1", 1, [("message", "more")]) == "ok"
        assert await renewed(), "an append did not renew the TTL"
        await expiring_soon()
        assert await log.append(conversation_id, "run-1", 1, []) == "ok"  # a writer's lease renewal
        assert await renewed(), "a lease renewal did not renew the TTL"
    finally:
        await log.redis.aclose()


async def test_a_conversation_is_gone_once_its_ttl_has_passed(redis_url: str, conversation_id: str) -> None:
    from streaming.redis_clients import connect

    log = RunLog(connect(redis_url), Retention(ttl_seconds=1, maxlen=100))
    try:
        await log.open_run(conversation_id, "run-1")
        for key in (stream_key(conversation_id), meta_key(conversation_id)):
            assert 0 < await log.redis.pttl(key) <= 1000
        await until(lambda: gone(log, conversation_id), within=5, what="Redis to expire both keys")
        with pytest.raises(ConversationNotFound):
            await log.resolve(conversation_id)
    finally:
        await log.redis.aclose()


def test_newlines_are_normalised_to_lf() -> None:
    assert normalize_newlines("a\r\nb\rc\nd\r\n\r") == "a\nb\nc\nd\n\n"


def test_previous_entry_id_is_the_greatest_id_before() -> None:
    assert previous_entry_id("5-3") == "5-2"
    assert previous_entry_id("5-0") == "4-18446744073709551615"


async def test_a_crlf_split_across_chunks_is_one_line_break(run_log: RunLog, conversation_id: str) -> None:
    await run_log.open_run(conversation_id, "run-1")
    writer = run_log.writer(conversation_id, "run-1", FAST)
    for piece in ["one\r", "\ntwo\r", "\r", "\nthree"]:
        writer.add(piece)
        await until(lambda: writer.unwritten == 0, what="the piece in the log")  # separate flushes
    await writer.finish("done")
    assert text_of(await events_of(run_log, conversation_id)) == "one\ntwo\n\nthree"


async def test_a_run_no_worker_has_begun_gets_the_start_allowance_not_the_stall_time(
    run_log: RunLog, conversation_id: str
) -> None:
    await run_log.open_run(conversation_id, "queued")
    await until(lambda: lease_older_than(run_log, conversation_id, 0.3), what="the lease to age")
    assert await run_log.seal_if_stalled(conversation_id, "queued", Liveness(0.2, 5)) == "alive"
    assert await run_log.seal_if_stalled(conversation_id, "queued", Liveness(0.2, 0.2)) == "stalled"
    events = await events_of(run_log, conversation_id)
    assert [e.kind for e in events] == ["error"] and "not started" in events[0].text


# --- Admission: how many accepted runs may wait for a worker ---------------------------------------


@pytest.fixture
async def own_log(tmp_path: Path) -> AsyncIterator[RunLog]:
    """A run log on a Redis of the test's own: the queue of waiting runs is shared by the whole server."""
    from streaming.redis_clients import connect
    from travelplanner.embedded_redis import EmbeddedRedis

    with EmbeddedRedis(tmp_path) as server:
        log = RunLog(connect(server.url), Retention(ttl_seconds=120, maxlen=1000))
        yield log
        await log.redis.aclose()


async def test_runs_waiting_for_a_worker_are_capped_across_conversations(own_log: RunLog) -> None:
    admission = Admission(max_queued_runs=2, max_queued_per_conversation=0, window_seconds=600)
    await own_log.open_run("conversation-aaaaaaaa", "run-1", admission=admission)
    await own_log.open_run("conversation-bbbbbbbb", "run-2", admission=admission)
    with pytest.raises(QueueFull) as full:
        await own_log.open_run("conversation-cccccccc", "run-3", admission=admission)
    assert full.value.waiting == 2
    with pytest.raises(ConversationNotFound):  # refused means nothing was written
        await own_log.resolve("conversation-cccccccc")
    assert await own_log.begin_attempt("conversation-aaaaaaaa", "run-1") == 1  # a worker began one
    await own_log.open_run("conversation-cccccccc", "run-3", admission=admission)
    assert await own_log.cancel("conversation-bbbbbbbb", "run-2") == "ok"  # a cancelled run waits no more
    await own_log.open_run("conversation-dddddddd", "run-4", admission=admission)
    await own_log.open_run("conversation-eeeeeeee", "run-5")  # no admission (a worker's own): not counted
    assert await own_log.redis.pttl(QUEUE_KEY) > 0


async def test_turns_waiting_in_one_conversation_are_capped(own_log: RunLog) -> None:
    admission = Admission(max_queued_runs=100, max_queued_per_conversation=2, window_seconds=600)
    conversation = "conversation-ffffffff"
    await own_log.open_run(conversation, "turn-1", admission=admission)
    await own_log.open_run(conversation, "turn-2", admission=admission)
    with pytest.raises(ConversationBusy) as busy:
        await own_log.open_run(conversation, "turn-3", admission=admission)
    assert busy.value.waiting == 2
    await own_log.open_run("conversation-gggggggg", "other-1", admission=admission)  # others are not affected
    assert (await own_log.resolve(conversation)).correlation_id == "turn-2"  # the refused turn left no trace
    await own_log.begin_attempt(conversation, "turn-1")
    await own_log.open_run(conversation, "turn-3", admission=admission)
    with pytest.raises(ConversationBusy):
        await own_log.open_run(conversation, "turn-4", admission=admission)
    assert await own_log.cancel(conversation, "turn-2") == "ok"
    await own_log.open_run(conversation, "turn-4", admission=admission)
    assert await own_log.redis.zcard(QUEUE_KEY) == 3  # turn-3, turn-4, other-1: refused turns left none


async def test_a_run_waiting_longer_than_the_start_allowance_no_longer_counts(own_log: RunLog) -> None:
    """It will end as "not started" anyway; counting it for ever would refuse every run after an outage."""
    admission = Admission(max_queued_runs=1, max_queued_per_conversation=1, window_seconds=0.3)
    await own_log.open_run("conversation-hhhhhhhh", "run-1", admission=admission)
    with pytest.raises(QueueFull):
        await own_log.open_run("conversation-iiiiiiii", "run-2", admission=admission)

    async def admitted(conversation: str, run: str) -> bool:
        try:
            await own_log.open_run(conversation, run, admission=admission)
        except (QueueFull, ConversationBusy):
            return False
        return True

    await until(lambda: admitted("conversation-iiiiiiii", "run-2"), within=5, what="the old run to age out")
    await until(lambda: admitted("conversation-iiiiiiii", "run-3"), within=5, what="the old turn to age out")
