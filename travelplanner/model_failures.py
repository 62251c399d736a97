"""What went wrong with a model request, in one sentence a person can read.

A failed model request becomes a `ModelFailure`, whose `str()` is the sentence the run's `error` event
carries: what failed, then (once the run gives up) how often it was tried. Never a repr, a class path or
an API key; the full detail goes to the log. Its `retry` says what can help:

- "never": the service refused the request as it stands (400, 401, 403, 404, a content filter, a used-up
  quota), so the same request would be refused again;
- "request": none of the answer arrived (a rate limit, a 5xx, no connection, no first chunk in time), so
  the same request may succeed later;
- "run": the answer had begun to stream and broke off (a reset, a stall, an early end, a malformed chunk);
  only a new run of the whole call can recover, because part of the answer has already been passed on.
"""

from __future__ import annotations

import email.utils
import http
import json
import math
import socket
import ssl
import time
from collections.abc import Iterator, Mapping
from typing import Literal

import openai
from agent_framework.exceptions import ChatClientException

Retry = Literal["never", "request", "run"]

_QUOTED_MAX = 200  # characters of the service's own message kept in a sentence


class ModelFailure(Exception):
    def __init__(self, what: str, retry: Retry, *, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.retry: Retry = retry
        self.retry_after = retry_after  # seconds the service asked us to wait, if it said
        self.began: float | None = None  # when the failed try began (time.monotonic(); the client sets it)
        self.final = False  # the run has given up on this failure
        self.ending = ""  # why it gave up: "gave up after 3 tries over 9 s"

    def give_up(self, ending: str = "") -> ModelFailure:
        self.final, self.ending = True, ending
        return self

    def __str__(self) -> str:
        return f"{self.what}; {self.ending}" if self.ending else self.what


def classify(error: BaseException, *, answering: bool) -> ModelFailure:
    """The failure of a model request that raised `error`; `answering`: part of its answer had arrived."""
    cause = _below_wrappers(error)
    if isinstance(cause, ModelFailure):
        return cause
    if isinstance(cause, openai.APIStatusError):
        return refused(cause.status_code, _service_message(cause.body), code=cause.code,
                       retry_after=retry_after(cause.response.headers))
    if isinstance(cause, openai.APITimeoutError):  # before APIConnectionError: it is one
        # Our own timers end the waits for chunks; the SDK's are the connect timeout and a backstop.
        if any("connect" in type(e).__name__.lower() for e in _chain(cause)):
            return ModelFailure("the model service did not accept a connection in time", "request")
        return ModelFailure("the model service stopped answering", "run" if answering else "request")
    if isinstance(cause, openai.APIConnectionError):
        if answering:
            return ModelFailure("the connection to the model service was cut mid-answer", "run")
        return ModelFailure(f"the model service could not be reached: {_network_reason(cause)}", "request")
    if isinstance(cause, json.JSONDecodeError):
        if answering:
            return ModelFailure("the model service sent a malformed chunk mid-answer", "run")
        return ModelFailure("the model service sent a malformed response", "request")
    return ModelFailure(f"the model request failed: {sentence(cause)}", "run" if answering else "request")


def refused(status: int, message: str = "", *, code: str | None = None,
            retry_after: float | None = None) -> ModelFailure:
    """A status the service answered with."""
    status_line = f"{status} {_phrase(status)}"
    if status in (401, 403):
        # Never quoted: OpenAI's 401 text echoes part of the key.
        return ModelFailure(f"the model service refused the app's credentials: {status_line}", "never")
    if code == "content_filter":
        return ModelFailure("the model service's content filter refused the request", "never")
    quoted = f" ({message})" if message else ""
    if status == 404:
        return ModelFailure(f"the model service has no such model or deployment: {status_line}{quoted}", "never")
    retry: Retry = "request" if (status in (408, 409, 429) or status >= 500) else "never"
    if code == "insufficient_quota":
        retry = "never"  # a used-up quota comes back as 429 too, and waiting does not refill it
    verb = "failed" if status >= 500 else "refused the request"
    return ModelFailure(f"the model service {verb}: {status_line}{quoted}", retry, retry_after=retry_after)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """The wait a response asks for (`retry-after-ms`, or `Retry-After` in seconds or as an HTTP date)."""
    if (millis := _number(headers.get("retry-after-ms"))) is not None:
        return max(millis / 1000, 0.0)
    value = headers.get("retry-after")
    if value is None:
        return None
    if (seconds := _number(value)) is not None:
        return max(seconds, 0.0)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def describe(error: BaseException) -> str:
    """The one sentence a run's `error` event carries for whatever ended it."""
    cause = _below_wrappers(error)
    if isinstance(cause, ModelFailure | openai.OpenAIError | json.JSONDecodeError):
        return str(classify(cause, answering=False))
    return f"the agent failed: {sentence(cause)}"


def sentence(error: BaseException) -> str:
    """An exception's own message as a sentence fragment: its first line, cut at a word."""
    text = " ".join(str(error).strip().splitlines()[:1]).strip()
    return shorten(text, 200) if text else f"an unexpected {type(error).__name__}"


def shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(" ,;:")
    return f"{cut}…"


def _below_wrappers(error: BaseException) -> BaseException:
    # agent-framework wraps every failure of the OpenAI client in ChatClientException, its cause below.
    while isinstance(error, ChatClientException) and error.__cause__ is not None:
        error = error.__cause__
    return error


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _network_reason(error: BaseException) -> str:
    for link in _chain(error):
        if isinstance(link, ConnectionRefusedError):
            return "connection refused"
        if isinstance(link, ConnectionResetError):
            return "connection reset"
        if isinstance(link, socket.gaierror):
            return "its host name does not resolve"
        if isinstance(link, ssl.SSLError):
            return "the TLS handshake failed"
    return "the connection failed"


def _service_message(body: object) -> str:
    """The first sentence of the error message in the service's answer, if it had one."""
    message = body.get("message") if isinstance(body, Mapping) else body if isinstance(body, str) else None
    if not isinstance(message, str) or not message.strip():
        return ""
    first = message.strip().splitlines()[0].split(". ")[0].rstrip(". ")
    return shorten(first, _QUOTED_MAX)


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "(unknown status)"


def _number(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None
