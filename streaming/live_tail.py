"""One blocking XREAD per process serves every live reader.

A reader (`streaming.reader`) first pages through what the log already holds,
then subscribes to its conversation's stream here. `LiveTail` keeps a single connection blocked
in `XREAD BLOCK` over the streams of all subscribed conversations and fans new
entries out to the subscriptions, so Redis connections do not grow with the
number of readers and a chunk reaches every reader one wake-up after it is
written. A new stream joins the wait at once: subscribing appends to a small
per-process wake stream that the XREAD always includes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from typing import Any

import redis.asyncio as aioredis

from redis_stream_response_handler import KEY_PREFIX

logger = logging.getLogger(__name__)

Entry = tuple[str, dict[str, str]]

# The XREAD is woken for joining streams at most once per this window: the first joiner at once,
# later ones together (each wake re-sends every subscribed stream, so a wake per join would cost
# O(N^2) when N readers arrive together). Joiners have already read everything written so far,
# so the wait only delays their next live entry.
JOIN_SECONDS = 0.02


class TailClosed(Exception):
    """The tail stopped (shutdown, or Redis unreachable); the reader should end its response."""


class Subscription:
    def __init__(self, key: str, limit: int) -> None:
        self.key = key
        self._limit = limit
        self._entries: deque[Entry] = deque()
        self._ready = asyncio.Event()
        self.overflowed = False
        self.closed: str | None = None

    def deliver(self, entries: list[Entry]) -> None:
        if len(self._entries) + len(entries) > self._limit:
            # A slow consumer: drop the queue, it re-reads from its own position.
            self._entries.clear()
            self.overflowed = True
        else:
            self._entries.extend(entries)
        self._ready.set()

    def close(self, reason: str) -> None:
        self.closed = reason
        self._ready.set()

    async def next_batch(self, wait_seconds: float) -> list[Entry] | None:
        """Entries delivered since the last call; [] on timeout; None after an overflow."""
        if not self._entries and not self.overflowed and self.closed is None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._ready.wait(), wait_seconds)
        self._ready.clear()
        if self.closed is not None:
            raise TailClosed(self.closed)
        if self.overflowed:
            self.overflowed = False
            return None
        batch = list(self._entries)
        self._entries.clear()
        return batch


class LiveTail:
    def __init__(
        self,
        blocking: aioredis.Redis,
        redis: aioredis.Redis,
        *,
        block_seconds: float = 5.0,
        queue_limit: int = 2000,
        count: int = 1000,
    ) -> None:
        self._blocking = blocking  # a client of its own: it spends its life in XREAD BLOCK
        self._redis = redis
        self._block_ms = int(block_seconds * 1000)
        self._queue_limit = queue_limit
        self._count = count
        self._wake_key = f"{KEY_PREFIX}~wake:{{{uuid.uuid4().hex}}}"
        self._wake_position = "0-0"
        self._subscribers: dict[str, set[Subscription]] = {}
        self._positions: dict[str, str] = {}
        self._changed = asyncio.Event()
        self._reading = False
        self._accepting = True
        self._task: asyncio.Task[None] | None = None
        self._wake_task: asyncio.Task[None] | None = None  # at most one pending wake per blocked XREAD
        self._last_wake = 0.0

    @property
    def subscriber_count(self) -> int:
        return sum(len(subs) for subs in self._subscribers.values())

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="live-tail")

    def close_readers(self, reason: str) -> None:
        """End every live reader's response now (they resume elsewhere); new readers are refused."""
        self._accepting = False
        self._close_all(reason)

    async def stop(self, reason: str = "the server is shutting down") -> None:
        """Close every subscription (their readers end cleanly) and stop the XREAD loop."""
        self.close_readers(reason)
        if self._wake_task is not None:
            self._wake_task.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self._redis.delete(self._wake_key)

    async def subscribe(self, key: str, after: str) -> Subscription:
        if self._task is None or not self._accepting:
            raise TailClosed("the server is shutting down")
        sub = Subscription(key, self._queue_limit)
        subs = self._subscribers.get(key)
        if subs is None:
            self._subscribers[key] = subs = set()
            self._positions[key] = after
            if self._reading and self._wake_task is None:
                # The running XREAD does not include this stream yet: wake it (once for every joiner).
                delay = max(0.0, self._last_wake + JOIN_SECONDS - asyncio.get_running_loop().time())
                self._wake_task = asyncio.create_task(self._wake_after(delay), name="live-tail-wake")
        subs.add(sub)
        self._changed.set()
        return sub

    async def _wake_after(self, seconds: float) -> None:
        if seconds:
            await asyncio.sleep(seconds)
        self._last_wake = asyncio.get_running_loop().time()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self._wake_key, {"w": "1"}, maxlen=1)
                pipe.expire(self._wake_key, 3600)
                await pipe.execute()
        except Exception as error:  # the XREAD still ends within its block time
            logger.debug("live tail wake failed: %s", error)
        finally:
            self._wake_task = None

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscribers.get(sub.key)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self._subscribers[sub.key]
            del self._positions[sub.key]

    async def _run(self) -> None:
        delay = 0.05
        while True:
            if not self._subscribers:
                self._changed.clear()
                await self._changed.wait()
                continue
            streams = {self._wake_key: self._wake_position, **self._positions}
            self._reading = True
            try:
                reply: Any = await self._blocking.xread(streams, count=self._count, block=self._block_ms)
                delay = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.warning("live tail read failed (%s); closing %d readers", error, self.subscriber_count)
                self._close_all("the run log is unreachable")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            finally:
                self._reading = False
            for key, entries in reply or ():
                if key == self._wake_key:
                    self._wake_position = entries[-1][0]
                    continue
                if key not in self._positions:
                    continue  # everyone left while we waited
                self._positions[key] = entries[-1][0]
                for sub in tuple(self._subscribers[key]):
                    sub.deliver(entries)

    def _close_all(self, reason: str) -> None:
        for subs in self._subscribers.values():
            for sub in subs:
                sub.close(reason)
        self._subscribers.clear()
        self._positions.clear()

