"""One run as a user's client makes it: POST the request, then read its SSE stream on the same connection.

A raw asyncio protocol, lean enough for hundreds of runs per load-generator
process. It keeps every event's `id:`, kind and data (to compare with a
re-read of the stream afterwards) and, for each `message` event, the wall
clock at arrival minus the entry id's milliseconds: the stream's event ids are
its Redis entry ids, which Redis makes from its own clock when the entry is
appended.
"""

from __future__ import annotations

import asyncio
import json
import time
from array import array
from dataclasses import dataclass, field

from bench.sse_client import ChunkedBody

AGENT = "TravelPlanner"
TERMINAL = (b"done", b"error", b"cancelled")


@dataclass
class Event:
    id: str
    kind: str
    data: str


@dataclass
class RunOutcome:
    """What one run's client saw; times are time.monotonic_ns() (one clock for every process of the machine)."""

    started_ns: int = 0  # the POST's connection was opened
    accepted_ns: int = 0  # the 202 (or any answer to the POST) arrived
    first_event_ns: int = 0  # the first thing a reader can show: a tool status line or text
    first_message_ns: int = 0
    ended_ns: int = 0  # its terminal event arrived
    post_status: int = 0  # 0: no answer (connection refused or reset)
    stream_status: int = 0  # the stream's HTTP status; 0: none arrived
    stream_url: str = ""
    terminal: str = ""  # done, error, cancelled; "" if the stream ended without one
    events: list[Event] = field(default_factory=list)
    delivery_us: array = field(default_factory=lambda: array("q"))


class RunClient(asyncio.Protocol):
    """POST …/run (unless `stream_url` is given: then only the stream is read), then GET the stream."""

    def __init__(self, host: str, port: int, message: str, outcome: RunOutcome, *, stream_url: str = "") -> None:
        self._host = f"{host}:{port}"
        self._message = message.encode()
        self.outcome = outcome
        self._posting = not stream_url
        self._stream_url = stream_url
        self._buffer = bytearray()
        self._headers_done = False
        self._status = 0
        self._length = -1
        self._chunked = False
        self._body_chunks = ChunkedBody()
        self._line = b""
        self._event_id = ""
        self._event_kind = b""
        self._data: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.done = asyncio.get_running_loop().create_future()

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self._posting:
            transport.write(b"POST /api/agents/%s/run HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain\r\n"
                            b"Content-Length: %d\r\n\r\n%s" % (AGENT.encode(), self._host.encode(),
                                                               len(self._message), self._message))
        else:
            self._get()

    def data_received(self, data: bytes) -> None:
        now_ns, wall_us = time.monotonic_ns(), time.time_ns() // 1000
        if not self._headers_done:
            self._buffer += data
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self._head(bytes(self._buffer[:end]))
            data = bytes(self._buffer[end + 4:])
            self._buffer.clear()
            self._headers_done = True
        if self._posting:
            self._post_body(data, now_ns)
        else:
            self._stream_body(self._body_chunks.feed(data) if self._chunked else data, now_ns, wall_us)
            if self._body_chunks.ended:
                self._finish()

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    # --- the POST ------------------------------------------------------------------------------

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        self._status = int(lines[0].split()[1])
        self._length, self._chunked = -1, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                self._length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                self._chunked = True

    def _post_body(self, data: bytes, now_ns: int) -> None:
        self._buffer += data
        if len(self._buffer) < self._length:
            return
        self.outcome.accepted_ns, self.outcome.post_status = now_ns, self._status
        if self._status != 202:
            self._finish()
            return
        self.outcome.stream_url = json.loads(bytes(self._buffer[:self._length]))["stream_url"]
        self._stream_url = self.outcome.stream_url
        self._buffer.clear()
        self._posting, self._headers_done = False, False
        self._get()

    def _get(self) -> None:
        assert self.transport is not None
        self.transport.write(b"GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n"
                             % (self._stream_url.encode(), self._host.encode()))

    # --- the stream ----------------------------------------------------------------------------

    def _stream_body(self, data: bytes, now_ns: int, wall_us: int) -> None:
        self.outcome.stream_status = self._status
        if self._status != 200:
            self._finish()
            return
        lines = (self._line + data).split(b"\n")
        self._line = lines.pop()
        for line in lines:
            if line.startswith(b"data:"):
                self._data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line.startswith(b"id:"):
                self._event_id = line[3:].strip().decode()
            elif line.startswith(b"event:"):
                self._event_kind = line[6:].strip()
            elif not line and self._event_kind:
                self._event(now_ns, wall_us)

    def _event(self, now_ns: int, wall_us: int) -> None:
        outcome, kind = self.outcome, self._event_kind
        outcome.events.append(Event(self._event_id, kind.decode(), b"\n".join(self._data).decode()))
        if not outcome.first_event_ns and kind not in TERMINAL:
            outcome.first_event_ns = now_ns
        if kind == b"message":
            if not outcome.first_message_ns:
                outcome.first_message_ns = now_ns
            appended_ms = int(self._event_id.split("-", 1)[0])
            outcome.delivery_us.append(wall_us - appended_ms * 1000)
        elif kind in TERMINAL:
            outcome.ended_ns, outcome.terminal = now_ns, kind.decode()
            self._finish()
        self._event_kind, self._data = b"", []

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
        if self.transport is not None:
            self.transport.close()


async def run_once(host: str, port: int, message: str, outcome: RunOutcome, *, stream_url: str = "") -> None:
    """One run (or, with `stream_url`, one read of its stream) to its terminal event or a dropped connection."""
    outcome.started_ns = time.monotonic_ns()
    try:
        _, client = await asyncio.get_running_loop().create_connection(
            lambda: RunClient(host, port, message, outcome, stream_url=stream_url), host, port)
    except OSError:
        return
    try:
        await client.done
    finally:
        client._finish()
