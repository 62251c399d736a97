"""A scripted Chat Completions server: the real wire format, the real validation, faults on demand.

`ScriptedModelServer` runs an aiohttp server on 127.0.0.1 in a background thread, so a test can point
both in-process clients and a host subprocess at it. It answers the URL shapes the app's clients use:

- OpenAI:       POST /v1/chat/completions                                    Authorization: Bearer <key>
- Azure:        POST /openai/deployments/{name}/chat/completions?api-version=…  api-key: <key>,
                                                                             or Bearer <Entra ID token>
- Azure v1:     POST /openai/v1/chat/completions                             either, the key also as Bearer

Every request is recorded (`server.requests`). Without a script a request gets the default
conversation (`Conversation`): one whose messages end with tool results gets a markdown answer quoting
them; any other gets calls to get_weather_forecast and get_local_events. Streams are sent the way the
real API sends them: the tool calls' arguments in small fragments, the answer in small text deltas with
multi-byte characters cut across TCP writes, a finish chunk, a usage chunk, then `data: [DONE]`.

Faults are `Reply`s scripted with `server.script(...)`, optionally only for requests whose latest user
message mentions a text (a turn's tag, so tests sharing one server cannot take each other's faults).
Requests are validated as the real API does (tool calls answered by tool messages, roles, a model), and
refused with the real 400 error body, so a bug in a conversation's history fails here as in production.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from aiohttp import web

Api = Literal["openai", "azure", "azure-v1"]
Ending = Literal["done", "eof", "reset"]

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
CREATED = 1796083200  # a fixed timestamp: the same request gets the same bytes
STATUS_TEXT = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 408: "Request Timeout",
               429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
               503: "Service Unavailable", 504: "Gateway Timeout"}


# --- What a request gets -------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    """One assistant turn: the `choices[0].delta` of each chunk, then the finish reason."""

    deltas: tuple[dict[str, Any], ...]
    finish_reason: str


@dataclass(frozen=True)
class Reply:
    """How to answer one request. The defaults play `turn` (or the default conversation) cleanly.

    A fault applies to a non-streamed request too: a hang or a stall delays its answer, a reset cuts
    the connection, an early end or a malformed chunk sends a body that is not the whole JSON.
    """

    turn: Turn | None = None  # None: what the default conversation says to this request
    status: int = 200
    error: Mapping[str, Any] | None = None  # the error JSON; None: the real service's body for `status`
    headers: Mapping[str, str] = field(default_factory=dict)
    first_byte_delay: float = 0.0  # before the status line; math.inf: until the client or the server gives up
    chunk_delay: float = 0.0  # between deltas
    pause_after: int | None = None  # after this many deltas, send nothing for `pause` seconds
    pause: float = 0.0
    malformed_at: int | None = None  # a chunk of broken JSON in place of delta number N
    cut_after: int | None = None  # with ending "eof" or "reset": deltas sent before the ending
    ending: Ending = "done"  # "eof": the body ends cleanly, no finish_reason, no [DONE]; "reset": a TCP RST


def rate_limited(retry_after: str | None = "1", *, retry_after_ms: str | None = None) -> Reply:
    headers = {k: v for k, v in (("retry-after", retry_after), ("retry-after-ms", retry_after_ms)) if v is not None}
    return Reply(status=429, headers=headers)


def http_error(status: int, message: str | None = None, *, code: str | None = None) -> Reply:
    """A status error with the real service's body for it; `message` (and `code`) replace its text."""
    if message is None:
        return Reply(status=status)
    return Reply(status=status, error={"error": {"message": message, "type": "invalid_request_error",
                                                 "param": None, "code": code}})


def reset_after(deltas: int) -> Reply:
    return Reply(cut_after=deltas, ending="reset")


def end_early_after(deltas: int) -> Reply:
    """The body ends cleanly (the chunked terminator is sent) without a finish_reason or [DONE]."""
    return Reply(cut_after=deltas, ending="eof")


def hang_before_first_byte(seconds: float = math.inf) -> Reply:
    return Reply(first_byte_delay=seconds)


def stall_after(deltas: int, seconds: float = math.inf) -> Reply:
    return Reply(pause_after=deltas, pause=seconds)


def malformed_chunk_at(delta: int) -> Reply:
    return Reply(malformed_at=delta)


def slow_chunks(delay: float) -> Reply:
    """Every delta `delay` seconds after the last: a slow tool-call phase when the request gets tool calls."""
    return Reply(chunk_delay=delay)


# --- The default conversation --------------------------------------------------------------------


def tool_calls_turn(calls: Sequence[tuple[str, str, Mapping[str, Any]]], fragment: int = 7) -> Turn:
    """Tool calls (id, name, arguments) as a model streams them: the arguments' JSON in small fragments."""
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": None, "refusal": None}]
    for index, (call_id, name, arguments) in enumerate(calls):
        deltas.append({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                       "function": {"name": name, "arguments": ""}}]})
        text = json.dumps(arguments, ensure_ascii=False)
        for start in range(0, len(text), fragment):
            deltas.append({"tool_calls": [{"index": index, "function": {"arguments": text[start:start + fragment]}}]})
    return Turn(tuple(deltas), "tool_calls")


def text_turn(pieces: Sequence[str]) -> Turn:
    return Turn(({"role": "assistant", "content": "", "refusal": None}, *({"content": p} for p in pieces)), "stop")


def split_small(text: str, size: int = 4) -> list[str]:
    """Deltas of a few characters, every non-ASCII character on its own."""
    pieces: list[str] = []
    for char in text:
        if not char.isascii() or not pieces or not pieces[-1].isascii() or len(pieces[-1]) >= size:
            pieces.append(char)
        else:
            pieces[-1] += char
    return pieces


@dataclass(frozen=True)
class Conversation:
    """The default script: which tool calls to make, and the answer once their results are in."""

    destination: str = "Tokyo"
    date: str = "2026-12-02"

    @property
    def arguments(self) -> dict[str, str]:
        return {"destination": self.destination, "date": self.date}

    def tool_calls(self, request_number: int) -> Turn:
        # Ids unique per request, so a history spanning several turns never reuses one.
        return tool_calls_turn([(f"call_{request_number}_weather", "get_weather_forecast", self.arguments),
                                (f"call_{request_number}_events", "get_local_events", self.arguments)])

    def answer_text(self, tool_results: Sequence[str]) -> str:
        # CJK, an accent, emoji and a ZWJ family split across deltas: clients must join deltas as they are.
        return (f"# {self.destination} — 東京 in a day ✈️\n\n"
                f"## Day 1 — {self.date}\n\n"
                "Morning: café crème and onigiri 🍙, then the Meiji shrine.\n"
                "Evening: izakaya with the 👨‍👩‍👧 family.\n\n"
                + "".join(f"> {result}\n" for result in tool_results))

    def turn_for(self, request_number: int, messages: Sequence[Mapping[str, Any]]) -> Turn:
        results: list[str] = []
        for message in reversed(messages):
            if message.get("role") != "tool":
                break
            results.insert(0, _text_of(message.get("content")))
        if results:
            return text_turn(split_small(self.answer_text(results)))
        return self.tool_calls(request_number)


# --- What the server saw -------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    number: int  # 1-based, in arrival order
    api: Api | None  # None: no such route
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: Any
    received_at: float  # time.monotonic(), comparable with the test's own clock
    status: int | None = None  # the status sent (None: no status line was sent)
    sent: int = 0  # deltas sent so far
    # pending; done, eof, reset, stalled (as scripted); error (a scripted status); refused (routing, auth or
    # validation); client-gone (the client hung up first); server-stopped
    outcome: str = "pending"
    ended_at: float | None = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or []) if isinstance(self.body, dict) else []

    @property
    def stream(self) -> bool:
        return isinstance(self.body, dict) and bool(self.body.get("stream"))

    @property
    def user_text(self) -> str:
        """The latest user message: the turn this request belongs to."""
        users = [m for m in self.messages if isinstance(m, dict) and m.get("role") == "user"]
        return _text_of(users[-1].get("content")) if users else ""

    def mentions(self, text: str) -> bool:
        return text in self.user_text


@dataclass
class _Script:
    when: str | None  # only requests whose latest user message mentions this; None: any request
    replies: list[Reply | Callable[[RecordedRequest], Reply]]
    repeat: bool  # the last reply answers every later request too


# --- The server ----------------------------------------------------------------------------------


class ScriptedModelServer:
    """`with ScriptedModelServer() as server:`; point clients at `base_url`, `azure_endpoint` or `azure_v1_base_url`."""

    def __init__(self, *, api_key: str = "test-key", entra_token: str = "entra-token",
                 deployments: Sequence[str] | None = None, conversation: Conversation | None = None) -> None:
        self.api_key = api_key
        self.entra_token = entra_token
        self.deployments = set(deployments) if deployments is not None else None  # None: any name exists
        self.conversation = conversation or Conversation()
        self.requests: list[RecordedRequest] = []
        self.split_writes = 0  # SSE events written in two pieces cut inside a UTF-8 sequence
        self._scripts: list[_Script] = []
        self._changed = threading.Condition()  # guards requests and scripts; notified on every change
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- lifecycle

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                runner = loop.run_until_complete(self._open())
            except BaseException as error:  # handed to start()'s caller below
                failure.append(error)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="scripted-model-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    async def _open(self) -> web.BaseRunner:
        self._stopping = asyncio.Event()
        # handler_cancellation: a client hanging up cancels its handler, so `ended_at` says when it gave up.
        runner = web.ServerRunner(web.Server(self._handle, handler_cancellation=True), shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        return runner

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        loop, stopping = self._loop, self._stopping
        loop.call_soon_threadsafe(lambda: (stopping.set() if stopping else None, loop.stop()))
        self._thread.join(timeout=10)
        self._loop = self._thread = None

    # --- addresses

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI: OPENAI_BASE_URL."""
        return f"{self.root}/v1"

    @property
    def azure_endpoint(self) -> str:
        """Azure OpenAI's deployment URLs: AZURE_OPENAI_ENDPOINT."""
        return self.root

    @property
    def azure_v1_base_url(self) -> str:
        """Azure OpenAI's v1 surface: AZURE_OPENAI_ENDPOINT ending in /openai/v1."""
        return f"{self.root}/openai/v1/"

    # --- scripting and what tests wait for

    def script(self, *replies: Reply | Callable[[RecordedRequest], Reply], when: str | None = None,
               repeat: bool = False) -> None:
        """The next requests (those whose latest user message mentions `when`) get these replies in order.

        With `repeat` the last reply answers every later such request as well; otherwise the default
        conversation resumes after the last one.
        """
        with self._changed:
            self._scripts.append(_Script(when, list(replies), repeat))

    def requests_mentioning(self, text: str) -> list[RecordedRequest]:
        with self._changed:
            return [r for r in self.requests if r.mentions(text)]

    def wait_until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        """Block until `condition()` holds (checked on every request event), or raise TimeoutError."""
        with self._changed:
            if not self._changed.wait_for(condition, timeout):
                raise TimeoutError(f"the scripted model server did not reach the condition in {timeout} s")

    def settle(self, text: str | None = None, timeout: float = 10.0) -> list[RecordedRequest]:
        """The requests (mentioning `text`), once every one of them has ended."""
        def chosen() -> list[RecordedRequest]:
            return [r for r in self.requests if text is None or r.mentions(text)]
        self.wait_until(lambda: all(r.ended_at is not None for r in chosen()), timeout)
        with self._changed:
            return chosen()

    def _next_reply(self, seen: RecordedRequest) -> Reply:
        with self._changed:
            script = next((s for s in self._scripts if s.when is None or seen.mentions(s.when)), None)
            if script is None:
                return Reply()
            planned = script.replies[0]
            if len(script.replies) > 1:
                script.replies.pop(0)
            elif not script.repeat:
                self._scripts.remove(script)
        return planned(seen) if callable(planned) else planned

    def _changed_now(self, change: Callable[[], None]) -> None:
        with self._changed:
            change()
            self._changed.notify_all()

    # --- handling

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        api, deployment = _route(request.path)
        seen = RecordedRequest(0, api, request.path, dict(request.query),
                               {k.lower(): v for k, v in request.headers.items()}, body, time.monotonic())

        def arrive() -> None:
            seen.number = len(self.requests) + 1
            self.requests.append(seen)
        self._changed_now(arrive)
        try:
            refusal = self._refusal(request, seen, deployment)
            if refusal is not None:
                seen.outcome = "refused"
                seen.status = refusal.status
                return refusal
            return await self._play(request, seen, self._next_reply(seen))
        except (ConnectionError, asyncio.CancelledError):
            # The client closed the connection (aiohttp cancels the handler), or _abort cut it.
            if seen.outcome == "pending":
                seen.outcome = "client-gone"
            raise
        finally:
            self._changed_now(lambda: setattr(seen, "ended_at", time.monotonic()))

    def _refusal(self, request: web.BaseRequest, seen: RecordedRequest, deployment: str | None) -> web.Response | None:
        """What the real service refuses before a model sees the request: routing, auth, validation."""
        if request.method != "POST" or seen.api is None or (seen.api == "azure" and "api-version" not in seen.query):
            return _json(404, {"error": {"code": "404", "message": "Resource not found"}})
        if not self._authorised(seen.headers, seen.api):
            return _json(401, _error_body(401, seen))
        if seen.api == "azure" and self.deployments is not None and deployment not in self.deployments:
            return _json(404, {"error": {"code": "DeploymentNotFound", "message": (
                "The API deployment for this resource does not exist. If you created the deployment within "
                "the last 5 minutes, please wait a moment and try again.")}})
        problem = validate_request(seen.body, model_required=seen.api != "azure")
        if problem is not None:
            message, param = problem
            return _json(400, {"error": {"message": message, "type": "invalid_request_error", "param": param,
                                         "code": None}})
        return None

    def _authorised(self, headers: Mapping[str, str], api: Api) -> bool:
        bearer = headers.get("authorization", "")
        if api == "openai":
            return bearer == f"Bearer {self.api_key}"
        bearers = {f"Bearer {self.entra_token}"} | ({f"Bearer {self.api_key}"} if api == "azure-v1" else set())
        return headers.get("api-key") == self.api_key or bearer in bearers

    async def _play(self, request: web.BaseRequest, seen: RecordedRequest, reply: Reply) -> web.StreamResponse:
        if reply.first_byte_delay and await self._sleep(reply.first_byte_delay):
            return self._abort(request, seen, "server-stopped")
        if reply.status >= 400:
            seen.outcome, seen.status = "error", reply.status
            body = dict(reply.error) if reply.error is not None else _error_body(reply.status, seen)
            return _json(reply.status, body, reply.headers)
        turn = reply.turn or self.conversation.turn_for(seen.number, seen.messages)
        if not seen.stream:
            return await self._whole(request, seen, reply, turn)
        return await self._stream(request, seen, reply, turn)

    async def _whole(self, request: web.BaseRequest, seen: RecordedRequest, reply: Reply,
                     turn: Turn) -> web.StreamResponse:
        if reply.pause_after is not None and await self._sleep(reply.pause):
            return self._abort(request, seen, "server-stopped")
        if reply.ending == "reset":
            return self._abort(request, seen, "reset")
        body = json.dumps(_completion(seen, turn), ensure_ascii=False).encode()
        if reply.ending == "eof" or reply.malformed_at is not None:
            response = web.StreamResponse(status=200, headers={"Content-Type": "application/json", **reply.headers})
            await response.prepare(request)
            seen.status = 200
            await response.write(body[: len(body) // 2])  # half the JSON, then a clean end
            await response.write_eof()
            seen.outcome = "eof"
            return response
        seen.outcome, seen.status = "done", 200
        return _json(200, json.loads(body), reply.headers)

    async def _stream(self, request: web.BaseRequest, seen: RecordedRequest, reply: Reply,
                      turn: Turn) -> web.StreamResponse:
        include_usage = bool(((seen.body or {}).get("stream_options") or {}).get("include_usage"))
        response = web.StreamResponse(status=200, headers={
            "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
            "x-request-id": f"req_{seen.number}", **reply.headers})
        await response.prepare(request)
        seen.status = 200
        if seen.api != "openai":
            await self._send(response, _azure_prompt_filter_chunk())  # Azure's first event has no choices
        deltas = turn.deltas if reply.ending == "done" else turn.deltas[:reply.cut_after]
        for index, delta in enumerate(deltas):
            if reply.pause_after == index:
                seen.outcome = "stalled"
                if await self._sleep(reply.pause):
                    return self._abort(request, seen, "server-stopped")
            if reply.chunk_delay and index and await self._sleep(reply.chunk_delay):
                return self._abort(request, seen, "server-stopped")
            if reply.malformed_at == index:
                await self._send(response, b'data: {"id":"chatcmpl-broken","choices":[{"index":0,"delta":{"con\n\n')
            await self._send(response, _sse(_chunk(seen, delta, None, include_usage)))
            self._changed_now(lambda: setattr(seen, "sent", seen.sent + 1))
        if reply.ending == "reset":
            # What was written must reach the client's kernel first (Linux still delivers received data
            # before the reset); an abort would drop anything left in the transport's buffer. No event says
            # when that buffer empties, so it is polled (it is empty at once on loopback).
            while request.transport is not None and request.transport.get_write_buffer_size():  # noqa: ASYNC110
                await asyncio.sleep(0.001)
            return self._abort(request, seen, "reset")
        if reply.ending == "done":
            await self._send(response, _sse(_chunk(seen, {}, turn.finish_reason, include_usage)))
            if include_usage:
                await self._send(response, _sse(_usage_chunk(seen, turn)))
            await self._send(response, b"data: [DONE]\n\n")
        seen.outcome = reply.ending  # before write_eof: the client may hang up as soon as it has [DONE]
        await response.write_eof()
        return response

    async def _send(self, response: web.StreamResponse, data: bytes) -> None:
        cut = next((i for i, byte in enumerate(data) if byte & 0xC0 == 0x80), None)
        if cut is None:
            await response.write(data)
            return
        # Two writes cut inside a UTF-8 sequence, a moment apart: the client's decoder meets the pieces
        # in separate reads (unless it reads slower than we write, which is no harm).
        await response.write(data[:cut])
        await asyncio.sleep(0.001)
        await response.write(data[cut:])
        self.split_writes += 1

    async def _sleep(self, seconds: float) -> bool:
        """Wait `seconds` (math.inf: forever) unless the server stops first; True when it stopped."""
        assert self._stopping is not None
        try:
            await asyncio.wait_for(self._stopping.wait(), None if math.isinf(seconds) else seconds)
            return True
        except TimeoutError:
            return False

    def _abort(self, request: web.BaseRequest, seen: RecordedRequest, outcome: str) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:  # linger 0: close() sends RST instead of FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        seen.outcome = outcome
        raise asyncio.CancelledError  # aiohttp drops a cancelled handler's connection without writing more


# --- Validation, as the real API does it ---------------------------------------------------------


def validate_request(body: Any, *, model_required: bool = True) -> tuple[str, str | None] | None:
    """(message, param) of the 400 the real API gives this body, or None when it is accepted."""
    if not isinstance(body, dict):
        return "We could not parse the JSON body of your request.", None
    if model_required and not body.get("model"):
        return "you must provide a model parameter", None
    if body.get("stream_options") is not None and not body.get("stream"):
        return "The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "[] is too short - 'messages'", "messages"
    pending: dict[str, int] = {}  # tool_call_id -> index of the assistant message that made the call
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            return f"'{role}' is not one of {list(ROLES)} - 'messages.{index}.role'", f"messages.[{index}].role"
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not call_id:
                return (f"Missing required parameter: 'messages[{index}].tool_call_id'.",
                        f"messages.[{index}].tool_call_id")
            if call_id not in pending:
                return ("Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                        "with 'tool_calls'.", f"messages.[{index}].role")
            del pending[call_id]
            continue
        if pending:  # any other message while calls are unanswered
            return _unanswered(pending)
        if role == "assistant":
            for call in message.get("tool_calls") or []:
                pending[call.get("id")] = index
    return _unanswered(pending) if pending else None


def _unanswered(pending: Mapping[str, int]) -> tuple[str, str]:
    return ("An assistant message with 'tool_calls' must be followed by tool messages responding to each "
            "'tool_call_id'. The following tool_call_ids did not have response messages: " + ", ".join(pending),
            f"messages.[{min(pending.values())}].role")


# --- The wire format -----------------------------------------------------------------------------


def _route(path: str) -> tuple[Api | None, str | None]:
    parts = path.strip("/").split("/")
    if parts == ["v1", "chat", "completions"]:
        return "openai", None
    if parts == ["openai", "v1", "chat", "completions"]:
        return "azure-v1", None
    if len(parts) == 5 and parts[:2] == ["openai", "deployments"] and parts[3:] == ["chat", "completions"]:
        return "azure", parts[2]
    return None, None


def _model(seen: RecordedRequest) -> str:
    body = seen.body if isinstance(seen.body, dict) else {}
    if body.get("model"):
        return str(body["model"])
    return seen.path.split("/")[3] if seen.api == "azure" else ""


def _chunk(seen: RecordedRequest, delta: Mapping[str, Any], finish_reason: str | None,
           include_usage: bool) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish_reason}
    if seen.api != "openai":
        choice["content_filter_results"] = {}
    chunk: dict[str, Any] = {"id": f"chatcmpl-{seen.number}", "object": "chat.completion.chunk",
                             "created": CREATED, "model": _model(seen), "system_fingerprint": "fp_scripted",
                             "choices": [choice]}
    if include_usage:  # the real API then sends "usage": null on every chunk but the last
        chunk["usage"] = None
    return chunk


def _usage(seen: RecordedRequest, turn: Turn) -> dict[str, Any]:
    prompt = max(1, len(json.dumps(seen.messages)) // 4)
    completion = len(turn.deltas)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


def _usage_chunk(seen: RecordedRequest, turn: Turn) -> dict[str, Any]:
    return {"id": f"chatcmpl-{seen.number}", "object": "chat.completion.chunk", "created": CREATED,
            "model": _model(seen), "system_fingerprint": "fp_scripted", "choices": [], "usage": _usage(seen, turn)}


def _azure_prompt_filter_chunk() -> bytes:
    return _sse({"choices": [], "created": 0, "id": "", "model": "", "object": "",
                 "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {
                     kind: {"filtered": False, "severity": "safe"}
                     for kind in ("hate", "self_harm", "sexual", "violence")}}]})


def _completion(seen: RecordedRequest, turn: Turn) -> dict[str, Any]:
    """The non-streamed answer: the same turn, its deltas merged into one message."""
    content: str | None = None
    calls: dict[int, dict[str, Any]] = {}
    for delta in turn.deltas:
        if delta.get("content"):
            content = (content or "") + delta["content"]
        for part in delta.get("tool_calls") or []:
            call = calls.setdefault(part["index"], {"id": "", "type": "function",
                                                    "function": {"name": "", "arguments": ""}})
            call["id"] = part.get("id") or call["id"]
            call["function"]["name"] += part.get("function", {}).get("name", "")
            call["function"]["arguments"] += part.get("function", {}).get("arguments", "")
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return {"id": f"chatcmpl-{seen.number}", "object": "chat.completion", "created": CREATED, "model": _model(seen),
            "system_fingerprint": "fp_scripted",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": turn.finish_reason}],
            "usage": _usage(seen, turn)}


def _error_body(status: int, seen: RecordedRequest) -> dict[str, Any]:
    """The error JSON the real service sends for this status (Azure's own shape for its gateway errors)."""
    if seen.api in ("azure", "azure-v1"):
        azure = {
            401: "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
                 "key for an active subscription and use a correct regional API endpoint for your resource.",
            429: f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
                 f"{seen.query.get('api-version', 'v1')} have exceeded token rate limit of your current AIServices "
                 f"S0 pricing tier. Please retry after 1 second.",
        }
        if status in azure:
            return {"error": {"code": str(status), "message": azure[status]}}
    openai: dict[int, tuple[str, str, str | None]] = {
        400: ("Invalid request.", "invalid_request_error", None),
        401: ("Incorrect API key provided: test-***key. You can find your API key at "
              "https://platform.openai.com/account/api-keys.", "invalid_request_error", "invalid_api_key"),
        429: ("Rate limit reached for requests. Please try again in 1s.", "requests", "rate_limit_exceeded"),
        500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
        503: ("The server is overloaded or not ready yet.", "server_error", None),
    }
    message, kind, code = openai.get(status, (STATUS_TEXT.get(status, f"HTTP {status}"), "server_error", None))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=json.dumps(body, ensure_ascii=False).encode(),
                        content_type="application/json", headers=headers)


def _sse(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def _text_of(content: Any) -> str:
    if isinstance(content, list):  # content parts
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)
