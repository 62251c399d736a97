"""The HTTP contract, written once for every host (README "API reference" is its promise).

Handlers take a Starlette `Request` (FastAPI's, which the Functions HTTP
streams extension also uses) and return a Starlette response; the Functions
app and the standalone host only route requests here. What a stream response
sends is `streaming.reader`'s, encoded by `streaming.framing`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from redis_stream_response_handler import (
    Admission,
    ConversationBusy,
    ConversationNotFound,
    CursorExpired,
    InvalidCursor,
    QueueFull,
    RunLog,
    RunNotFound,
)
from streaming.deadline import RunLogTrouble, within
from streaming.framing import plain_text_body, sse_body
from streaming.live_tail import LiveTail
from streaming.observer import Resumed, StreamObserver, observed
from streaming.reader import ReadPolicy, read_run

logger = logging.getLogger(__name__)

HEALTH_SECONDS = 1.5  # health answers within 2 s, whatever Redis does
QUEUED_RETRY_SECONDS = 10  # a refused run: about the time a queued run takes to be begun
MAX_MESSAGE_BYTES = 32 * 1024
MAX_BODY_BYTES = 256 * 1024  # JSON escaping can triple a message; anything larger is refused unread
MIN_CONVERSATION_ID = 16  # a conversation id is a bearer secret: a client-chosen one must not be guessable
CONVERSATION_ID_PATTERN = rf"[A-Za-z0-9_-]{{{MIN_CONVERSATION_ID},128}}"
RUN_ID_PATTERN = r"[A-Za-z0-9_-]{1,128}"  # correlation ids are the server's own (32 hex digits)
_CONVERSATION_ID = re.compile(CONVERSATION_ID_PATTERN)
_RUN_ID = re.compile(RUN_ID_PATTERN)
_BAD_CONVERSATION_ID = (f"conversation id must be {MIN_CONVERSATION_ID}-128 characters of A-Z, a-z, 0-9, '_' "
                        "and '-' (it is the conversation's secret: make it hard to guess)")
_PLAIN_TEXT_TYPES = ("text/plain", "application/x-www-form-urlencoded")  # curl -d sends the latter


class RunDispatcher(Protocol):
    """Hands a run to the durable agent host (fire and forget)."""

    async def dispatch(self, agent_name: str, conversation_id: str, correlation_id: str, message: str) -> None: ...


@dataclass
class Services:
    """What the handlers need; each host builds one at start-up (`travelplanner.wiring`)."""

    log: RunLog
    tail: LiveTail
    dispatcher: RunDispatcher | None  # None on a host that cannot start runs
    agent_names: tuple[str, ...]
    reading: ReadPolicy = field(default_factory=ReadPolicy)
    retry_ms: int = 1000  # the SSE `retry:` a client waits before it reconnects
    about: Mapping[str, object] = field(default_factory=dict)  # what else /api/health reports (no secrets)
    redis_seconds: float = 3.0  # how long a request may wait for the run log before it answers 503
    admission: Admission | None = None  # how many accepted runs may wait for a worker; None: no limit
    observer: StreamObserver | None = None  # told what stream responses do (metrics); None: nothing measured


class ApiError(Exception):
    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after

    @classmethod
    def of(cls, trouble: RunLogTrouble) -> ApiError:
        return cls(503, trouble.message, trouble.retry_after)

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.retry_after)


def error_response(status: int, message: str, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _shown(value: str, limit: int = 64) -> str:
    """User input quoted in an error message, cut short: errors never echo a huge input back."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def stream_url(conversation_id: str, correlation_id: str) -> str:
    return f"/api/agent/stream/{conversation_id}?run={correlation_id}"


# --- POST /api/agents/{agent}/run -------------------------------------------


async def start_run(request: Request, services: Services, agent_name: str) -> Response:
    try:
        if agent_name not in services.agent_names:
            served = ", ".join(services.agent_names)
            raise ApiError(404, f"unknown agent {_shown(agent_name)}; this app serves {served}")
        if services.dispatcher is None:
            raise ApiError(503, "this host does not start runs (HOST_ROLE=worker)")
        message, conversation_id = await _read_run_request(request)
        conversation_id = conversation_id or uuid.uuid4().hex
        correlation_id = uuid.uuid4().hex
        await within(services.log.redis, services.redis_seconds,
                     services.log.open_run(conversation_id, correlation_id, admission=services.admission))
        try:
            await services.dispatcher.dispatch(agent_name, conversation_id, correlation_id, message)
        except Exception as error:
            logger.exception("could not hand run %s to the durable host", correlation_id)
            with contextlib.suppress(RunLogTrouble):  # else a reader sees it end as not started, later
                await within(services.log.redis, services.redis_seconds, services.log.end_unstarted(
                    conversation_id, correlation_id, f"the run could not be started: {error}"))
            raise ApiError(503, "the durable agent host did not accept the run; try again") from error
    except ApiError as error:
        return error.response()
    except RunLogTrouble as trouble:
        return ApiError.of(trouble).response()
    except QueueFull as full:
        return error_response(503, f"the server is overloaded: {full.waiting} runs are waiting for a worker to "
                                   f"start them; retry in {QUEUED_RETRY_SECONDS} s", QUEUED_RETRY_SECONDS)
    except ConversationBusy as busy:
        return error_response(429, f"this conversation already has {busy.waiting} turns waiting to start; wait "
                                   "for them (or cancel one) and retry", QUEUED_RETRY_SECONDS)
    url = stream_url(conversation_id, correlation_id)
    body = {"status": "accepted", "conversation_id": conversation_id, "correlation_id": correlation_id,
            "stream_url": url}
    return JSONResponse(body, status_code=202, headers={"Location": url})


async def _read_run_request(request: Request) -> tuple[str, str | None]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    is_json = content_type == "application/json" or content_type.endswith("+json")
    if content_type and not is_json and content_type not in _PLAIN_TEXT_TYPES:
        raise ApiError(415, "send the message as text/plain, or JSON {\"message\": \"...\"} as application/json")
    raw = await _read_body(request)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not valid UTF-8") from None
    conversation_id = None
    if is_json:
        try:
            body = json.loads(text)
        except ValueError:
            raise ApiError(400, "the body is not valid JSON") from None
        except RecursionError:
            raise ApiError(400, "the JSON body is nested too deeply") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the JSON body must be an object with a \"message\" field")
        message = body.get("message")
        if not isinstance(message, str):
            raise ApiError(400, "\"message\" must be a non-empty string")
        conversation_id = next((body[k] for k in ("conversation_id", "session_id", "thread_id")
                                if body.get(k) is not None), None)
        if conversation_id is not None and not (isinstance(conversation_id, str)
                                                and _CONVERSATION_ID.fullmatch(conversation_id)):
            raise ApiError(400, _BAD_CONVERSATION_ID.replace("conversation id", "conversation_id", 1))
    else:
        message = text
    if not message.strip():
        raise ApiError(400, "the message is empty")
    try:
        size = len(message.encode("utf-8"))
    except UnicodeEncodeError:  # JSON can spell a lone surrogate ("\ud800"), which is no text
        raise ApiError(400, "the message is not valid Unicode text (it has a lone surrogate)") from None
    if size > MAX_MESSAGE_BYTES:
        raise ApiError(413, f"the message is longer than {MAX_MESSAGE_BYTES // 1024} KiB")
    return message, conversation_id


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, f"the body is larger than {MAX_BODY_BYTES // 1024} KiB")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise ApiError(413, f"the body is larger than {MAX_BODY_BYTES // 1024} KiB")
    except ClientDisconnect:
        raise ApiError(400, "the request body ended early") from None
    return bytes(body)


# --- GET /api/agent/stream/{conversation_id} --------------------------------


async def stream(request: Request, services: Services, conversation_id: str) -> Response:
    try:
        if not _CONVERSATION_ID.fullmatch(conversation_id):
            raise ApiError(400, _BAD_CONVERSATION_ID)
        plain = prefers_plain_text(request.headers.get("accept", ""))
        resumed: Resumed = "last-event-id" if request.headers.get("last-event-id") else \
            "cursor" if request.query_params.get("cursor") else None
        cursor = request.headers.get("last-event-id") or request.query_params.get("cursor") or None
        run = request.query_params.get("run") or None
        if run is not None and not _RUN_ID.fullmatch(run):
            raise ApiError(400, "run must be a correlation id from the run's 202 answer")
        ref = await within(services.log.redis, services.redis_seconds,
                           services.log.resolve(conversation_id, cursor=cursor, correlation_id=run))
        if ref.past_the_end:
            # Resumed from the run's terminal event (an EventSource nobody closed, say): nothing can
            # follow, and 204 is what tells EventSource to stop reconnecting.
            return Response(status_code=204, headers={"x-conversation-id": conversation_id})
    except ApiError as error:
        return error.response()
    except (ConversationNotFound, RunNotFound) as error:
        what = "conversation" if isinstance(error, ConversationNotFound) else "run"
        return error_response(404, f"no such {what} (unknown, or expired): {error}")
    except InvalidCursor as error:
        return error_response(400, str(error))
    except CursorExpired as error:
        return error_response(410, f"{error}; start again from the beginning of the run (GET without a cursor)")
    except RunLogTrouble as trouble:
        return ApiError.of(trouble).response()
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "x-conversation-id": conversation_id}
    items = read_run(services.log, services.tail, ref, services.reading)
    if services.observer is not None:
        items = observed(items, services.observer, plain=plain, resumed=resumed)
    if plain:
        return StreamingResponse(plain_text_body(items), media_type="text/plain; charset=utf-8", headers=headers)
    return StreamingResponse(sse_body(items, services.retry_ms), media_type="text/event-stream; charset=utf-8",
                             headers=headers)


def prefers_plain_text(accept: str) -> bool:
    """True when the Accept header ranks text/plain above text/event-stream (q-values, wildcards)."""
    if not accept.strip():
        return False
    best: dict[str, tuple[int, float]] = {}  # media type -> (specificity of the matching range, q)
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        media = media.strip().lower()
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0  # an unreadable weight: ignore that range
        for wanted in ("text/plain", "text/event-stream"):
            kind = wanted.split("/")[0]
            specificity = 2 if media == wanted else 1 if media == f"{kind}/*" else 0 if media == "*/*" else -1
            if specificity >= 0 and specificity >= best.get(wanted, (-1, 0.0))[0]:
                best[wanted] = (specificity, q)
    return best.get("text/plain", (0, 0.0))[1] > best.get("text/event-stream", (0, 0.0))[1]


# --- POST /api/agent/stream/{conversation_id}/cancel ------------------------


async def cancel(request: Request, services: Services, conversation_id: str) -> Response:
    if not _CONVERSATION_ID.fullmatch(conversation_id):
        return error_response(400, _BAD_CONVERSATION_ID)
    run = request.query_params.get("run") or None
    if run is not None and not _RUN_ID.fullmatch(run):
        return error_response(400, "run must be a correlation id from the run's 202 answer")

    async def cancel_run(run: str | None) -> tuple[str, str] | None:
        run = run or await services.log.latest_run(conversation_id)
        return None if run is None else (run, await services.log.cancel(conversation_id, run))

    try:
        cancelled = await within(services.log.redis, services.redis_seconds, cancel_run(run))
    except RunLogTrouble as trouble:
        return ApiError.of(trouble).response()
    if cancelled is None:
        return error_response(404, f"no such conversation (unknown, or expired): {conversation_id}")
    run, status = cancelled
    if status == "unknown":
        return error_response(404, f"no such run: {run}")
    if status == "sealed":
        return error_response(409, "the run has already ended")
    return JSONResponse({"status": "cancelled", "conversation_id": conversation_id, "correlation_id": run})


# --- GET /api/health ---------------------------------------------------------


async def health(services: Services) -> Response:
    """Answers within HEALTH_SECONDS whatever Redis does: a health check that hangs is no health check."""
    try:
        await within(services.log.redis, HEALTH_SECONDS, services.log.redis.ping())
        state, redis_state = "ok", "ok"
    except RunLogTrouble as trouble:
        # Busy: Redis answers, but this process could not get a ping through in time (shed its load).
        state, redis_state = ("overloaded", "ok") if trouble.busy else ("degraded", "unreachable")
        retry_after = trouble.retry_after
    body = {"status": state, "agents": list(services.agent_names), "redis": redis_state, **services.about}
    if state == "ok":
        return JSONResponse(body)
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(retry_after)})
