"""The Chat Completions client the agent runs on, held to the run's budget.

It is agent-framework-openai's `OpenAIChatCompletionClient` (which builds the OpenAI or Azure OpenAI SDK
client, with Entra ID when asked), changed where real models fail:

- Time. The SDK's defaults (a 600 s read timeout, 2 retries, repeated by any fallback) would let a silent
  model hold a run for an hour. The SDK keeps only the connect timeout; our own timers give a streamed
  request MODEL_FIRST_BYTE_SECONDS for its first chunk and MODEL_IDLE_SECONDS between chunks, and the
  run's budget (`RunBudget`) bounds everything, non-streamed requests included.
- Retries. The SDK retries nothing. A request that failed before any of its answer was passed on is
  tried again as the run's budget allows (Retry-After honoured up to a cap, never a 400, 401, 403 or
  404). Once part of the answer has been passed on, the failure is raised for the caller to decide
  (`RecordedAgent` runs the call again without streaming).
- Completeness. A streamed answer is complete only when a chunk carried a finish_reason: a body that
  ends without one (a proxy cutting the connection cleanly) is a failure, not a shorter answer.
- Errors. Every failure is a `ModelFailure`, whose text is one readable sentence.

The run's budget arrives in the request's client kwargs under `BUDGET_KWARG` (RecordedAgent passes one
per attempt at a run); a request made without one gets a budget of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from agent_framework import ChatResponse, ChatResponseUpdate, Message, ResponseStream
from agent_framework_openai import OpenAIChatCompletionClient

from travelplanner.model_budget import BUDGET_KWARG, ModelPolicy, RunBudget
from travelplanner.model_failures import ModelFailure, classify

logger = logging.getLogger(__name__)


class BudgetedChatClient(OpenAIChatCompletionClient):
    def __init__(self, *, policy: ModelPolicy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.policy = policy
        self.client = self.client.with_options(timeout=policy.sdk_timeout(), max_retries=0)

    def _inner_get_response(
        self, *, messages: Sequence[Message], options: Mapping[str, Any], stream: bool = False, **kwargs: Any
    ) -> Awaitable[ChatResponse] | ResponseStream[ChatResponseUpdate, ChatResponse]:
        budget: RunBudget = kwargs.pop(BUDGET_KWARG, None) or self.policy.budget()
        send = super()._inner_get_response

        def request() -> Any:
            return send(messages=messages, options=options, stream=stream, **kwargs)

        if stream:
            return self._build_response_stream(self._streamed(request, budget),
                                               response_format=options.get("response_format"))
        return self._whole(request, budget)

    async def _streamed(self, request: Callable[[], ResponseStream[ChatResponseUpdate, Any]],
                        budget: RunBudget) -> AsyncIterator[ChatResponseUpdate]:
        while True:
            began = time.monotonic()
            passed_on = 0  # updates of this try already yielded to the caller
            try:
                async with request() as updates:
                    finished = False
                    while (update := await self._next(updates, budget, first=not passed_on)) is not None:
                        finished = finished or update.finish_reason is not None
                        passed_on += 1
                        yield update
                if not finished:
                    what = "the model's answer ended before the model said it was complete"
                    raise ModelFailure(what, "run" if passed_on else "request")
                return
            except ModelFailure as failure:
                failure.began = began
                if failure.final or passed_on:
                    raise  # the caller has part of this answer: retrying here would repeat it
                wait = budget.next_try(failure)
                if wait is None:
                    raise
                logger.warning("model request failed (%s); trying again in %.1f s", failure, wait)
                await asyncio.sleep(wait)

    async def _next(self, updates: ResponseStream[ChatResponseUpdate, Any], budget: RunBudget, *,
                    first: bool) -> ChatResponseUpdate | None:
        """The next update, or None at the end; a ModelFailure when it does not come in time or at all."""
        limit = self.policy.first_byte_seconds if first else self.policy.idle_seconds
        remaining = budget.remaining()
        timer = asyncio.timeout(min(limit, remaining))
        try:
            async with timer:
                return await anext(updates)
        except StopAsyncIteration:
            return None
        except TimeoutError as error:
            if not timer.expired():
                raise classify(error, answering=not first) from error
            if remaining <= limit:
                raise budget.spent() from None
            if first:
                raise ModelFailure(f"the model did not start answering within {limit:g} s", "request") from None
            raise ModelFailure(f"the model stopped answering mid-stream: nothing for {limit:g} s", "run") from None
        except Exception as error:
            raise classify(error, answering=not first) from error  # chained: the log shows the detail

    async def _whole(self, request: Callable[[], Awaitable[ChatResponse]], budget: RunBudget) -> ChatResponse:
        # A non-streamed answer arrives all at once, after the whole of it was generated: no chunk to time,
        # only the run's budget.
        while True:
            began = time.monotonic()
            timer = asyncio.timeout(budget.remaining())
            try:
                async with timer:
                    return await request()
            except TimeoutError as error:
                failure = budget.spent() if timer.expired() else classify(error, answering=False)
            except Exception as error:
                failure = classify(error, answering=False)
                failure.__cause__ = error  # the log shows the detail
            failure.began = began
            wait = None if failure.final else budget.next_try(failure)
            if wait is None:
                raise failure
            logger.warning("model request failed (%s); trying again in %.1f s", failure, wait)
            await asyncio.sleep(wait)
