"""Waiting on a condition instead of on the clock.

A test that sleeps "long enough" for something to happen is slow when the
machine is idle and flaky when it is busy. These poll the condition itself
and fail, naming what did not happen, only after a generous bound.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

POLL_SECONDS = 0.01


async def until(condition: Callable[[], bool | Awaitable[bool]], *, within: float = 15.0, what: str = "") -> None:
    """Return as soon as `condition()` is true; AssertionError after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g} s: {what or condition}")
        await asyncio.sleep(POLL_SECONDS)


def until_sync(condition: Callable[[], bool], *, within: float = 15.0, what: str = "") -> None:
    """`until` for synchronous tests."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g} s: {what or condition}")
        time.sleep(POLL_SECONDS)
