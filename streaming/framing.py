"""What a stream response's bytes look like: Server-Sent Events or plain text. Pure functions, no I/O.

SSE is encoded by sse-starlette's `ServerSentEvent`, which splits multi-line
data into one `data:` line per line and cleans the id and event fields, so any
SSE parser rebuilds the text exactly. Plain text is the answer as a document:
it cannot take text back or carry comments, so a reset, the terminal events and
a response that ends before the run does become short bracketed lines, and
heartbeats, tool activity and usage are not sent (a status belongs to a UI, not
to the text; read SSE for it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from sse_starlette.event import ServerSentEvent

from redis_stream_response_handler import RunEvent
from streaming.reader import Closing, Heartbeat, ReadItem

_SSE_DATA = {"done": "[DONE]"}  # what `data:` carries when not the entry's text
_HEARTBEAT = b": heartbeat\n\n"

PLAIN_MARKERS = {
    "tool": "",
    "usage": "",
    "done": "\n",
    "reset": "\n[Restarted: the text below replaces the text above]\n",
    "cancelled": "\n[Cancelled]\n",
}


def sse_preamble(retry_ms: int) -> bytes:
    return ServerSentEvent(retry=retry_ms, sep="\n").encode()


def sse_frame(item: ReadItem) -> bytes:
    if isinstance(item, RunEvent):
        return ServerSentEvent(_SSE_DATA.get(item.kind, item.text), event=item.kind, id=item.id, sep="\n").encode()
    if isinstance(item, Heartbeat):
        return _HEARTBEAT
    return ServerSentEvent(comment=f"closing: {item.reason}; resume from the last event id", sep="\n").encode()


def plain_text_frame(item: ReadItem) -> bytes:
    if isinstance(item, Heartbeat):
        return b""
    if isinstance(item, Closing):
        # Plain text has no comments: a response that ends before the run does says so in a line of its own,
        # or a reader could not tell a cut answer from a finished one.
        return f"\n[Ended early: {item.reason}; read again for the whole text]\n".encode()
    if item.kind == "message":
        return item.text.encode("utf-8")
    if item.kind == "error":
        return f"\n[Error: {item.text}]\n".encode()
    return PLAIN_MARKERS[item.kind].encode()


async def sse_body(items: AsyncIterator[ReadItem], retry_ms: int) -> AsyncIterator[bytes]:
    yield sse_preamble(retry_ms)
    async for item in items:
        yield sse_frame(item)


async def plain_text_body(items: AsyncIterator[ReadItem]) -> AsyncIterator[bytes]:
    async for item in items:
        if frame := plain_text_frame(item):
            yield frame

