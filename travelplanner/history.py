"""A conversation's history as the model accepts it: every tool call answered.

The Chat Completions API refuses (400) a history in which an assistant message's tool call has no tool
message answering it, or a tool message answers no call. A run stopped in its tool-call phase (a cancel,
a model cut off mid-call) leaves exactly that behind, and the durable host keeps what the run returned as
the conversation's history, so every later turn would be refused. Such calls are dropped: from the
history a run is given (which also repairs conversations stored before this rule) and from the partial
answer a stopped run returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent_framework import AgentResponse, Message


def answered_only(messages: Sequence[Message]) -> list[Message]:
    """The messages without tool calls no result answers, or results of no call; the rest untouched."""
    calls = {c.call_id for m in messages for c in m.contents if c.type == "function_call"}
    results = {c.call_id for m in messages for c in m.contents if c.type == "function_result"}
    kept_messages: list[Message] = []
    for message in messages:
        kept = [c for c in message.contents
                if not (c.type == "function_call" and c.call_id not in results)
                and not (c.type == "function_result" and c.call_id not in calls)]
        if len(kept) == len(message.contents):
            kept_messages.append(message)
        elif kept:
            kept_messages.append(Message(message.role, kept, author_name=message.author_name,
                                         additional_properties=message.additional_properties))
    return kept_messages


def answered_history(messages: Any) -> Any:
    """`answered_only` for a list of messages (what the durable host passes); anything else as it is."""
    if isinstance(messages, list) and all(isinstance(m, Message) for m in messages):
        return answered_only(messages)
    return messages


def answered_response(response: AgentResponse) -> AgentResponse:
    """A (partial) response without its unanswered tool calls."""
    messages = answered_only(response.messages)
    if sum(len(m.contents) for m in messages) == sum(len(m.contents) for m in response.messages):
        return response
    return AgentResponse(messages=messages, response_id=response.response_id, agent_id=response.agent_id,
                         created_at=response.created_at, finish_reason=response.finish_reason,
                         usage_details=response.usage_details)
