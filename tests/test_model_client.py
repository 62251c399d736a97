"""The model client's rules, in process: the run's budget, the sentences failures become, the timers.

travelplanner/model_budget.py decides retries and waits; travelplanner/model_failures.py turns what the
SDK raises into one readable sentence; travelplanner/model_client.py applies both to every request.
The end-to-end view through the hosts is test_model_failures.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from agent_framework import Agent

from testing import model_server as ms
from testing.hosts import free_port
from tools import travel_tools
from travelplanner.agent import build_chat_client
from travelplanner.model_budget import ModelPolicy, RunBudget
from travelplanner.model_failures import ModelFailure, describe, refused, retry_after, sentence
from travelplanner.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def budget(clock: Clock, **policy: float) -> RunBudget:
    return RunBudget(ModelPolicy(**policy), clock=clock, jitter=lambda: 1.0)  # type: ignore[arg-type]


# --- The budget -----------------------------------------------------------------------------------


def test_a_refusal_is_never_retried() -> None:
    failure = refused(400, "Invalid request")
    assert budget(Clock()).next_try(failure) is None
    assert str(failure) == "the model service refused the request: 400 Bad Request (Invalid request); not retried"


def test_a_run_gives_up_at_its_last_try_and_says_how_long_it_tried() -> None:
    clock = Clock()
    run = budget(clock, tries=3)
    waits = []
    for _ in range(3):
        failure = refused(503, "The server is overloaded or not ready yet")
        wait = run.next_try(failure)
        waits.append(wait)
        clock.now += 4 + (wait or 0)
    assert waits == [1.0, 2.0, None]  # doubling from a second (jitter pinned to its top)
    assert str(failure) == ("the model service failed: 503 Service Unavailable (The server is overloaded or not "
                            "ready yet); gave up after 3 tries over 11 s")


def test_retry_after_is_honoured_up_to_the_cap_and_a_longer_one_ends_the_run_at_once() -> None:
    clock = Clock()
    assert budget(clock, retry_after_max_seconds=30).next_try(refused(429, retry_after=7)) == 7
    failure = refused(429, "Rate limit reached", retry_after=86400)
    assert budget(clock, retry_after_max_seconds=30).next_try(failure) is None
    assert failure.ending == "not retried: the service asked for a wait of 86400 s, more than the 30 s a run waits"


def test_nothing_is_tried_that_the_run_has_no_time_left_for() -> None:
    clock = Clock()
    run = budget(clock, run_seconds=60, retry_after_max_seconds=30)
    clock.now += 50
    failure = refused(429, retry_after=20)
    assert run.next_try(failure) is None
    assert failure.ending == "gave up after 1 try over 0 s: waiting 20 s more would pass the run's 60 s"
    assert run.spent().final and str(run.spent()).startswith("the model did not finish within the run's 60 s")


def test_an_answer_that_broke_off_is_worth_an_immediate_whole_retry() -> None:
    assert budget(Clock()).next_try(ModelFailure("the connection was cut mid-answer", "run")) == 0


def test_a_quota_used_up_is_a_429_that_no_wait_fixes() -> None:
    failure = refused(429, "You exceeded your current quota", code="insufficient_quota", retry_after=1)
    assert failure.retry == "never"


# --- Sentences ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"retry-after": "7"}, 7.0), ({"retry-after": "1.5"}, 1.5), ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
    ({"retry-after": "soon"}, None), ({}, None), ({"retry-after": "nan"}, None),
])
def test_retry_after_is_read_in_seconds_or_milliseconds(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after(headers) == seconds


def test_retry_after_as_an_http_date() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < (retry_after({"retry-after": later}) or 0) <= 30


def test_credentials_are_refused_without_quoting_the_service() -> None:
    failure = refused(401, "Incorrect API key provided: sk-abc***wxyz.")
    assert str(failure) == "the model service refused the app's credentials: 401 Unauthorized"
    assert failure.retry == "never"


def test_other_failures_read_as_one_sentence_without_a_class_path() -> None:
    assert describe(ValueError("bad\nthings happened")) == "the agent failed: bad"
    assert describe(RuntimeError()) == "the agent failed: an unexpected RuntimeError"
    long = sentence(ValueError("word " * 100))
    assert len(long) <= 201 and long.endswith("word…")


# --- The client, against the scripted server ------------------------------------------------------


@pytest.fixture
def server() -> Iterator[ms.ScriptedModelServer]:
    with ms.ScriptedModelServer() as running:
        yield running


def settings_for(base_url: str, **budget_values: str) -> Settings:
    return Settings.from_env({"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": base_url, "OPENAI_MODEL": "gpt-test",
                              "MODEL_FIRST_BYTE_SECONDS": "1", "MODEL_IDLE_SECONDS": "1", **budget_values})


@pytest.fixture
async def agent_on() -> AsyncIterator[object]:
    """Agents on the model the settings select; their SDK clients are closed afterwards."""
    made: list[object] = []

    def make(settings: Settings) -> Agent:
        client = build_chat_client(settings)
        made.append(client)
        return Agent(client=client, name="TravelPlanner", instructions="Plan trips.", tools=travel_tools())
    yield make
    for client in made:
        await client.client.close()  # type: ignore[attr-defined]


async def failure_of(agent: Agent, *, stream: bool = True) -> tuple[ModelFailure, float]:
    started = time.monotonic()
    with pytest.raises(ModelFailure) as raised:
        if stream:
            await agent.run("Plan a day in Tokyo", stream=True).get_final_response()
        else:
            await agent.run("Plan a day in Tokyo")
    return raised.value, time.monotonic() - started


async def test_the_run_budget_bounds_a_model_that_trickles_forever(server: ms.ScriptedModelServer,
                                                                   agent_on: object) -> None:
    server.script(ms.slow_chunks(0.2))  # every gap is under the idle limit, the whole is not
    failure, seconds = await failure_of(agent_on(settings_for(server.base_url, MODEL_RUN_SECONDS="1.5")))
    assert str(failure) == "the model did not finish within the run's 1.5 s"
    assert 1.4 < seconds < 10 and len(server.settle()) == 1


async def test_a_non_streamed_request_is_bounded_by_the_run_budget(server: ms.ScriptedModelServer,
                                                                   agent_on: object) -> None:
    server.script(ms.hang_before_first_byte())
    failure, seconds = await failure_of(agent_on(settings_for(server.base_url, MODEL_RUN_SECONDS="1.5")),
                                        stream=False)
    assert str(failure) == "the model did not finish within the run's 1.5 s"
    assert 1.4 < seconds < 10 and len(server.settle()) == 1


async def test_an_unreachable_service_is_retried_then_named(agent_on: object) -> None:
    failure, seconds = await failure_of(agent_on(settings_for(f"http://127.0.0.1:{free_port()}/v1")))
    assert str(failure).startswith("the model service could not be reached: connection refused; gave up after 3 "
                                   "tries over ")
    assert 0.7 < seconds < 10  # two waits: about 0.5-1 s, then 1-2 s


async def test_the_sdk_retries_nothing_on_its_own(server: ms.ScriptedModelServer, agent_on: object) -> None:
    server.script(ms.http_error(500), repeat=True)
    agent = agent_on(settings_for(server.base_url, MODEL_TRIES="1"))
    failure, _ = await failure_of(agent)
    assert str(failure) == ("the model service failed: 500 Internal Server Error (The server had an error while "
                            "processing your request); gave up after 1 try over 0 s")
    assert len(server.requests) == 1
