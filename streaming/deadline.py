"""A request's run-log work within a deadline, and an honest 503 when it cannot be done in time.

redis-py alone would let a request wait far longer than a client will: a
frozen Redis costs a socket timeout per try (5 s, three tries) plus the wait
for a pooled connection that other stuck requests hold. A request bounds its
Redis work with `within`; when that fails, the error says which of two very
different things happened: Redis is not answering (an outage: an operator
should look) or Redis answers but this process queues more work than its
few connections carry (overload: retry in a moment, or add web processes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from streaming.redis_clients import PoolExhausted, answered_within

logger = logging.getLogger(__name__)

BUSY_RETRY_SECONDS = 2
DOWN_RETRY_SECONDS = 5

T = TypeVar("T")


class RunLogTrouble(Exception):
    """The run log could not serve a request in time."""

    def __init__(self, *, busy: bool, seconds: float) -> None:
        self.busy = busy
        self.retry_after = BUSY_RETRY_SECONDS if busy else DOWN_RETRY_SECONDS
        self.message = (f"the server is busy: its requests to the run log (Redis) waited over {seconds:g} s; retry "
                        f"in {self.retry_after} s" if busy else
                        f"the run log (Redis) is unreachable or did not answer within {seconds:g} s; try again")
        super().__init__(self.message)


async def within(redis: aioredis.Redis, seconds: float, work: Awaitable[T]) -> T:
    """`work`'s result if it is done within `seconds`; otherwise RunLogTrouble saying why it could not be.

    The work runs as a task of its own and is given up at the deadline rather than only cancelled: on
    Python 3.11 a cancellation that lands as redis-py's `wait_for` completes is lost, and the work would go
    on for its socket timeouts (15 s) before the request could answer.
    """
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:  # the request itself is going away
        task.cancel()
        raise
    if not done:
        task.cancel()
        task.add_done_callback(_forget)
        raise _trouble(redis, seconds, TimeoutError(f"no answer within {seconds:g} s"))
    try:
        return task.result()
    except (RedisError, OSError) as error:
        raise _trouble(redis, seconds, error) from error


def _trouble(redis: aioredis.Redis, seconds: float, error: BaseException) -> RunLogTrouble:
    # Out of time (or of pooled connections) while Redis answered others meanwhile: the wait was ours.
    waited = isinstance(error, TimeoutError | PoolExhausted)
    busy = waited and answered_within(redis, seconds)
    logger.warning("run log %s: %s", "busy" if busy else "unreachable", error or type(error).__name__)
    return RunLogTrouble(busy=busy, seconds=seconds)


def _forget(task: asyncio.Future[Any]) -> None:
    """An abandoned task's outcome, fetched so that asyncio does not report it as never retrieved."""
    if not task.cancelled():
        task.exception()
