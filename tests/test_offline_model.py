"""The offline demo model: parsing, the real function-calling loop, streaming and pacing."""

from __future__ import annotations

import re
import time
from datetime import date, datetime

import pytest
from agent_framework import Agent, AgentResponse, Message

from tools import get_local_events, get_weather_forecast
from travelplanner.agent import build_agent
from travelplanner.offline_model import (
    OfflineTravelModel,
    chunk_text,
    parse_days,
    parse_destination,
    parse_start,
)
from travelplanner.settings import Settings

TODAY = date(2026, 11, 25)  # a Wednesday; trips with no date start a week later, on 2 December
SETTINGS = Settings.from_env({})


def offline_agent(chunks_per_second: float = 0, **kwargs: object) -> Agent:
    return build_agent(SETTINGS, OfflineTravelModel(chunks_per_second=chunks_per_second, today=TODAY, **kwargs))


async def run_streaming(agent: Agent, text: str, **kwargs: object) -> tuple[list[str], AgentResponse]:
    stream = agent.run(text, stream=True, **kwargs)
    chunks = [update.text async for update in stream if update.text]
    return chunks, await stream.get_final_response()


def contents_of(response: AgentResponse, kind: str) -> list:
    return [c for m in response.messages for c in m.contents if c.type == kind]


@pytest.mark.parametrize(("text", "days"), [
    ("Plan a 3-day trip to Tokyo", 3),
    ("5 days in Paris next week", 5),
    ("weekend in Rome", 2),
    ("A long weekend in Lisbon", 3),
    ("4 nights in Kyoto", 5),
    ("two weeks in Reykjavik", 14),
    ("Plan a 30 day trip to Lisbon", 14),
    ("Plan a day-by-day itinerary for London", 3),
    ("Somewhere warm please", 3),
])
def test_parse_days(text: str, days: int) -> None:
    assert parse_days(text) == days


@pytest.mark.parametrize(("text", "destination"), [
    ("Plan a 3-day trip to Tokyo", "Tokyo"),
    ("5 days in paris next week", "Paris"),
    ("A weekend in NYC", "New York"),
    ("Plan a 3-day trip to Ulaanbaatar", "Ulaanbaatar"),
    ("I want to visit the Isle of Skye", "Isle of Skye"),
    ("Plan a trip for Canada Day in Ottawa", "Ottawa"),
    ("Plan something nice for me", "your destination"),
])
def test_parse_destination(text: str, destination: str) -> None:
    assert parse_destination(text) == destination


@pytest.mark.parametrize(("text", "start"), [
    ("Plan a 3-day trip to Tokyo", date(2026, 12, 2)),
    ("3 days in Rome from 2027-03-10", date(2027, 3, 10)),
    ("Tokyo tomorrow", date(2026, 11, 26)),
    ("5 days in Paris next week", date(2026, 11, 30)),
    ("weekend in Rome", date(2026, 11, 28)),
])
def test_parse_start(text: str, start: date) -> None:
    assert parse_start(text, TODAY) == start


def test_chunks_are_a_few_words_and_lossless() -> None:
    text = "# Title\n\nSome words here, and more.\n- a list\n"
    chunks = chunk_text(text, 3)
    assert "".join(chunks) == text
    assert all(len(c.split()) <= 3 for c in chunks)
    assert len(chunks) == 4  # ten words


def test_it_says_what_it_is() -> None:
    assert "offline demo model, not AI" in OfflineTravelModel.DISCLOSURE
    assert "not AI" in (OfflineTravelModel.__doc__ or "")


async def test_a_plan_goes_through_the_real_function_calling_loop() -> None:
    chunks, response = await run_streaming(offline_agent(), "Plan a 3-day trip to Tokyo")

    calls = contents_of(response, "function_call")
    results = {r.call_id: r.result for r in contents_of(response, "function_result")}
    trip_days = ["2026-12-02", "2026-12-03", "2026-12-04"]
    assert sorted((c.name, c.parse_arguments()["date"]) for c in calls) == sorted(
        (name, d) for d in trip_days for name in ("get_local_events", "get_weather_forecast"))
    # The framework ran the real tools: each result is exactly what the tool returns.
    for call in calls:
        tool = get_weather_forecast if call.name == "get_weather_forecast" else get_local_events
        assert results[call.call_id] == tool(**call.parse_arguments())

    text = response.text
    assert "".join(chunks) == text
    assert len(chunks) > 100 and all(len(c.split()) <= 3 for c in chunks)
    assert len(text.encode()) > 4000
    assert text.startswith("# 3-day itinerary for Tokyo")
    headings = re.findall(r"^## Day (\d+) — .+$", text, re.MULTILINE)
    assert headings == ["1", "2", "3"]
    for slot in ("**Morning", "**Afternoon", "**Evening", "**Food:**", "**Getting around:**", "**Tip:**"):
        assert text.count(slot) == 3
    # The tool results are woven in: each day's forecast and an evening event.
    for day in trip_days:
        condition = get_weather_forecast("Tokyo", day).split(": ", 1)[1].split(", high")[0]
        assert f"{condition}, " in text
    evening = [line for line in get_local_events("Tokyo", trip_days[0]).splitlines() if "Evening" in line]
    assert evening and evening[0].split(": ", 1)[1] in text


async def test_the_answer_is_deterministic() -> None:
    first = await offline_agent().run("Plan a 3-day trip to Tokyo")
    _, second = await run_streaming(offline_agent(), "Plan a 3-day trip to Tokyo")
    assert first.text == second.text


async def test_non_streaming_gives_the_same_text_as_streaming() -> None:
    streamed = await run_streaming(offline_agent(), "weekend in Rome")
    whole = await offline_agent().run("weekend in Rome")
    assert whole.text == streamed[1].text
    assert re.findall(r"^## Day (\d+)", whole.text, re.MULTILINE) == ["1", "2"]


async def test_unknown_destination_still_gets_a_plan() -> None:
    response = await offline_agent().run("Plan a 2-day trip to Ulaanbaatar")
    assert response.text.startswith("# 2-day itinerary for Ulaanbaatar")
    assert "the historic centre of Ulaanbaatar" in response.text
    assert all("Ulaanbaatar" in str(r.result) for r in contents_of(response, "function_result"))


async def test_updates_carry_created_at() -> None:
    client = OfflineTravelModel(chunks_per_second=0, today=TODAY)
    stream = client.get_response([Message("user", ["Plan a day trip to Paris"])], stream=True)
    updates = [u async for u in stream]
    assert updates and all(datetime.fromisoformat(u.created_at or "") for u in updates)


async def test_without_tools_it_writes_the_plan_directly() -> None:
    client = OfflineTravelModel(chunks_per_second=0, today=TODAY)
    response = await client.get_response([Message("user", ["Plan a 2-day trip to Berlin"])])
    assert re.findall(r"^## Day (\d+)", response.text, re.MULTILINE) == ["1", "2"]
    assert "Weather not available" in response.text


async def test_a_follow_up_revises_the_day_it_names() -> None:
    agent = offline_agent()
    session = agent.create_session()
    _, plan = await run_streaming(agent, "Plan a 3-day trip to Tokyo", session=session)
    chunks, revision = await run_streaming(agent, "Make day 2 more relaxed", session=session)

    text = revision.text
    assert text.startswith("You asked: “Make day 2 more relaxed”")
    assert re.findall(r"^## Day (\d+) — .+$", text, re.MULTILINE) == ["2"]
    assert "gentler pace" in text and "Keep the afternoon free" in text
    assert 500 < len(text) < len(plan.text) / 2
    assert len(chunks) > 10
    # Day 2's weather and events were asked for again, for day 2's date only.
    dates = {c.parse_arguments()["date"] for c in contents_of(revision, "function_call")}
    assert dates == {"2026-12-03"}

    again = offline_agent()
    again_session = again.create_session()
    await again.run("Plan a 3-day trip to Tokyo", session=again_session)
    assert (await again.run("Make day 2 more relaxed", session=again_session)).text == text


async def test_a_follow_up_works_when_the_host_replays_history_as_messages() -> None:
    # The durable entity keeps the conversation itself and passes it all to run(), with no session.
    first = Message("user", ["Plan a 3-day trip to Paris"])
    plan = await offline_agent().run([first])
    follow_up = Message("user", ["Make the last day busier"])
    revision = await offline_agent().run([first, *plan.messages, follow_up])
    assert re.findall(r"^## Day (\d+) — .+$", revision.text, re.MULTILINE) == ["3"]
    assert "more to see" in revision.text and "Extra stop" in revision.text


@pytest.mark.parametrize(("request_text", "expected"), [
    ("What should I pack?", "## What to pack for Lisbon"),
    ("Where should we eat? We are vegetarian.", "**Dietary needs:**"),
    ("How can we keep the cost down?", "## Keeping Lisbon affordable"),
    ("Thanks!", "Your 2-day Lisbon plan covers"),
])
async def test_other_follow_ups_refer_to_the_request_and_the_trip(request_text: str, expected: str) -> None:
    agent = offline_agent()
    session = agent.create_session()
    await agent.run("A weekend in Lisbon", session=session)
    response = await agent.run(request_text, session=session)
    assert response.text.startswith(f"You asked: “{request_text}”")
    assert expected in response.text
    assert "## Day" not in response.text


async def test_a_follow_up_can_replan_the_length_or_the_place() -> None:
    agent = offline_agent()
    session = agent.create_session()
    await agent.run("A weekend in Lisbon", session=session)
    longer = await agent.run("Make it 4 days", session=session)
    assert longer.text.startswith("# 4-day itinerary for Lisbon")
    other = await agent.run("Now plan 2 days in Kyoto", session=session)
    assert other.text.startswith("# 2-day itinerary for Kyoto")


async def test_chunks_per_second_paces_the_stream() -> None:
    client = OfflineTravelModel(chunks_per_second=20, words_per_chunk=60, today=TODAY)
    started = time.perf_counter()
    stream = client.get_response([Message("user", ["Plan a day trip to Paris"])], stream=True)
    updates = [u async for u in stream]
    elapsed = time.perf_counter() - started
    assert len(updates) >= 5
    assert elapsed >= 0.8 * (len(updates) - 1) / 20  # loose: only a lower bound


async def test_zero_chunks_per_second_streams_at_full_speed() -> None:
    started = time.perf_counter()
    chunks, response = await run_streaming(offline_agent(0), "Plan a 14-day trip to Sydney")
    assert re.findall(r"^## Day (\d+)", response.text, re.MULTILINE) == [str(n) for n in range(1, 15)]
    assert len(chunks) > 1000
    assert time.perf_counter() - started < 5


def test_negative_pace_is_refused() -> None:
    with pytest.raises(ValueError, match="chunks_per_second"):
        OfflineTravelModel(chunks_per_second=-1)
