"""What a client makes of the stream endpoint's bytes: complete SSE events, comments, reassembled text.

Parsing is httpx-sse's (a line decoder that splits on CR, LF and CRLF only, and
the WHATWG field rules); this module adds what the product's contract needs on
top: the comments (`: closing: ...`), the id of the last *complete* event, and
the reassembly rule (a `reset` discards the run's text so far).
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

TERMINAL_KINDS = frozenset({"done", "error", "cancelled"})


@dataclass(frozen=True, slots=True)
class Received:
    """One complete event as a client received it."""

    id: str
    kind: str
    data: str

    @property
    def terminal(self) -> bool:
        return self.kind in TERMINAL_KINDS


@dataclass
class SSEStream:
    """An incremental parser: feed it body bytes in any split, read complete events and comments."""

    events: list[Received] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    retry: int | None = None
    _text: codecs.BufferedIncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="strict"))
    _lines: SSELineDecoder = field(default_factory=SSELineDecoder)
    _decoder: SSEDecoder = field(default_factory=SSEDecoder)
    _has_data: bool = False  # the WHATWG rule: a block without a data line dispatches nothing

    def feed(self, data: bytes) -> list[Received]:
        """Parse more bytes; returns the events they completed."""
        fresh: list[Received] = []
        text = self._text.decode(data)
        if not text:
            return fresh
        for line in self._lines.decode(text):
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            if line.partition(":")[0] == "data":
                self._has_data = True
            sse = self._decoder.decode(line)
            if sse is None:
                continue
            if sse.retry is not None:
                self.retry = sse.retry
            if self._has_data:
                fresh.append(Received(sse.id, sse.event or "message", sse.data))
            self._has_data = False
        self.events += fresh
        return fresh

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


def reassemble(events: Iterable[Received]) -> str:
    """The run's text as a reader shows it: messages appended, a reset discards the text so far."""
    text = ""
    for event in events:
        if event.kind == "reset":
            text = ""
        elif event.kind == "message":
            text += event.data
    return text


def terminals(events: Iterable[Received]) -> list[Received]:
    return [event for event in events if event.terminal]


@dataclass
class Response:
    """One GET of the stream endpoint as a client saw it."""

    status: int
    content_type: str
    body: bytes
    stream: SSEStream
    ended: bool  # the server ended the response (as opposed to the client hanging up)


async def get_stream(client: httpx.AsyncClient, url: str, *, last_event_id: str | None = None,
                     cursor: str | None = None, accept: str | None = None, max_bytes: int | None = None,
                     within: float = 30.0) -> Response:
    """GET a run's stream; with `max_bytes`, hang up after that many body bytes (mid-event included)."""
    headers = {"Accept": accept} if accept else {}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    params = {"cursor": cursor} if cursor else None
    url, _, query = url.partition("?")
    merged = dict(pair.split("=", 1) for pair in query.split("&") if "=" in pair)
    merged |= params or {}
    parsed = SSEStream()
    body = b""
    ended = True
    async with asyncio.timeout(within), client.stream("GET", url, params=merged, headers=headers) as response:
        async for piece in response.aiter_raw():
            if max_bytes is not None and len(body) + len(piece) >= max_bytes:
                piece = piece[: max_bytes - len(body)]
                ended = False
            body += piece
            if response.status_code == 200 and response.headers.get("content-type", "").startswith("text/event"):
                parsed.feed(piece)
            if not ended:
                break
    return Response(response.status_code, response.headers.get("content-type", ""), body, parsed, ended)
