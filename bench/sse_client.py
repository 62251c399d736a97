"""A lean HTTP/1.1 stream client on raw asyncio sockets, for thousands of readers per process.

Only for the bench and only for our own responses: it de-chunks, splits SSE
lines, and looks for the send timestamps the feeders put in each chunk's
text ("~<time.monotonic_ns()> "). Every marker yields one latency sample:
arrival (monotonic ns, the same clock in every process of this machine)
minus send. In buffered mode (the baseline's plain-text body) markers are
read when the whole body has arrived.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Iterable


def marker(now_ns: int | None = None) -> str:
    return f"~{time.monotonic_ns() if now_ns is None else now_ns} "


def markers_in(data: bytes) -> Iterable[int]:
    for token in data.split(b"~")[1:]:
        digits = token.split(b" ", 1)[0]
        if digits.isdigit():
            yield int(digits)


class ChunkedBody:
    """An HTTP/1.1 chunked body decoded as its bytes arrive: `feed` returns the payload so far."""

    def __init__(self) -> None:
        self._raw = bytearray()
        self._remaining = 0  # bytes of the current chunk still to come
        self.ended = False  # the last (empty) chunk has arrived

    def feed(self, data: bytes) -> bytes:
        self._raw += data
        out: list[bytes] = []
        while not self.ended:
            if self._remaining == 0:
                end = self._raw.find(b"\r\n")
                if end < 0:
                    break
                line = bytes(self._raw[:end])
                del self._raw[:end + 2]
                if not line:
                    continue  # the CRLF that closes a chunk's data
                self._remaining = int(line.split(b";")[0], 16)
                self.ended = self._remaining == 0
                continue
            take = min(self._remaining, len(self._raw))
            if not take:
                break
            out.append(bytes(self._raw[:take]))
            del self._raw[:take]
            self._remaining -= take
        return b"".join(out)


class StreamClient(asyncio.Protocol):
    def __init__(self, path: str, host: str, port: int, latencies_us: array, *, sse: bool = True) -> None:
        self._request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                         f"Accept: {'text/event-stream' if sse else 'text/plain'}\r\n\r\n").encode()
        self._sse = sse
        self._latencies = latencies_us
        self._head = bytearray()
        self._headers_done = False
        self._chunked = False
        self._length: int | None = None
        self._body_chunks = ChunkedBody()
        self._line = b""
        self._body = bytearray()
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self.ready = asyncio.get_running_loop().create_future()  # response started (SSE) / request sent
        self.done = asyncio.get_running_loop().create_future()  # terminal event or whole body
        self.ready_ns = 0  # monotonic time the response started (SSE) or the request was sent
        self.heartbeats = 0
        self.events = 0
        self.closing_comment = False

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)
        if not self._sse:
            self.ready_ns = time.monotonic_ns()
            self._resolve(self.ready)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if not self._headers_done:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            self._parse_head(bytes(self._head[:end]))
            data = bytes(self._head[end + 4:])
            self._head.clear()
            self._headers_done = True
        if self._chunked:
            data = self._body_chunks.feed(data)
        if data:
            self._payload(data, now)
        if self._body_chunks.ended:
            self._resolve(self.done)

    def connection_lost(self, exc: Exception | None) -> None:
        self._resolve(self.ready)
        if not self.done.done():
            if not self._sse and self._body:
                self._finish_body(time.monotonic_ns())
            self._resolve(self.done)

    # --- parsing -------------------------------------------------------------------------------

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"transfer-encoding" and b"chunked" in value.lower():
                self._chunked = True
            elif name == b"content-length":
                self._length = int(value.strip())
        if self.status != 200:
            self._resolve(self.ready)

    def _payload(self, data: bytes, now: int) -> None:
        if not self._sse:
            self._body += data
            if self._length is not None and len(self._body) >= self._length:
                self._finish_body(now)
            return
        lines = (self._line + data).split(b"\n")
        self._line = lines.pop()
        for line in lines:
            if line.startswith(b"data:"):
                for sent in markers_in(line):
                    self._latencies.append((now - sent) // 1000)
            elif line.startswith(b"event:"):
                self.events += 1
                if line == b"event: done":
                    self._resolve(self.done)
            elif line.startswith(b"retry:"):
                self.ready_ns = now
                self._resolve(self.ready)
            elif line.startswith(b": heartbeat"):
                self.heartbeats += 1
            elif line.startswith(b": closing"):
                self.closing_comment = True

    def _finish_body(self, now: int) -> None:
        for sent in markers_in(bytes(self._body)):
            self._latencies.append((now - sent) // 1000)
        self._body.clear()
        self._resolve(self.done)

    @staticmethod
    def _resolve(future: asyncio.Future[None]) -> None:
        if not future.done():
            future.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_streams(host: str, port: int, paths: list[str], latencies_us: array, *, sse: bool = True,
                       concurrency: int = 200, within_seconds: float = 60.0) -> list[StreamClient]:
    """Open one stream per path, at most `concurrency` connecting at a time; returns once all are ready."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    clients: list[StreamClient] = []

    async def one(path: str) -> None:
        async with gate:
            _, client = await loop.create_connection(
                lambda: StreamClient(path, host, port, latencies_us, sse=sse), host, port)
            clients.append(client)
            await client.ready

    await asyncio.wait_for(asyncio.gather(*(one(p) for p in paths)), within_seconds)
    return clients
