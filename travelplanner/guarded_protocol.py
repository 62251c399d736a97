"""uvicorn's HTTP protocol (httptools) with the limits it lacks, for every web process of the standalone host.

uvicorn closes idle keep-alive connections, but nothing bounds a request that
arrives slowly or never: a client sending its headers a byte a second, or
nothing at all, holds a socket and a file descriptor for as long as it likes,
and enough of them exhaust the process's descriptors, after which not even
/api/health is accepted. A client that stops reading a stream leaves its
response blocked on a full write buffer, past STREAM_MAX_SECONDS, for ever.
This protocol adds, per connection:

- a header timeout, from the connection (or from a keep-alive request's
  first byte) to the end of the headers, and a 64 KiB cap on them;
- a body timeout, from the end of the headers to the end of the body;
- a send timeout: the write buffer may stay full (the client is not
  reading) this long, then the connection is aborted;
- a connection cap: a connection over it is answered 503 with Retry-After at
  once and closed, without being parsed. Those answers take descriptors too
  (each waits up to a second for the request, so that closing does not reset
  the answer away): past `refusal_budget` of them at once, a connection over
  the cap is reset at once, as the operating system would.

What it refuses gets the contract's JSON error, and the parser's own refusals
(malformed HTTP) too; each kind is logged, at most once per 10 seconds with
its count.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from travelplanner.security_headers import API_POLICY, COMMON

logger = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
REFUSAL_LINGER_SECONDS = 1.0  # a refused connection reads (and drops) its request this long before closing
RETRY_AFTER_SECONDS = 1
_EXTRA_HEADERS = [(name.lower().encode(), value.encode())
                  for name, value in {**COMMON, "Content-Security-Policy": API_POLICY}.items()]


@dataclass(frozen=True)
class ConnectionLimits:
    header_seconds: float = 10.0
    body_seconds: float = 30.0
    send_seconds: float = 30.0
    max_connections: int = 10_000
    refusal_budget: int = 1_000  # connections being refused at once (each holds a descriptor up to a second)


class _Tally:
    """Counts events of each kind and logs each kind at most once per `interval` seconds, with its count."""

    def __init__(self, interval: float = 10.0) -> None:
        self._interval = interval
        self._counts: Counter[str] = Counter()
        self._logged: dict[str, float] = {}

    def add(self, what: str) -> None:
        self._counts[what] += 1
        now = time.monotonic()
        if now - self._logged.get(what, -self._interval) >= self._interval:
            logger.warning("%s: %d in the last %g s", what, self._counts.pop(what), self._interval)
            self._logged[what] = now


_tally = _Tally()


def raw_json_response(status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None,
                      default_headers: list[tuple[bytes, bytes]] | None = None) -> bytes:
    body = json.dumps({"error": message}).encode()
    headers = [*(default_headers or []), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), (b"connection", b"close"), *_EXTRA_HEADERS,
               *(extra or [])]
    return STATUS_LINE[status] + b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n" + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    refusing: ClassVar[int] = 0  # connections of this server being refused right now

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused = False
        self._counted = False  # counted in `refusing`
        self._reading_headers = False
        self._head_bytes = 0
        self._read_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None

    # --- the connection cap ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self._refuse(transport)
            return
        super().connection_made(transport)
        self._expect_headers()

    def _refuse(self, transport: asyncio.Transport) -> None:
        self._refused = True
        self.transport = transport
        _tally.add(f"refused connections over the cap of {self.limits.max_connections} (HTTP_MAX_CONNECTIONS)")
        cls = type(self)
        if cls.refusing >= self.limits.refusal_budget:
            transport.abort()
            return
        cls.refusing += 1
        self._counted = True
        message = f"too many open connections ({self.limits.max_connections}); retry in a moment"
        retry = [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())]
        transport.write(raw_json_response(503, message, retry, self.server_state.default_headers))
        if transport.can_write_eof():
            transport.write_eof()
        # Read the request before closing: closing on unread data sends a reset that can destroy the answer.
        self._read_timer = self.loop.call_later(REFUSAL_LINGER_SECONDS, transport.close)

    # --- reading: headers and body on time ------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused:
            self.transport.close()
            return
        if self._reading_headers:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._reading_headers and self._head_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
            _tally.add("refused requests with headers over 64 KiB")
            self._answer_and_close(431, "the request headers are larger than 64 KiB")

    def eof_received(self) -> bool | None:  # type: ignore[override]
        if self._refused:
            self.transport.close()
        return None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._reading_headers:  # a keep-alive connection's next request: its headers are due now
            self._expect_headers()

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._start_read_timer(self.limits.body_seconds, self._body_overdue)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._stop_read_timer()
        super().on_message_complete()

    def _expect_headers(self) -> None:
        self._reading_headers = True
        self._head_bytes = 0
        self._start_read_timer(self.limits.header_seconds, self._headers_overdue)

    def _headers_overdue(self) -> None:
        _tally.add(f"cut connections that did not send their request headers within {self.limits.header_seconds:g} s")
        self._answer_and_close(408, f"the request headers did not arrive within {self.limits.header_seconds:g} s")

    def _body_overdue(self) -> None:
        _tally.add(f"cut requests whose body did not arrive within {self.limits.body_seconds:g} s")
        self._answer_and_close(408, f"the request body did not arrive within {self.limits.body_seconds:g} s")

    def _answer_and_close(self, status: int, message: str) -> None:
        """Answer with the contract's error unless a response has begun (then only close)."""
        self._stop_read_timer()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                self.transport.close()
                return
            cycle.disconnected = True  # the app's own answer, if it comes, goes nowhere
            cycle.message_event.set()
        if not self.transport.is_closing():
            self.transport.write(raw_json_response(status, message, None, self.server_state.default_headers))
            self.transport.close()

    def _start_read_timer(self, seconds: float, overdue: Any) -> None:
        self._stop_read_timer()
        self._read_timer = self.loop.call_later(seconds, overdue)

    def _stop_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def send_400_response(self, msg: str) -> None:
        """The parser's refusal (malformed HTTP), in the contract's shape instead of uvicorn's plain text."""
        self._stop_read_timer()
        _tally.add("refused requests that were not valid HTTP")
        self.transport.write(raw_json_response(
            400, "the request is not valid HTTP/1.1 (request line, headers or framing)", None,
            self.server_state.default_headers))
        self.transport.close()

    # --- writing: a client that stops reading ---------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.limits.send_seconds, self._send_overdue)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_overdue(self) -> None:
        self._send_timer = None
        _tally.add(f"cut connections whose client stopped reading for {self.limits.send_seconds:g} s")
        self.transport.abort()  # close() would wait for the full buffer to drain, which it never will

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_read_timer()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        if self._refused:
            if self._counted:
                type(self).refusing -= 1
            return
        super().connection_lost(exc)


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, with these limits."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})
