"""What the streaming core reports as it serves a stream, for whoever measures it (metrics).

A host that measures nothing passes no observer, and a response then costs nothing more: no wrapper, no
clock read per event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal, Protocol

from redis_stream_response_handler import RunEvent
from streaming.reader import ReadItem

Resumed = Literal["last-event-id", "cursor"] | None  # how a response was asked to resume, if it was


class StreamObserver(Protocol):
    def opened(self, *, plain: bool, resumed: Resumed) -> None:
        """A stream response began (a reader resuming from an event id says how it asked)."""

    def closed(self, *, plain: bool) -> None:
        """It ended, however it ended."""

    def delivered(self, entry_id: str) -> None:
        """An event is being handed to the server to send: its id holds the time Redis stored it."""


async def observed(items: AsyncIterator[ReadItem], observer: StreamObserver, *, plain: bool,
                   resumed: Resumed) -> AsyncIterator[ReadItem]:
    """`items`, told to `observer` as they are handed on."""
    observer.opened(plain=plain, resumed=resumed)
    try:
        async for item in items:
            if isinstance(item, RunEvent):
                observer.delivered(item.id)
            yield item
    finally:
        observer.closed(plain=plain)
