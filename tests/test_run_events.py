"""A run's tool activity and usage: from the agent's updates to `tool` and `usage` entries in the run log."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import date

import pytest
from agent_framework import Content

import testing.model_server as ms
from redis_stream_response_handler import Liveness, RunEvent, RunLog, WritePolicy
from tools import describe_call
from travelplanner.agent import build_agent
from travelplanner.offline_model import OfflineTravelModel
from travelplanner.recorder import RecordedAgent, run_log_options
from travelplanner.run_events import ToolActivity, shown_arguments, usage_event
from travelplanner.settings import Settings

POLICY = WritePolicy(liveness=Liveness(stall_seconds=3))


def decoded(events: list[str]) -> list[dict]:
    return [json.loads(event) for event in events]


# --- from updates to events ------------------------------------------------------------------------


def test_a_call_streamed_in_fragments_is_announced_once_whole_when_the_stream_moves_on() -> None:
    activity = ToolActivity(describe_call)
    fragments = ['{"desti', 'nation": "Kyo', 'to", "date": "2026-12-06"}']
    assert activity.events([Content.from_function_call("c1", "get_weather_forecast", arguments="")]) == []
    for fragment in fragments:  # later fragments carry the call id but no name, as the OpenAI client yields them
        assert activity.events([Content.from_function_call("c1", "", arguments=fragment)]) == []
    second = decoded(activity.events([Content.from_function_call("c2", "get_local_events", arguments="{}")]))
    assert second == [{"call_id": "c1", "name": "get_weather_forecast", "status": "started",
                       "label": "Checking the weather in Kyoto on Sun 6 Dec",
                       "arguments": {"destination": "Kyoto", "date": "2026-12-06"}}]
    assert [e["call_id"] for e in decoded(activity.finish())] == ["c2"]
    assert activity.finish() == []


def test_results_complete_or_fail_their_calls_with_a_short_safe_summary() -> None:
    activity = ToolActivity()
    asked = activity.events([Content.from_function_call("a", "lookup", arguments={"q": "x"}),
                             Content.from_function_call("b", "lookup", arguments={"q": "y"})])
    events = decoded(asked + activity.events([
        Content.from_function_result("a", result="line one\n\n" + "word " * 100),
        Content.from_function_result("b", result="Error: secret-laden detail", exception=RuntimeError("detail")),
    ]))
    # Each call was announced once the stream moved past it (b: when the results came), then answered.
    assert [(e["call_id"], e["status"]) for e in events] == [("a", "started"), ("b", "started"),
                                                             ("a", "completed"), ("b", "failed")]
    completed, failed = events[2], events[3]
    assert completed["summary"].startswith("line one word word") and completed["summary"].endswith("…")
    assert len(completed["summary"]) <= 121
    assert failed["summary"] == "failed" and "detail" not in json.dumps(failed)
    assert completed["label"] == "Running lookup" and completed["arguments"] == {"q": "x"}


def test_arguments_that_look_secret_are_withheld_and_long_ones_cut() -> None:
    shown = shown_arguments({"city": "Oslo", "api_key": "sk-123", "Authorization": "Bearer x", "days": 3,
                             "notes": "n" * 500, "nested": {"password": "p"}})
    assert shown["api_key"] == shown["Authorization"] == "[withheld]"
    assert shown["city"] == "Oslo" and shown["days"] == 3
    assert len(shown["notes"]) == 121
    assert "sk-123" not in json.dumps(shown)


def test_usage_is_reported_only_when_the_model_counted_tokens() -> None:
    assert usage_event(None) is None
    assert usage_event({}) is None
    assert json.loads(usage_event({"input_token_count": 10, "output_token_count": 5, "total_token_count": 15,
                                   "prompt/cached_tokens": 0}) or "") == {
        "input_tokens": 10, "output_tokens": 5, "total_tokens": 15}


# --- through the recorder and the run log ------------------------------------------------------------


async def recorded(agent: RecordedAgent, run_log: RunLog, message: str) -> list[RunEvent]:
    conversation, run = f"events-{uuid.uuid4().hex}", uuid.uuid4().hex
    await run_log.open_run(conversation, run)
    stream = agent.run(message, stream=True, options=run_log_options(conversation, run))
    async for _ in stream:
        pass
    await stream.get_final_response()
    ref = await run_log.resolve(conversation)
    events, _, _ = await run_log.read_after(ref, ref.after)
    return events


async def test_the_offline_model_shows_each_tool_call_asked_for_and_answered(run_log: RunLog) -> None:
    model = OfflineTravelModel(chunks_per_second=0, today=date(2026, 11, 25))
    agent = RecordedAgent(build_agent(Settings.from_env({}), model), lambda: run_log, POLICY,
                          tool_labels=describe_call)
    events = await recorded(agent, run_log, "Plan a 2-day trip to Kyoto")

    kinds = [e.kind for e in events]
    first_text = kinds.index("message")
    assert kinds[:first_text] == ["tool"] * 8 and kinds[-1] == "done"
    assert "tool" not in kinds[first_text:] and "usage" not in kinds  # the offline model counts no tokens
    tools = [json.loads(e.text) for e in events[:first_text]]  # each entry is one whole event: never merged
    assert [t["status"] for t in tools] == ["started"] * 4 + ["completed"] * 4
    assert [t["call_id"] for t in tools[:4]] == [t["call_id"] for t in tools[4:]]
    assert tools[0]["label"] == "Checking the weather in Kyoto on Wed 2 Dec"
    assert tools[1]["label"] == "Looking up events in Kyoto on Wed 2 Dec"
    assert tools[4]["summary"].startswith("Weather for Kyoto on 2026-12-02:")


@pytest.fixture
def server() -> Iterator[ms.ScriptedModelServer]:
    with ms.ScriptedModelServer() as running:
        yield running


async def test_a_real_models_streamed_calls_and_its_token_usage(server: ms.ScriptedModelServer,
                                                                run_log: RunLog) -> None:
    settings = Settings.from_env({"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": server.base_url})
    agent = RecordedAgent(build_agent(settings), lambda: run_log, POLICY, tool_labels=describe_call)
    try:
        events = await recorded(agent, run_log, "Plan a day in Tokyo")
    finally:
        await agent.agent.client.client.close()

    tools = [json.loads(e.text) for e in events if e.kind == "tool"]
    assert [(t["call_id"], t["status"]) for t in tools] == [
        ("call_1_weather", "started"), ("call_1_events", "started"),
        ("call_1_weather", "completed"), ("call_1_events", "completed")]
    assert tools[0]["arguments"] == {"destination": "Tokyo", "date": "2026-12-02"}  # its fragments, joined
    assert "test-key" not in "".join(e.text for e in events)
    usage = [e for e in events if e.kind == "usage"]
    assert [e.kind for e in events][-2:] == ["usage", "done"]
    counted = json.loads(usage[0].text)
    assert set(counted) == {"input_tokens", "output_tokens", "total_tokens"}  # both model calls, summed
    assert counted["total_tokens"] == counted["input_tokens"] + counted["output_tokens"] > 0
