"""The stream endpoint as a client reads it: complete SSE events, comments, and the run's text.

Every suite (tests, chaos, bench) reads streams through this module. Fields are
parsed by httpx-sse's public `EventSource`, one complete block at a time; this
module adds what the contract needs on top: the comments (`: closing: ...`),
the WHATWG rule that a block without a data line is no event, events cut off
mid-way not counting as received, and the reassembly rule (a `reset`
discards the run's text so far). The server ends lines with LF only, so a
block ends at the first blank line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

import httpx
from httpx_sse import EventSource

TERMINAL_KINDS = frozenset({"done", "error", "cancelled"})


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """One complete event as a client received it."""

    id: str
    kind: str
    data: str

    @property
    def terminal(self) -> bool:
        return self.kind in TERMINAL_KINDS


@dataclass
class SSEStream:
    """An incremental reader: feed it body bytes in any split, read complete events and comments."""

    events: list[ReceivedEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    retry: int | None = None
    _pending: bytes = b""  # the start of a block whose blank line has not arrived yet

    def feed(self, data: bytes) -> list[ReceivedEvent]:
        """Parse more bytes; returns the events they completed."""
        *blocks, self._pending = (self._pending + data).split(b"\n\n")
        fresh = [event for block in blocks if (event := self._block(block.decode("utf-8"))) is not None]
        self.events += fresh
        return fresh

    def _block(self, text: str) -> ReceivedEvent | None:
        lines = text.split("\n")
        self.comments += [line[1:].strip() for line in lines if line.startswith(":")]
        response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=f"{text}\n\n".encode())
        sse = next(EventSource(response).iter_sse(), None)
        if sse is None:
            return None
        if sse.retry is not None:
            self.retry = sse.retry
        if not any(line.partition(":")[0] == "data" for line in lines):
            return None  # retry: or comments only: nothing is dispatched
        return ReceivedEvent(sse.id, sse.event or "message", sse.data)

    @property
    def closing(self) -> str | None:
        """The reason the server gave for ending the response early, if it did."""
        closing = [c for c in self.comments if c.startswith("closing:")]
        return closing[-1].removeprefix("closing:").strip() if closing else None

    @property
    def last_id(self) -> str | None:
        return self.events[-1].id if self.events else None


def parse(body: bytes) -> SSEStream:
    stream = SSEStream()
    stream.feed(body)
    return stream


def reassemble(events: Iterable[ReceivedEvent]) -> str:
    """The run's text as a reader shows it: messages appended, a reset discards the text so far."""
    text = ""
    for event in events:
        if event.kind == "reset":
            text = ""
        elif event.kind == "message":
            text += event.data
    return text


def terminals(events: Iterable[ReceivedEvent]) -> list[ReceivedEvent]:
    return [event for event in events if event.terminal]


@dataclass
class Response:
    """One GET of the stream endpoint as a client saw it."""

    status: int
    headers: httpx.Headers
    body: bytes
    ended: bool = True  # the server ended the response (as opposed to the client hanging up)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @cached_property
    def stream(self) -> SSEStream:
        return parse(self.body) if self.content_type.startswith("text/event-stream") else SSEStream()

    @property
    def events(self) -> list[ReceivedEvent]:
        return self.stream.events

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def read_stream(client: httpx.Client, url: str, *, headers: dict[str, str] | None = None,
                max_bytes: int | None = None) -> Response:
    """GET a stream; with `max_bytes`, hang up after that many bytes (possibly mid-event)."""
    with client.stream("GET", url, headers=headers or {}) as response:
        body, ended = b"", True
        for piece in response.iter_raw():
            body += piece
            if max_bytes is not None and len(body) >= max_bytes:
                body, ended = body[:max_bytes], False
                break
        return Response(response.status_code, response.headers, body, ended)


async def get_stream(client: httpx.AsyncClient, url: str, *, last_event_id: str | None = None,
                     cursor: str | None = None, accept: str | None = None, max_bytes: int | None = None,
                     until_kind: str | None = None, within: float = 30.0,
                     opened: asyncio.Event | None = None) -> Response:
    """GET a run's stream; with `max_bytes`, hang up after that many body bytes (mid-event included).

    With `until_kind`, hang up once an event of that kind has arrived whole (say "message": the run's text
    has begun). `opened` is set once the response has begun (status and headers received), for tests that
    act then.
    """
    headers = {"Accept": accept} if accept else {}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    path, _, query = url.partition("?")
    params = dict(pair.split("=", 1) for pair in query.split("&") if "=" in pair)
    if cursor:
        params["cursor"] = cursor
    body, ended = b"", True
    async with asyncio.timeout(within), client.stream("GET", path, params=params, headers=headers) as response:
        if opened is not None:
            opened.set()
        watching = SSEStream()
        async for piece in response.aiter_raw():
            if max_bytes is not None and len(body) + len(piece) >= max_bytes:
                piece, ended = piece[: max_bytes - len(body)], False
            body += piece
            if until_kind is not None and any(e.kind == until_kind for e in watching.feed(piece)):
                ended = False
            if not ended:
                break
    return Response(response.status_code, response.headers, body, ended)
