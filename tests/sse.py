"""Reading SSE the way clients do, with httpx-sse's parser, including responses cut mid-event."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from httpx_sse import ServerSentEvent
from httpx_sse._decoders import SSEDecoder, SSELineDecoder


def parse_sse(raw: bytes) -> list[ServerSentEvent]:
    """The events a client has fully received in `raw` (a cut-off last event is not one)."""
    complete = raw[: raw.rfind(b"\n\n") + 2] if b"\n\n" in raw else b""
    lines, decoder = SSELineDecoder(), SSEDecoder()
    events = []
    for line in [*lines.decode(complete.decode("utf-8")), *lines.flush()]:
        event = decoder.decode(line.rstrip("\n"))
        if event is not None:
            events.append(event)
    return events


@dataclass
class Read:
    status: int
    headers: httpx.Headers
    raw: bytes

    @property
    def events(self) -> list[ServerSentEvent]:
        return parse_sse(self.raw)

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8")


def read_stream(client: httpx.Client, url: str, *, headers: dict[str, str] | None = None,
                max_bytes: int | None = None) -> Read:
    """GET a stream; with `max_bytes`, hang up after that many bytes (possibly mid-event)."""
    with client.stream("GET", url, headers=headers or {}) as response:
        raw = b""
        for chunk in response.iter_raw():
            raw += chunk
            if max_bytes is not None and len(raw) >= max_bytes:
                raw = raw[:max_bytes]
                break
        return Read(response.status_code, response.headers, raw)


def reassemble(events: list[ServerSentEvent]) -> str:
    """The run's text as a client rebuilds it (a `reset` discards the run's text so far)."""
    text = ""
    for event in events:
        if event.event == "reset":
            text = ""
        elif event.event == "message":
            text += event.data
    return text
