"""travelplanner/history.py: a conversation's history as the model accepts it, every tool call answered."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from agent_framework import AgentResponse, Content, Message

from redis_stream_response_handler import Liveness, RunLog, WritePolicy, stream_key
from testing import model_server as ms
from travelplanner.agent import build_agent
from travelplanner.history import answered_only, answered_response
from travelplanner.recorder import RecordedAgent, run_log_options
from travelplanner.settings import Settings

ARGS = json.dumps({"destination": "Tokyo", "date": "2026-12-02"})


def call(call_id: str) -> Content:
    return Content.from_function_call(call_id=call_id, name="get_weather_forecast", arguments=ARGS)


def result(call_id: str) -> Content:
    return Content.from_function_result(call_id=call_id, result="sunny")


def ids(messages: list[Message]) -> list[list[str]]:
    return [[f"{c.type}:{c.call_id}" if c.call_id else c.type for c in m.contents] for m in messages]


def test_unanswered_calls_and_orphan_results_are_dropped_and_the_rest_kept() -> None:
    history = [Message("user", ["hi"]), Message("assistant", [call("a"), call("lost")]), Message("tool", [result("a")]),
               Message("tool", [result("orphan")]), Message("assistant", [call("gone")]), Message("user", ["more"])]
    assert ids(answered_only(history)) == [["text"], ["function_call:a"], ["function_result:a"], ["text"]]
    complete = [history[0], Message("assistant", [call("a")]), history[2]]
    assert all(kept is given for kept, given in zip(answered_only(complete), complete, strict=True))


def test_a_partial_response_keeps_its_answered_calls_and_text() -> None:
    partial = AgentResponse(messages=[Message("assistant", [call("a")]), Message("tool", [result("a")]),
                                      Message("assistant", [call("b"), Content.from_text("Day 1")])])
    assert ids(answered_response(partial).messages) == [["function_call:a"], ["function_result:a"], ["text"]]
    whole = AgentResponse(messages=[Message("assistant", ["Day 1"])])
    assert answered_response(whole) is whole


@pytest.fixture
def server() -> Iterator[ms.ScriptedModelServer]:
    with ms.ScriptedModelServer() as running:
        yield running


async def test_a_history_stored_broken_is_repaired_before_the_model_sees_it(
        server: ms.ScriptedModelServer, run_log: RunLog) -> None:
    """A conversation stored before the rule (a run cancelled in its tool calls) still gets answers."""
    settings = Settings.from_env({"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": server.base_url,
                                  "OPENAI_MODEL": "gpt-test"})
    agent = RecordedAgent(build_agent(settings), lambda: run_log, WritePolicy(liveness=Liveness(stall_seconds=3)))
    stored = [Message("user", ["Plan a day in Tokyo"]), Message("assistant", [call("call_cut")]),
              Message("user", ["And day 2?"])]
    conversation, run = f"history-{uuid.uuid4().hex}", uuid.uuid4().hex
    await run_log.open_run(conversation, run)
    try:
        stream = agent.run(stored, stream=True, options=run_log_options(conversation, run))
        async for _ in stream:
            pass
        assert "東京" in (await stream.get_final_response()).text
    finally:
        await agent.agent.client.client.close()
    assert [r.status for r in server.requests] == [200, 200]
    assert not any(m.get("tool_calls") and m["tool_calls"][0]["id"] == "call_cut" for m in server.requests[0].messages)
    kinds = [f["k"] for _, f in await run_log.redis.xrange(stream_key(conversation))]
    assert kinds[-1] == "d"
