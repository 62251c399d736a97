"""The agent as the durable host runs it: every run's answer is recorded in the run log.

The durable entity calls `run(stream=True)` once per execution of a run, so
each call is one attempt: a redelivered run (the same correlation id executed
again) starts a new attempt, which fences off the old one and tells readers
to discard its text. Failures are caught here, where they happen, because
the host's own callbacks are not called when a run fails:

- the streamed model call fails: the run falls back to one non-streaming call;
  readers get a `reset` (when partial text had been streamed) and then the
  complete answer, then `done`;
- the fallback fails too: the run ends with `error` and the failure is
  re-raised so the durable host records it; the host's own non-streaming
  retry that follows is answered with the same failure, not a second call.

The run log is addressed through the run request's options (set by the HTTP
contract when it dispatches the run); they are removed before the model sees
them. A run without them is passed through unrecorded.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from agent_framework import AgentResponse, AgentResponseUpdate, ResponseStream

from redis_stream_response_handler import RunLog, RunWriter, WritePolicy

logger = logging.getLogger(__name__)

RUN_LOG_OPTION = "run_log"
_FAILURE_MEMORY = 1000


def run_log_options(conversation_id: str, correlation_id: str) -> dict[str, Any]:
    """The run-request options that make a run recorded under this conversation and run."""
    return {RUN_LOG_OPTION: {"conversation_id": conversation_id, "correlation_id": correlation_id}}


def describe_failure(error: BaseException) -> str:
    text = str(error).strip() or "no details"
    return f"the agent failed ({type(error).__name__}): {text[:500]}"


class RecordedAgent:
    def __init__(self, agent: Any, run_log: Callable[[], RunLog], policy: WritePolicy) -> None:
        self.agent = agent
        self.name: str = agent.name
        self.id: str = getattr(agent, "id", agent.name)
        self.description: str | None = getattr(agent, "description", None)
        self._run_log = run_log  # the log bound to the calling event loop
        self._policy = policy
        self._failed: OrderedDict[str, BaseException] = OrderedDict()

    def run(self, messages: Any = None, *, stream: bool = False, session: Any = None, **kwargs: Any) -> Any:
        options = dict(kwargs.pop("options", None) or {})
        target = options.pop(RUN_LOG_OPTION, None)
        kwargs["options"] = options
        if not isinstance(target, Mapping):
            return self.agent.run(messages, stream=stream, session=session, **kwargs)
        call = _ModelCall(self.agent, messages, session, kwargs)
        writer = self._run_log().writer(target["conversation_id"], target["correlation_id"], self._policy)
        if stream:
            outcome: dict[str, AgentResponse] = {}
            return ResponseStream(self._stream(call, writer, outcome), finalizer=lambda _updates: outcome["response"])
        return self._run_whole(call, writer)

    async def _stream(
        self, call: _ModelCall, writer: RunWriter, outcome: dict[str, AgentResponse]
    ) -> AsyncIterator[AgentResponseUpdate]:
        updates: list[AgentResponseUpdate] = []
        streamed: list[str] = []
        try:
            inner = call.start(stream=True)
            async for update in inner:
                updates.append(update)
                if update.text:
                    writer.add(update.text)
                    streamed.append(update.text)
                yield update
                if writer.stopped and writer.fenced:
                    # Cancelled, stalled out or replaced: stop generating; the log already says why.
                    logger.info("run %s stopped early: %s", writer.correlation_id, writer.fenced)
                    outcome["response"] = AgentResponse.from_updates(updates)
                    return
            response = await inner.get_final_response()
        except Exception as error:
            logger.warning("streamed run %s failed (%s); retrying without streaming", writer.correlation_id, error)
            response = await self._fall_back(call, writer, "".join(streamed))
        outcome["response"] = response
        await writer.finish("done")

    async def _fall_back(self, call: _ModelCall, writer: RunWriter, streamed: str) -> AgentResponse:
        try:
            response: AgentResponse = await call.start(stream=False)
        except Exception as error:
            await writer.finish("error", describe_failure(error))
            self._remember_failure(writer.correlation_id, error)
            raise
        if streamed and response.text != streamed:
            writer.reset("the streamed answer failed; the complete answer follows")
            writer.add(response.text)
        elif not streamed:
            writer.add(response.text)
        return response

    async def _run_whole(self, call: _ModelCall, writer: RunWriter) -> AgentResponse:
        failure = self._failed.pop(writer.correlation_id, None)
        if failure is not None:
            await writer.abandon()  # this attempt already ended the run with its error
            raise failure
        try:
            response: AgentResponse = await call.start(stream=False)
        except Exception as error:
            await writer.finish("error", describe_failure(error))
            raise
        writer.add(response.text)
        await writer.finish("done")
        return response

    def _remember_failure(self, correlation_id: str, error: BaseException) -> None:
        self._failed[correlation_id] = error
        while len(self._failed) > _FAILURE_MEMORY:
            self._failed.popitem(last=False)


class _ModelCall:
    """The inner agent call with the arguments the durable host gave, repeatable for a fallback."""

    def __init__(self, agent: Any, messages: Any, session: Any, kwargs: dict[str, Any]) -> None:
        self._agent, self._messages, self._session, self._kwargs = agent, messages, session, kwargs

    def start(self, *, stream: bool) -> Any:
        return self._agent.run(self._messages, stream=stream, session=self._session, **self._kwargs)
