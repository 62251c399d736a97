"""Models that misbehave on cue, and executions of a run outside the host (an injected redelivery).

`ScriptedModel` is a real agent-framework chat client: it streams a fixed
answer chunk by chunk, at a pace, and can fail after N chunks (the streamed
call) or on the whole (the non-streaming fallback). `execute` runs one
attempt of a run through the product's `RecordedAgent` with such a model,
exactly as a second durable worker executing the same entity operation would.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from agent_framework import (
    Agent,
    BaseChatClient,
    ChatResponse,
    ChatResponseUpdate,
    Content,
    FunctionInvocationLayer,
    Message,
    ResponseStream,
)

from redis_stream_response_handler import Retention, RunLog, RunWriter, WritePolicy
from streaming.redis_clients import connect
from travelplanner.agent import AGENT_NAME
from travelplanner.recorder import RecordedAgent, run_log_options


class ScriptedModelError(RuntimeError):
    """What a ScriptedModel raises when told to fail."""


class ScriptedModel(FunctionInvocationLayer[Any], BaseChatClient[Any]):
    def __init__(self, chunks: Sequence[str], *, chunks_per_second: float = 0, fail_stream_after: int | None = None,
                 fail_whole: bool = False, whole_text: str | None = None) -> None:
        super().__init__()
        self.chunks = list(chunks)
        self.chunks_per_second = chunks_per_second
        self.fail_stream_after = fail_stream_after
        self.fail_whole = fail_whole
        self.whole_text = "".join(chunks) if whole_text is None else whole_text
        self.produced = 0  # chunks handed to the agent so far (a fenced writer must stop this)
        self.model = "scripted"

    def service_url(self) -> str:
        return "scripted://chaos"

    def _inner_get_response(
        self, *, messages: Sequence[Message], stream: bool, options: Mapping[str, Any], **kwargs: Any
    ) -> Awaitable[ChatResponse] | ResponseStream[ChatResponseUpdate, ChatResponse]:
        if stream:
            return self._build_response_stream(self._stream())
        return self._whole()

    async def _stream(self) -> AsyncIterator[ChatResponseUpdate]:
        message_id = f"msg-{uuid.uuid4().hex}"
        for index, chunk in enumerate(self.chunks):
            if self.fail_stream_after is not None and index >= self.fail_stream_after:
                raise ScriptedModelError(f"the model connection dropped after {index} chunks")
            if self.chunks_per_second and index:
                await asyncio.sleep(1 / self.chunks_per_second)
            self.produced += 1
            yield ChatResponseUpdate(contents=[Content.from_text(chunk)], role="assistant", message_id=message_id,
                                     created_at=datetime.now(UTC).isoformat(),
                                     finish_reason="stop" if index == len(self.chunks) - 1 else None)

    async def _whole(self) -> ChatResponse:
        if self.fail_whole:
            raise ScriptedModelError("the model is overloaded (HTTP 529)")
        return ChatResponse(messages=[Message("assistant", [Content.from_text(self.whole_text)])],
                            created_at=datetime.now(UTC).isoformat(), finish_reason="stop")


@dataclass
class Execution:
    """The outcome of one attempt executed outside the host."""

    text: str | None  # the agent's final answer (None when the run failed)
    error: BaseException | None
    writer: RunWriter | None  # its attempt number, and whether it was fenced or interrupted


class _TrackingLog(RunLog):
    """The run log, remembering the writer it made (the attempt's number is known only to it)."""

    writers: list[RunWriter]

    def writer(self, conversation_id: str, correlation_id: str, policy: WritePolicy) -> RunWriter:
        made = super().writer(conversation_id, correlation_id, policy)
        self.writers = [*getattr(self, "writers", []), made]
        return made


async def execute(model: ScriptedModel, redis_url: str, conversation_id: str, correlation_id: str,
                  *, policy: WritePolicy, retention: Retention, message: str = "Plan a trip",
                  settle_seconds: float = 0.0, redis: aioredis.Redis | None = None) -> Execution:
    """One attempt at the run, recorded in its log; a run the host is executing too is redelivered.

    `settle_seconds`: how long to wait for the writer to finish in the background
    (after an outage it ends the run with its error once Redis is back). `redis`: a
    client to share (the caller closes it); otherwise one of its own for this attempt.
    """
    log = _TrackingLog(redis or connect(redis_url), retention)
    agent = RecordedAgent(Agent(client=model, name=AGENT_NAME, instructions="Plan trips."), lambda: log, policy)
    text: str | None = None
    error: BaseException | None = None
    try:
        stream = agent.run(message, stream=True, options=run_log_options(conversation_id, correlation_id))
        async for _ in stream:
            pass
        text = (await stream.get_final_response()).text
    except Exception as failure:  # the product re-raises a failed run for the durable host to record
        error = failure
    writer = log.writers[-1] if getattr(log, "writers", None) else None
    try:
        if writer is not None and settle_seconds:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(writer.closed(), settle_seconds)
    finally:
        if redis is None:
            await log.redis.aclose()
    return Execution(text, error, writer)
