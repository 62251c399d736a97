"""The agent as the durable host runs it: every run's answer is recorded in the run log.

The durable entity calls `run(stream=True)` once per execution of a run, so each call is one attempt:
a redelivered run (the same correlation id executed again) starts a new attempt, which fences off the
old one and tells readers to discard its text. Each attempt has one model budget (`RunBudget`: the
MODEL_* settings) for all its model requests, retries and fallback included.

Failures are caught here, where they happen, because the host's own callbacks are not called when a
run fails. When the streamed call fails:

- if its answer had begun and broke off (a cut connection, a stall, an early end, a malformed chunk,
  or a failure no rule here knows), the call runs once more without streaming, if the budget allows
  one more try: readers get a `reset` (when partial text had been streamed), the complete answer, `done`;
- anything else is not run again: the service refused the request, or the chat client already retried
  it as long as the budget allowed, or the budget is spent, so it would fail the same way;
- a run that gives up ends with one `error` whose text is one sentence (`model_failures.describe`); the
  detail goes to the log. The failure is re-raised so the durable host records it, and the host's own
  non-streaming retry that follows is answered with the same failure, not another model call, so the
  conversation's next turn can start.

A run stopped from outside (cancelled, or replaced by a redelivery) stops its model at once, also while
it waits for a first chunk, and returns what it has. What a run is given and what it returns is cleaned
of tool calls no result answers (`history`): the durable host stores a stopped run's partial answer as
history, and an unanswered call in it would make the model refuse every later turn.

Besides the answer's text, readers get the run's tool activity (`tool` events: each call when the
model asks for it, and again when its result is in) and, where the model reports it, the tokens the
run used (a `usage` event before `done`); see `run_events`.

The run log is addressed through the run request's options (set by the HTTP contract when it dispatches
the run); they are removed before the model sees them. A run without them is passed through unrecorded.
With telemetry on, the options also carry the dispatching request's W3C trace context, and each attempt is
a span (`run TravelPlanner`) under it, which the agent's own spans (the model's and the tools' calls) nest
in, and which ends once the attempt's terminal entry is in the log, with its outcome.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from agent_framework import AgentResponse, AgentResponseUpdate, ResponseStream
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from redis_stream_response_handler import RunLog, RunWriter, WritePolicy
from travelplanner.history import answered_history, answered_response
from travelplanner.model_budget import BUDGET_KWARG, ModelPolicy, RunBudget
from travelplanner.model_failures import ModelFailure, describe
from travelplanner.run_events import Labeller, ToolActivity, tool_events_of, usage_event

logger = logging.getLogger(__name__)

RUN_LOG_OPTION = "run_log"
_FAILURE_MEMORY = 1000
_UNTRACED = contextlib.nullcontext()
T = TypeVar("T")


def run_log_options(conversation_id: str, correlation_id: str,
                    trace_context: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The run-request options that make a run recorded under this conversation and run (and traced under
    `trace_context`, a W3C traceparent and tracestate, when given)."""
    target: dict[str, Any] = {"conversation_id": conversation_id, "correlation_id": correlation_id}
    if trace_context:
        target["trace"] = dict(trace_context)
    return {RUN_LOG_OPTION: target}


class _Within:
    """`span` as the current span in a block: an attach and a detach, all it costs per update."""

    __slots__ = ("_context", "_token")

    def __init__(self, span: Span) -> None:
        self._context = trace.set_span_in_context(span)
        self._token: object = None

    def __enter__(self) -> None:
        self._token = otel_context.attach(self._context)

    def __exit__(self, *exc: object) -> None:
        otel_context.detach(self._token)  # type: ignore[arg-type]


def _current(span: Span | None) -> contextlib.AbstractContextManager[Any]:
    """`span` as the current span in this block (nothing at all without telemetry)."""
    return _Within(span) if span is not None else _UNTRACED


class _Fenced(Exception):
    """The log refused this attempt (the run was cancelled, or replaced): stop producing its answer."""


class RecordedAgent:
    def __init__(self, agent: Any, run_log: Callable[[], RunLog], policy: WritePolicy,
                 model_policy: ModelPolicy | None = None, tool_labels: Labeller | None = None,
                 tracer: Tracer | None = None) -> None:
        self.agent = agent
        self.name: str = agent.name
        self.id: str = getattr(agent, "id", agent.name)
        self.description: str | None = getattr(agent, "description", None)
        self._run_log = run_log  # the log bound to the calling event loop
        self._policy = policy
        self._model_policy = model_policy or ModelPolicy()
        self._tool_labels = tool_labels  # what a tool call is doing, in words, for readers' status lines
        self._tracer = tracer  # None: telemetry is off, and no attempt is traced
        self._failed: OrderedDict[str, BaseException] = OrderedDict()
        # The attempts this process is writing, for a worker that must end them before it exits.
        self._running: dict[RunWriter, asyncio.AbstractEventLoop] = {}
        self._running_changed = threading.Condition()

    def run(self, messages: Any = None, *, stream: bool = False, session: Any = None, **kwargs: Any) -> Any:
        options = dict(kwargs.pop("options", None) or {})
        target = options.pop(RUN_LOG_OPTION, None)
        kwargs["options"] = options
        messages = answered_history(messages)
        if not isinstance(target, Mapping):
            return self.agent.run(messages, stream=stream, session=session, **kwargs)
        budget = self._model_policy.budget()
        kwargs["client_kwargs"] = {**(kwargs.get("client_kwargs") or {}), BUDGET_KWARG: budget}
        call = _ModelCall(self.agent, messages, session, kwargs)
        writer = self._run_log().writer(target["conversation_id"], target["correlation_id"], self._policy)
        self._track(writer)
        span = self._start_span(target) if self._tracer is not None else None
        if stream:
            outcome: dict[str, AgentResponse] = {}
            stream_of_updates = self._stream(call, writer, budget, outcome, span)
            if span is not None:
                stream_of_updates = self._traced(span, writer, stream_of_updates)
            return ResponseStream(stream_of_updates, finalizer=lambda _updates: outcome["response"])
        return self._run_whole(call, writer, span)

    def _start_span(self, target: Mapping[str, Any]) -> Span:
        from travelplanner.telemetry import conversation_tag

        assert self._tracer is not None
        carrier = target.get("trace")
        parent = propagate.extract(dict(carrier)) if isinstance(carrier, Mapping) else None
        return self._tracer.start_span(f"run {self.name}", context=parent, kind=SpanKind.CONSUMER, attributes={
            "travelplanner.agent": self.name, "travelplanner.run.id": str(target["correlation_id"]),
            "travelplanner.conversation.tag": conversation_tag(str(target["conversation_id"]))})

    @staticmethod
    def _end_span(span: Span | None, writer: RunWriter, outcome: str) -> None:
        """Once the attempt's terminal entry is in the log (or the log refused the attempt)."""
        if span is None:
            return
        outcome = writer.interrupted and "interrupted" or writer.fenced or outcome
        span.set_attribute("travelplanner.run.outcome", outcome)
        if writer.attempt is not None:
            span.set_attribute("travelplanner.run.attempt", writer.attempt)
        if outcome in ("error", "interrupted"):
            span.set_status(Status(StatusCode.ERROR, outcome))
        span.end()

    async def _traced(self, span: Span, writer: RunWriter,
                      updates: AsyncIterator[AgentResponseUpdate]) -> AsyncIterator[AgentResponseUpdate]:
        outcome = "stopped"  # the host stopped reading before the attempt ended
        try:
            async for update in updates:
                yield update
            outcome = writer.finished or "stopped"
        except Exception:
            outcome = "error"
            raise
        finally:
            self._end_span(span, writer, outcome)

    async def _stream(self, call: _ModelCall, writer: RunWriter, budget: RunBudget,
                      outcome: dict[str, AgentResponse], span: Span | None) -> AsyncIterator[AgentResponseUpdate]:
        updates: list[AgentResponseUpdate] = []
        streamed: list[str] = []
        activity = ToolActivity(self._tool_labels)
        try:
            with _current(span):  # the agent's own span starts here, under the run's
                started = call.start(stream=True)
            async with started as inner:
                while (update := await _next_in(span, writer, inner)) is not None:
                    updates.append(update)
                    for event in activity.events(update.contents):
                        writer.add_event("tool", event)
                    if update.text:
                        writer.add(update.text)
                        streamed.append(update.text)
                    yield update
                    if writer.stopped and writer.fenced:
                        raise _Fenced
                for event in activity.finish():
                    writer.add_event("tool", event)
                with _current(span):
                    response = await inner.get_final_response()
                self._add_usage(writer, response)
        except _Fenced:
            logger.info("run %s stopped early: %s", writer.correlation_id, writer.fenced)
            outcome["response"] = answered_response(AgentResponse.from_updates(updates))
            return
        except Exception as error:
            if not _worth_a_whole_retry(error, budget):
                await self._give_up(writer, error)
                raise
            logger.warning("streamed run %s broke off (%s); running it again without streaming",
                           writer.correlation_id, describe(error))
            try:
                with _current(span):
                    response = await self._fall_back(call, writer, "".join(streamed))
            except _Fenced:
                outcome["response"] = answered_response(AgentResponse.from_updates(updates))
                return
            except Exception as fallback_error:
                await self._give_up(writer, fallback_error)
                raise
        outcome["response"] = response
        await writer.finish("done")

    async def _fall_back(self, call: _ModelCall, writer: RunWriter, streamed: str) -> AgentResponse:
        response: AgentResponse = await _unless_fenced(writer, call.start(stream=False))
        if streamed and response.text != streamed:
            writer.reset("the streamed answer failed; the complete answer follows")
            self._add_whole(writer, response)
        elif not streamed:
            self._add_whole(writer, response)
        else:
            self._add_usage(writer, response)
        return response

    def _add_whole(self, writer: RunWriter, response: AgentResponse) -> None:
        """A whole answer's tool activity, text and usage, as a streamed one would have shown them."""
        for event in tool_events_of(response.messages, self._tool_labels):
            writer.add_event("tool", event)
        writer.add(response.text)
        self._add_usage(writer, response)

    @staticmethod
    def _add_usage(writer: RunWriter, response: AgentResponse) -> None:
        if (usage := usage_event(response.usage_details)) is not None:
            writer.add_event("usage", usage)

    async def _run_whole(self, call: _ModelCall, writer: RunWriter, span: Span | None) -> AgentResponse:
        failure = self._failed.pop(writer.correlation_id, None)
        if failure is not None:
            await writer.abandon()  # this attempt already ended the run with its error
            self._end_span(span, writer, "error")
            raise failure
        outcome = "error"
        try:
            with _current(span):
                response: AgentResponse = await _unless_fenced(writer, call.start(stream=False))
        except _Fenced:
            outcome = "stopped"
            return AgentResponse(messages=[])
        except Exception as error:
            await self._give_up(writer, error, remember=False)
            raise
        else:
            self._add_whole(writer, response)
            await writer.finish("done")
            outcome = "done"
            return response
        finally:
            self._end_span(span, writer, outcome)

    def _track(self, writer: RunWriter) -> None:
        with self._running_changed:
            self._running[writer] = asyncio.get_running_loop()

        def done() -> None:
            with self._running_changed:
                self._running.pop(writer, None)
                self._running_changed.notify_all()

        writer.when_closed(done)

    def wait_until_idle(self, timeout: float) -> bool:
        """From any thread: wait until no attempt is being written; False if some still are after `timeout`."""
        with self._running_changed:
            return self._running_changed.wait_for(lambda: not self._running, timeout)

    def interrupt_running(self, reason: str, timeout: float = 5.0) -> int:
        """From any thread: end every attempt still being written with an `error` saying why; returns how many.

        For a worker that must exit now. Each terminal entry is fenced to its attempt, so a run that
        another worker has taken over meanwhile is left to that worker.
        """
        with self._running_changed:
            running = list(self._running.items())
        ended = [asyncio.run_coroutine_threadsafe(writer.finish("error", reason), loop) for writer, loop in running]
        concurrent.futures.wait(ended, timeout)
        return len(running)

    async def _give_up(self, writer: RunWriter, error: BaseException, *, remember: bool = True) -> None:
        sentence = describe(error)
        logger.warning("run %s failed: %s", writer.correlation_id, sentence, exc_info=error)
        await writer.finish("error", sentence)
        if remember:
            self._failed[writer.correlation_id] = error
            while len(self._failed) > _FAILURE_MEMORY:
                self._failed.popitem(last=False)


def _worth_a_whole_retry(error: Exception, budget: RunBudget) -> bool:
    """The fallback rule: an answer that broke off after it began, and a try left in the budget."""
    if isinstance(error, ModelFailure):
        return not error.final and error.retry == "run" and budget.next_try(error) is not None
    # A failure of the agent, or of a model this module does not know: worth one whole retry too.
    return budget.next_try(ModelFailure(describe(error), "run")) is not None


async def _next_in(span: Span | None, writer: RunWriter,
                   updates: ResponseStream[AgentResponseUpdate, Any]) -> AgentResponseUpdate | None:
    """The next update (the model's and tools' work for it traced under the run's span), unless fenced."""
    with _current(span):
        return await _unless_fenced(writer, _next_or_none(updates))


async def _next_or_none(updates: ResponseStream[AgentResponseUpdate, Any]) -> AgentResponseUpdate | None:
    try:
        return await anext(updates)
    except StopAsyncIteration:
        return None


async def _unless_fenced(writer: RunWriter, awaitable: Awaitable[T]) -> T:
    """Await `awaitable`, unless the log refuses the attempt first: then cancel it and raise _Fenced."""
    signal = writer.fence_signal
    loop = asyncio.get_running_loop()
    timer = asyncio.timeout(None)
    waiting = True

    def stop(_: object) -> None:
        if waiting:
            timer.reschedule(loop.time())  # cancels the await below, as an expired timeout does

    signal.add_done_callback(stop)
    try:
        async with timer:
            return await awaitable
    except Exception:
        if timer.expired() and signal.done():
            raise _Fenced from None
        raise
    finally:
        waiting = False
        signal.remove_done_callback(stop)


class _ModelCall:
    """The inner agent call with the arguments the durable host gave, repeatable for a fallback."""

    def __init__(self, agent: Any, messages: Any, session: Any, kwargs: dict[str, Any]) -> None:
        self._agent, self._messages, self._session, self._kwargs = agent, messages, session, kwargs

    def start(self, *, stream: bool) -> Any:
        return self._agent.run(self._messages, stream=stream, session=self._session, **self._kwargs)
