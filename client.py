#!/usr/bin/env python3
"""Start a TravelPlanner run (or follow one) and show its answer as it streams.

    python client.py "Plan a 3-day trip to Tokyo"
    python client.py --conversation CONVERSATION_ID "Make day 2 a rainy-day plan"
    python client.py --follow CONVERSATION_ID [--run CORRELATION_ID] [--cursor EVENT_ID]

In a terminal the answer is rendered as markdown while it grows, and while the run calls its tools a
status line says what it is doing ("Checking the weather in Kyoto on Wed 2 Dec…") until text replaces
it; with `--plain`, or when stdout is not a terminal, stdout gets exactly what the stream URL serves as
text/plain (the chunks, a newline at `done`: no tool activity). Notices, errors and the tokens the run
used (when the model reports them) go to stderr. Event types this client does not know are skipped.

The stream is read as Server-Sent Events. When the connection drops, the server ends a response early
(it does so every STREAM_MAX_SECONDS, and when it shuts down) or the server is away for a while, the
client reconnects to the same URL with `Last-Event-ID` = the last event it received in full, so no
text is lost or repeated; it gives up after `--max-wait` seconds without a working connection.

Exit codes: 0 done; 1 the run ended with an error, or the server refused a request; 2 the server is
unreachable at start (or bad usage); 3 the run was cancelled; 4 the stream was lost for longer than
--max-wait (the run may still be going: follow it again); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import httpx
from httpx_sse import SSEError, connect_sse
from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.markdown import Markdown
from rich.markup import escape
from rich.segment import Segment
from rich.text import Text

AGENT = "TravelPlanner"
DEFAULT_URL = "http://127.0.0.1:7071"
TERMINAL = frozenset({"done", "error", "cancelled"})
EXIT_CODES = {"done": 0, "error": 1, "cancelled": 3}
RETRYABLE_STATUSES = frozenset({502, 503, 504})  # a proxy or the run log is briefly away: the stream is not gone

FIRST_DELAY = 0.25  # seconds before the first retry of a failed connection; doubles up to MAX_DELAY
MAX_DELAY = 2.0
HEALTHY_SECONDS = 1.0  # a 200 response that delivered nothing but stayed open this long still counts as working
# The server sends a heartbeat every STREAM_HEARTBEAT_SECONDS (15 s by default): three missed ones mean the
# connection is dead even if no error says so.
TIMEOUT = httpx.Timeout(10.0, read=45.0)

# What `Accept: text/plain` serves for the events that are not text; --plain prints the same.
PLAIN_MARKERS = {"done": "\n", "reset": "\n[Restarted: the text below replaces the text above]\n"}


@dataclass(frozen=True)
class StreamEvent:
    """One event of a run: message, tool, usage, reset, done, error or cancelled (or a newer kind); id is its
    Redis entry id."""

    kind: str
    text: str
    id: str

    @property
    def terminal(self) -> bool:
        return self.kind in TERMINAL


class ClientError(Exception):
    exit_code = 1


class ServerRefused(ClientError):
    """The server answered with an error status; `message` is its JSON "error"."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"the server answered {status}: {message}")
        self.status = status
        self.message = message

    @classmethod
    def from_response(cls, response: httpx.Response) -> ServerRefused:
        try:
            message = str(response.json()["error"])
        except (ValueError, KeyError, TypeError):
            message = response.text.strip()[:300] or response.reason_phrase
        return cls(response.status_code, message)


class Unreachable(ClientError):
    exit_code = 2

    def __init__(self, base_url: httpx.URL, error: httpx.TransportError) -> None:
        super().__init__(f"cannot reach the TravelPlanner server at {base_url} ({error}); is it running? "
                         f"(`python standalone.py` serves {DEFAULT_URL}; --url or TRAVELPLANNER_URL picks another)")


class StreamLost(ClientError):
    exit_code = 4

    def __init__(self, message: str, last_event_id: str | None) -> None:
        super().__init__(message)
        self.last_event_id = last_event_id


def start_run(client: httpx.Client, message: str, conversation_id: str | None = None) -> dict[str, str]:
    """POST the message; returns the 202 answer (conversation_id, correlation_id, stream_url)."""
    body = {"message": message, **({"conversation_id": conversation_id} if conversation_id else {})}
    try:
        response = client.post(f"/api/agents/{AGENT}/run", json=body)
    except (httpx.ConnectError, httpx.ConnectTimeout) as error:
        raise Unreachable(client.base_url, error) from error
    except httpx.TransportError as error:
        raise ClientError(f"the request to start the run failed: {describe(error)}") from error
    if response.status_code != 202:
        raise ServerRefused.from_response(response)
    return dict(response.json())


def stream_url(conversation_id: str, run: str | None = None) -> str:
    return f"/api/agent/stream/{conversation_id}" + (f"?run={run}" if run else "")


def stream_events(
    client: httpx.Client,
    url: str,
    *,
    last_event_id: str | None = None,
    max_wait: float = 60.0,
    fail_fast: bool = False,
    notify: Callable[[str], None] = lambda _message: None,
) -> Iterator[StreamEvent]:
    """Every event of the run at `url` after `last_event_id`, each exactly once, up to the terminal one.

    Reconnects (same URL, `Last-Event-ID`) whenever a response ends before the terminal event: at once
    after a response that delivered events, otherwise after a delay that doubles up to MAX_DELAY. Raises
    `StreamLost` after `max_wait` seconds without a working connection, `ServerRefused` on an error
    status that retrying cannot cure (404, 410, ...), and with `fail_fast`, `Unreachable` when the very
    first connection is refused.
    """
    delay = FIRST_DELAY
    failing_since: float | None = None
    first = True
    while True:
        opened = time.monotonic()
        connected = delivered = False
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        try:
            with connect_sse(client, "GET", url, headers=headers) as source:
                if source.response.status_code != 200:
                    source.response.read()
                    refused = ServerRefused.from_response(source.response)
                    if source.response.status_code not in RETRYABLE_STATUSES:
                        raise refused
                    reason = str(refused)
                else:
                    connected = True
                    for sse in source.iter_sse():
                        # httpx-sse also "dispatches" an empty event, repeating the last id, after every
                        # comment (`: heartbeat`, `: closing: ...`) and after `retry:`: those are not events.
                        if not sse.id or sse.id == last_event_id:
                            continue
                        last_event_id, delivered = sse.id, True
                        event = StreamEvent(sse.event, sse.data, sse.id)
                        yield event
                        if event.terminal:
                            return
                    reason = "the server ended the response before the run ended"
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            if first and fail_fast:
                raise Unreachable(client.base_url, error) from error
            reason = describe(error)
        except httpx.TransportError as error:
            reason = describe(error)
        except SSEError as error:
            raise ClientError(f"{url} did not answer with an event stream: {error}") from error
        first = False
        now = time.monotonic()
        if delivered or (connected and now - opened >= HEALTHY_SECONDS):
            failing_since, delay = None, FIRST_DELAY
            pause = 0.0 if delivered else delay
        else:
            failing_since = failing_since or opened
            if now - failing_since >= max_wait:
                raise StreamLost(f"gave up reconnecting after {now - failing_since:.0f} s: {reason}", last_event_id)
            pause, delay = delay, min(delay * 2, MAX_DELAY)
        notify(f"reconnecting… ({reason})")
        time.sleep(pause)


def describe(error: httpx.TransportError) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# --- rendering ----------------------------------------------------------------


def step_status(event: StreamEvent) -> str | None:
    """A `tool` event as a status line ("Checking the weather in Kyoto on Wed 2 Dec…"); None if unreadable."""
    try:
        step = json.loads(event.text)
    except ValueError:
        return None
    if not isinstance(step, dict):
        return None
    label = step.get("label") if isinstance(step.get("label"), str) and step.get("label") else \
        f"Running {step.get('name') or 'a tool'}"
    return {"completed": f"{label} — done", "failed": f"{label} — failed"}.get(str(step.get("status")), f"{label}…")


def usage_note(event: StreamEvent) -> str | None:
    """A `usage` event as a notice ("1,261 tokens (1,096 in, 165 out)"); None without a total."""
    try:
        usage = json.loads(event.text)
    except ValueError:
        return None
    if not isinstance(usage, dict) or not isinstance(usage.get("total_tokens"), int):
        return None
    parts = [f"{usage[name]:,} {word}" for name, word in (("input_tokens", "in"), ("output_tokens", "out"))
             if isinstance(usage.get(name), int)]
    return f"{usage['total_tokens']:,} tokens" + (f" ({', '.join(parts)})" if parts else "")



class PlainRenderer:
    """Writes what `Accept: text/plain` serves for message, reset and done: the raw chunks, as they come."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out  # bytes: the terminal's encoding must not alter the text

    def show(self, event: StreamEvent) -> None:
        text = event.text if event.kind == "message" else PLAIN_MARKERS.get(event.kind, "")
        self._out.write(text.encode("utf-8"))
        self._out.flush()

    def close(self) -> None:
        pass


class _LastScreen:
    """The bottom of a growing document, and the status line under it, so Live can redraw them in place
    however long the document gets."""

    def __init__(self, text: str, status: str | None = None) -> None:
        self.text = text
        self.status = status

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        # Parsed here, when Live draws (a dozen times a second), not once per event: an answer of N chunks
        # would be parsed N times over.
        lines = console.render_lines(Markdown(self.text), options, pad=False)
        if self.status:
            lines += console.render_lines(Text(self.status, style="dim italic"), options, pad=False)
        height = max((options.height or console.height) - 1, 1)
        for line in lines[-height:]:
            yield from line
            yield Segment.line()


class MarkdownRenderer:
    """Renders the answer as markdown while it streams; at the end the whole answer stays on screen."""

    def __init__(self, console: Console, notices: Console) -> None:
        self.text = ""
        self.status: str | None = None  # what the run is doing, until its text replaces it
        self._console = console
        self._notices = notices
        self._live = Live(console=console, refresh_per_second=12, transient=True)
        self._live.start()

    def show(self, event: StreamEvent) -> None:
        if event.kind == "reset":
            self.text, self.status = "", None  # what the run showed so far is discarded, its status too
            say(self._notices, "yellow", f"restarted: {event.text or 'the answer starts over'}")
        elif event.kind == "message":
            self.text += event.text
            self.status = None
        elif event.kind == "tool":
            self.status = step_status(event) or self.status
        # A status changes a few times a run and may last only moments: draw it at once, not at the next tick.
        self._live.update(_LastScreen(self.text, self.status), refresh=event.kind == "tool")

    def close(self) -> None:
        self._live.stop()
        if self.text:
            self._console.print(Markdown(self.text))


# --- the command ------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="client.py",
        description="Ask the TravelPlanner agent and watch the answer stream in; survives dropped connections.",
        epilog="Exit codes: 0 done, 1 run failed or request refused, 2 server unreachable, 3 cancelled, "
        "4 stream lost for longer than --max-wait.",
    )
    parser.add_argument("message", nargs="?", help="what to ask (not with --follow)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--conversation", metavar="ID", help="continue this conversation with a new run")
    which.add_argument("--follow", metavar="ID", help="re-attach to a conversation's run instead of starting one")
    parser.add_argument("--run", metavar="CORRELATION_ID", help="with --follow: this run (default: the latest)")
    parser.add_argument("--cursor", metavar="EVENT_ID", help="with --follow: start after this event id")
    parser.add_argument("--plain", action="store_true", help="print raw text (default when stdout is not a terminal)")
    parser.add_argument("--url", default=os.environ.get("TRAVELPLANNER_URL") or DEFAULT_URL,
                        help="server base URL (default: $TRAVELPLANNER_URL or %(default)s)")
    parser.add_argument("--api-key", default=os.environ.get("TRAVELPLANNER_API_KEY") or os.environ.get("API_KEY"),
                        help="API key for a server with API_KEY set (default: $TRAVELPLANNER_API_KEY or $API_KEY)")
    parser.add_argument("--max-wait", type=float, default=60.0, metavar="SECONDS",
                        help="give up after this long without a working connection (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.follow and args.message:
        parser.error("--follow re-attaches to a run: give no message")
    if not args.follow and not args.message:
        parser.error("give a message, or --follow CONVERSATION_ID")
    if (args.run or args.cursor) and not args.follow:
        parser.error("--run and --cursor go with --follow")
    if args.message is not None and not args.message.strip():
        parser.error("the message is empty")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    notices = Console(stderr=True, highlight=False, soft_wrap=True)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    conversation, run, last_event_id = args.follow or args.conversation, args.run, args.cursor
    renderer: PlainRenderer | MarkdownRenderer | None = None
    try:
        with httpx.Client(base_url=args.url.rstrip("/"), headers=headers, timeout=TIMEOUT) as client:
            if args.follow:
                url = stream_url(args.follow, args.run)
            else:
                accepted = start_run(client, args.message, args.conversation)
                conversation, run, url = accepted["conversation_id"], accepted["correlation_id"], accepted["stream_url"]
            plain = args.plain or not sys.stdout.isatty()
            renderer = PlainRenderer(sys.stdout.buffer) if plain else MarkdownRenderer(Console(), notices)
            for event in stream_events(client, url, last_event_id=last_event_id, max_wait=args.max_wait,
                                       fail_fast=bool(args.follow), notify=lambda text: say(notices, "dim", text)):
                last_event_id = event.id
                renderer.show(event)
                if event.kind == "usage" and (note := usage_note(event)):
                    say(notices, "dim", f"used {note}")
                if event.terminal:
                    renderer.close()
                    renderer = None
                    return finish(event, conversation, notices)
            raise AssertionError("stream_events ended without a terminal event")  # it never does
    except ClientError as error:
        if renderer is not None:
            renderer.close()
        say(notices, "red", f"error: {error}")
        if isinstance(error, StreamLost):
            say(notices, "", f"the run may still be going: {resume_hint(conversation, run, last_event_id)}")
        return error.exit_code
    except KeyboardInterrupt:
        if renderer is not None:
            renderer.close()
        if conversation:
            say(notices, "", f"interrupted; resume with: {resume_hint(conversation, run, last_event_id)}")
        return 130


def say(notices: Console, style: str, text: str) -> None:
    notices.print(f"[{style}]{escape(text)}[/]" if style else escape(text))


def finish(event: StreamEvent, conversation: str | None, notices: Console) -> int:
    if event.kind == "cancelled":
        say(notices, "yellow", f"cancelled: {event.text}")
    elif event.kind == "error":
        say(notices, "red", f"error: {event.text}")
    say(notices, "dim", f'continue this conversation with: python client.py --conversation {conversation} "..."')
    return EXIT_CODES[event.kind]


def resume_hint(conversation: str | None, run: str | None, last_event_id: str | None) -> str:
    hint = f"python client.py --follow {conversation}"
    if run:
        hint += f" --run {run}"
    if last_event_id:
        hint += f" --cursor {last_event_id}"
    return hint


if __name__ == "__main__":
    sys.exit(main())
