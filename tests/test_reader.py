"""streaming/reader.py with the live tail against a real Redis: how a reader joins, and how it recovers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from redis_stream_response_handler import Retention, RunEvent, RunLog, RunRef
from streaming.live_tail import LiveTail
from streaming.reader import ReadPolicy, read_run
from streaming.redis_clients import connect

POLICY = ReadPolicy(max_seconds=30, heartbeat_seconds=15)
RETENTION = Retention(ttl_seconds=120, maxlen=20000)


class Reader:
    """One read_run in a task of its own; `saw(text)` waits until an event with that text has arrived."""

    def __init__(self, log: RunLog, tail: LiveTail, ref: RunRef) -> None:
        self.events: list[RunEvent] = []
        self._arrived = asyncio.Condition()
        self.task = asyncio.create_task(self._read(log, tail, ref))

    async def _read(self, log: RunLog, tail: LiveTail, ref: RunRef) -> None:
        async for item in read_run(log, tail, ref, POLICY):
            if isinstance(item, RunEvent):
                async with self._arrived:
                    self.events.append(item)
                    self._arrived.notify_all()

    async def saw(self, text: str) -> None:
        async with self._arrived:
            await self._arrived.wait_for(lambda: any(event.text == text for event in self.events))


class HookAfterFirstPage(RunLog):
    """A run log that runs `hook` once, after the first page a reader reads and before that page is returned."""

    def __init__(self, redis: aioredis.Redis, hook: Callable[[], Awaitable[None]]) -> None:
        super().__init__(redis, RETENTION)
        self._hook: Callable[[], Awaitable[None]] | None = hook

    async def read_after(self, ref: RunRef, after: str, count: int = 1000) -> tuple[list[RunEvent], str, bool]:
        page = await super().read_after(ref, after, count)
        if self._hook is not None:
            hook, self._hook = self._hook, None
            await hook()
        return page


async def started_run(log: RunLog, conversation_id: str, first_chunk: str) -> RunRef:
    await log.open_run(conversation_id, "run-1")
    assert await log.begin_attempt(conversation_id, "run-1") == 1
    assert await log.append(conversation_id, "run-1", 1, [("message", first_chunk)]) == "ok"
    return await log.resolve(conversation_id)


async def test_an_entry_written_while_a_reader_joins_reaches_it_when_another_reader_already_tails(
    run_log: RunLog, live_tail: LiveTail, conversation_id: str
) -> None:
    """The entry lands after the joiner's catch-up read and reaches the tail before the joiner subscribes: the
    tail fans it out to the reader already there and moves on, so only the joiner's second read can find it."""
    ref = await started_run(run_log, conversation_id, "a")
    async with asyncio.timeout(20):
        first = Reader(run_log, live_tail, ref)
        await first.saw("a")  # caught up and subscribed: the tail follows this stream

        async def write_b_and_let_the_tail_pass_it() -> None:
            assert await run_log.append(conversation_id, "run-1", 1, [("message", "b")]) == "ok"
            await first.saw("b")

        joiner = Reader(HookAfterFirstPage(run_log.redis, write_b_and_let_the_tail_pass_it), live_tail, ref)
        await joiner.saw("a")
        await run_log.append(conversation_id, "run-1", 1, [("message", "c"), ("done", "")])
        await asyncio.gather(first.task, joiner.task)
    assert [(e.kind, e.text) for e in joiner.events] == [("message", "a"), ("message", "b"), ("message", "c"),
                                                         ("done", "")]
    assert joiner.events == first.events


async def test_a_reader_whose_queue_overflowed_reads_what_it_missed_from_the_log(
    redis_url: str, run_log: RunLog, conversation_id: str
) -> None:
    """A burst larger than a subscription's queue drops the queue; the reader must page it back from the log."""
    tail = LiveTail(connect(redis_url, blocking_reader=True), run_log.redis, block_seconds=2, queue_limit=5)
    tail.start()
    try:
        ref = await started_run(run_log, conversation_id, "start ")
        async with asyncio.timeout(20):
            reader = Reader(run_log, tail, ref)
            await reader.saw("start ")  # live: what follows comes through the tail
            burst = [("message", f"{i} ") for i in range(20)] + [("done", "")]
            assert len(burst) > 5
            await run_log.append(conversation_id, "run-1", 1, burst)  # one script call: one XREAD reply
            await reader.task
    finally:
        await tail.stop()
    assert "".join(e.text for e in reader.events) == "start " + "".join(f"{i} " for i in range(20))
    assert reader.events[-1].kind == "done"
