"""One response's worth of a run: catch up from the log, follow it live, end on time.

`read_run` yields what a stream response sends, in order: the run's events
after the reader's position, up to and including the terminal event; a
`Heartbeat` when nothing was sent for `heartbeat_seconds`; and, when the
response must end before the run does, one `Closing` with the reason (the
window closed, the server is shutting down, Redis is unreachable). Along the
way it applies the liveness rule: a run that shows no progress for the stall
time is offered to the log to be sealed as stalled.

How a reader joins without a gap: it pages through what the log holds
(`XRANGE`), subscribes to the process's live tail, then pages once more, for
entries that the tail fanned out to earlier subscribers while it was
joining. From then on it takes the tail's batches, keeping only entries
after its own position; if its queue overflowed it pages again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from redis_stream_response_handler import (
    Liveness,
    RunEvent,
    RunLog,
    RunRef,
    events_of_run,
    parse_entry_id,
    stream_key,
)
from streaming.live_tail import LiveTail, TailClosed

logger = logging.getLogger(__name__)

SHUTTING_DOWN = "the server is shutting down"
WINDOW_CLOSED = "the response window closed"
LOG_UNREACHABLE = "the run log is unreachable"


@dataclass(frozen=True)
class ReadPolicy:
    max_seconds: float = 120.0  # a response ends after this long; the client resumes
    heartbeat_seconds: float = 15.0
    liveness: Liveness = field(default_factory=Liveness)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Nothing was sent for a while: a sign of life for the connection."""


@dataclass(frozen=True, slots=True)
class Closing:
    """The response ends before the run does, and why; the client resumes from its last event (the framing
    says how, in its format)."""

    reason: str


ReadItem = RunEvent | Heartbeat | Closing
HEARTBEAT = Heartbeat()


async def read_run(log: RunLog, tail: LiveTail, ref: RunRef, policy: ReadPolicy) -> AsyncIterator[ReadItem]:
    if ref.past_the_end:
        return
    deadline = time.monotonic() + policy.max_seconds
    last_sent = last_progress = time.monotonic()

    def wait_seconds() -> float:  # wake for the next heartbeat, stall check or the end of the window
        return max(0.05, min(policy.heartbeat_seconds, policy.liveness.stall_seconds / 2,
                             deadline - time.monotonic()))

    try:
        async with contextlib.aclosing(_Follower(log, tail, ref).batches(wait_seconds)) as batches:
            async for events in batches:
                now = time.monotonic()
                for event in events:
                    yield event
                    if event.terminal:
                        return
                if events:
                    last_sent = last_progress = now
                else:
                    if now - last_sent >= policy.heartbeat_seconds:
                        yield HEARTBEAT
                        last_sent = now
                    if now - last_progress >= policy.liveness.stall_seconds and ref.correlation_id is not None:
                        await log.seal_if_stalled(ref.conversation_id, ref.correlation_id, policy.liveness)
                        last_progress = now
                if now >= deadline:
                    yield Closing(WINDOW_CLOSED)
                    return
    except TailClosed as closed:
        yield Closing(str(closed))
    except RedisError as error:
        logger.warning("run log unreachable while streaming: %s", error)
        yield Closing(LOG_UNREACHABLE)


class _Follower:
    """The run's events after a position, in batches: what the log holds, then what the tail brings.

    An empty batch means the wait passed with nothing of this run (other runs of the conversation may
    be writing).
    """

    def __init__(self, log: RunLog, tail: LiveTail, ref: RunRef) -> None:
        self._log, self._tail, self._ref = log, tail, ref
        self._position = ref.after
        self._seen = parse_entry_id(ref.after)

    def _advance(self, entry_id: str) -> None:
        self._position, self._seen = entry_id, parse_entry_id(entry_id)

    async def _pages(self) -> AsyncIterator[list[RunEvent]]:
        while True:
            events, last, more = await self._log.read_after(self._ref, self._position)
            self._advance(last)
            yield events
            if not more:
                return

    async def batches(self, wait_seconds: Callable[[], float]) -> AsyncIterator[list[RunEvent]]:
        async for events in self._pages():
            yield events
        subscription = await self._tail.subscribe(stream_key(self._ref.conversation_id), self._position)
        try:
            async for events in self._pages():  # what reached earlier subscribers while this one joined
                yield events
            while True:
                entries = await subscription.next_batch(wait_seconds())
                if entries is None:  # the queue overflowed: re-read from our own position
                    async for events in self._pages():
                        yield events
                    continue
                fresh = [entry for entry in entries if parse_entry_id(entry[0]) > self._seen]  # type: ignore[operator]
                if fresh:
                    self._advance(fresh[-1][0])
                yield events_of_run(fresh, self._ref.ordinal)
        finally:
            self._tail.unsubscribe(subscription)
