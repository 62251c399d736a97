"""A real model's failures, end to end: the hosts with testing/model_server.py as their model.

The standalone host runs as users run it (`python -m travelplanner`, a subprocess) with OPENAI_* or
AZURE_OPENAI_* pointing at the scripted server in this process; the Functions app runs in process
(testing/functions_host.py). Each test scripts its turn's faults by a tag in its message, reads the
run's stream to its terminal event and checks what a reader sees, how many requests reached the model
and how long it took (generous bounds). The server validates every request's history as the real API
does, so a turn that leaves a broken history behind makes the next turn fail here as in production.

Budgets are small so the suite is quick: 1 s to the first chunk, 1 s between chunks, 3 tries, a 2 s
Retry-After cap; a 3 s stall window renews the writer's lease every second, so a cancel reaches a silent
model within about a second.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from testing import model_server as ms
from testing.functions_host import FunctionsHost
from testing.hosts import StandaloneHost
from testing.sse import ReceivedEvent, get_stream, reassemble
from tools import get_local_events, get_weather_forecast

AGENT = "TravelPlanner"
BUDGET = {
    "MODEL_FIRST_BYTE_SECONDS": "1", "MODEL_IDLE_SECONDS": "1", "MODEL_TRIES": "3",
    "MODEL_RETRY_AFTER_MAX_SECONDS": "2", "MODEL_RUN_SECONDS": "20",
    "STREAM_STALL_SECONDS": "3", "REDIS_OUTAGE_SECONDS": "2", "STREAM_START_SECONDS": "60",
    "STREAM_MAX_SECONDS": "60", "STREAM_HEARTBEAT_SECONDS": "0.5",
}
ARGS = {"destination": "Tokyo", "date": "2026-12-02"}
GAVE_UP = r"; gave up after 3 tries over \d+(\.\d)? s"


@pytest.fixture(scope="module")
def model() -> Iterator[ms.ScriptedModelServer]:
    with ms.ScriptedModelServer() as server:
        yield server


def openai_env(model: ms.ScriptedModelServer) -> dict[str, str]:
    return {"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": model.base_url, "OPENAI_MODEL": "gpt-test", **BUDGET}


@pytest.fixture(scope="module")
def host(model: ms.ScriptedModelServer, redis_url: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneHost]:
    log = tmp_path_factory.mktemp("host") / "host.log"
    with StandaloneHost(redis_url, openai_env(model), log_path=log) as running:
        yield running


def answer() -> str:
    """The scripted model's answer once both tools have run, as the user must read it."""
    results = [get_weather_forecast(**ARGS), get_local_events(**ARGS)]
    return ms.Conversation().answer_text(results)


@dataclass
class Turn:
    """One run as a client saw it: started, read to its terminal event."""

    tag: str
    conversation_id: str
    correlation_id: str
    stream_url: str
    started: float

    events: list[ReceivedEvent] | None = None
    seconds: float = 0.0

    @property
    def terminal(self) -> ReceivedEvent:
        assert self.events, "read the turn first"
        return self.events[-1]

    @property
    def text(self) -> str:
        return reassemble(self.events or [])

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events or []]


def new_tag() -> str:
    return f"turn-{uuid.uuid4().hex[:10]}"


async def start(client: httpx.AsyncClient, tag: str, *, conversation_id: str | None = None) -> Turn:
    body: dict[str, Any] = {"message": f"Plan a day in Tokyo ({tag})"}
    if conversation_id:
        body["conversation_id"] = conversation_id
    started = time.monotonic()
    response = await client.post(f"/api/agents/{AGENT}/run", json=body)
    assert response.status_code == 202, response.text
    accepted = response.json()
    return Turn(tag, accepted["conversation_id"], accepted["correlation_id"], accepted["stream_url"], started)


async def read(client: httpx.AsyncClient, turn: Turn, within: float = 60.0) -> Turn:
    """Read the turn's stream to its terminal event (resuming after any early end of a response)."""
    events: list[ReceivedEvent] = []
    until = time.monotonic() + within
    while not (events and events[-1].terminal):
        assert time.monotonic() < until, f"no terminal event in {within} s: {[e.kind for e in events]}"
        response = await get_stream(client, turn.stream_url, last_event_id=events[-1].id if events else None,
                                    within=until - time.monotonic())
        assert response.status == 200, response.body[:300]
        events += response.events
    turn.events, turn.seconds = events, time.monotonic() - turn.started
    return turn


async def run_turn(client: httpx.AsyncClient, model: ms.ScriptedModelServer, *replies: ms.Reply,
                   repeat: bool = False, conversation_id: str | None = None) -> Turn:
    """A turn whose model requests get `replies` (then the default conversation), read to its end."""
    tag = new_tag()
    if replies:
        model.script(*replies, when=tag, repeat=repeat)
    return await read(client, await start(client, tag, conversation_id=conversation_id))


@pytest.fixture
async def client(host: StandaloneHost) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=host.base_url, timeout=30) as http:
        yield http


def requests_of(model: ms.ScriptedModelServer, turn: Turn) -> list[ms.RecordedRequest]:
    return model.settle(turn.tag)


def assert_answered_in_full(turn: Turn, *, reset: bool) -> None:
    assert turn.terminal.kind == "done", turn.events
    assert turn.kinds().count("reset") == (1 if reset else 0), turn.kinds()
    assert turn.text == answer()


# --- The happy path --------------------------------------------------------------------------------


async def test_the_answer_streams_exactly_after_the_tools_ran_with_the_right_arguments(
        client: httpx.AsyncClient, model: ms.ScriptedModelServer) -> None:
    turn = await run_turn(client, model)
    assert_answered_in_full(turn, reset=False)
    first, second = requests_of(model, turn)
    assert first.stream and second.stream  # it streamed: no fallback to a whole answer
    assert turn.kinds()[:4] == ["tool"] * 4 and turn.kinds()[-2:] == ["usage", "done"]  # its calls, its tokens
    assert (first.path, first.headers["authorization"], first.body["model"]) == (
        "/v1/chat/completions", "Bearer test-key", "gpt-test")
    assert first.stream and second.stream
    calls = {c["id"]: (c["function"]["name"], c["function"]["arguments"])
             for m in second.messages for c in m.get("tool_calls") or []}
    assert {name: args for name, args in calls.values()} == {
        "get_weather_forecast": '{"destination": "Tokyo", "date": "2026-12-02"}',
        "get_local_events": '{"destination": "Tokyo", "date": "2026-12-02"}'}
    results = {m["tool_call_id"]: m["content"] for m in second.messages if m["role"] == "tool"}
    assert sorted(results.values()) == sorted([get_weather_forecast(**ARGS), get_local_events(**ARGS)])


async def test_health_says_which_model_without_its_key(client: httpx.AsyncClient,
                                                       model: ms.ScriptedModelServer) -> None:
    health = await client.get("/api/health")
    assert health.json()["model"] == {"kind": "openai-compatible", "host": f"127.0.0.1:{model.port}",
                                      "name": "gpt-test"}
    assert "test-key" not in health.text


# --- One test per fault: the terminal a reader sees, the model requests it took, the time --------


@dataclass(frozen=True)
class Fault:
    replies: tuple[ms.Reply, ...]
    repeat: bool
    terminal: str  # done, or the error's exact text (a regex)
    requests: int
    seconds: tuple[float, float]  # at least, at most
    reset: bool = False  # a `reset` before the complete answer


FAULTS = {
    "rate limited throughout": Fault(
        (ms.rate_limited("1"),), True,
        r"the model service refused the request: 429 Too Many Requests \(Rate limit reached for requests\)"
        + GAVE_UP, 3, (2, 15)),
    "rate limited once": Fault((ms.rate_limited("1"),), False, "done", 3, (1, 15)),
    "Retry-After longer than the cap": Fault(
        (ms.rate_limited("86400"),), False,
        r"the model service refused the request: 429 Too Many Requests \(Rate limit reached for requests\); "
        r"not retried: the service asked for a wait of 86400 s, more than the 2 s a run waits", 1, (0, 10)),
    "server error throughout": Fault(
        (ms.http_error(500),), True,
        r"the model service failed: 500 Internal Server Error \(The server had an error while processing your "
        r"request\)" + GAVE_UP, 3, (0.5, 15)),
    "overloaded once": Fault((ms.http_error(503),), False, "done", 3, (0.4, 15)),
    "unauthorized": Fault((ms.http_error(401),), False,
                          r"the model service refused the app's credentials: 401 Unauthorized; not retried",
                          1, (0, 10)),
    "bad request": Fault((ms.http_error(400),), False,
                         r"the model service refused the request: 400 Bad Request \(Invalid request\); not retried",
                         1, (0, 10)),
    "reset mid-answer": Fault((ms.Reply(), ms.reset_after(12)), False, "done", 4, (0, 15), reset=True),
    "reset throughout": Fault((ms.reset_after(4),), True,
                              r"the model service could not be reached: connection reset" + GAVE_UP, 3, (0.5, 15)),
    "early end mid-answer": Fault((ms.Reply(), ms.end_early_after(12)), False, "done", 4, (0, 15), reset=True),
    "early end in the tool calls": Fault((ms.end_early_after(4),), False, "done", 3, (0, 15)),
    "hang before the first byte": Fault((ms.hang_before_first_byte(),), True,
                                        r"the model did not start answering within 1 s" + GAVE_UP, 3, (3, 20)),
    "stall mid-answer": Fault((ms.Reply(), ms.stall_after(12)), False, "done", 4, (1, 15), reset=True),
    "malformed chunk mid-answer": Fault((ms.Reply(), ms.malformed_chunk_at(8)), False, "done", 4, (0, 15),
                                        reset=True),
    "slow tool calls (each gap under the idle limit)": Fault((ms.slow_chunks(0.2),), False, "done", 2, (2, 20)),
}


@pytest.mark.parametrize("name", list(FAULTS))
async def test_each_fault_ends_as_the_readme_says(client: httpx.AsyncClient, model: ms.ScriptedModelServer,
                                                  name: str) -> None:
    fault = FAULTS[name]
    turn = await run_turn(client, model, *fault.replies, repeat=fault.repeat)
    if fault.terminal == "done":
        assert_answered_in_full(turn, reset=fault.reset)
    else:
        assert turn.terminal.kind == "error", turn.events
        assert re.fullmatch(fault.terminal, turn.terminal.data), turn.terminal.data
    assert len(requests_of(model, turn)) == fault.requests, [(r.stream, r.status, r.outcome)
                                                              for r in requests_of(model, turn)]
    low, high = fault.seconds
    assert low <= turn.seconds < high, turn.seconds


async def test_a_failed_turn_frees_the_conversation_for_its_next_turn(client: httpx.AsyncClient,
                                                                      model: ms.ScriptedModelServer) -> None:
    hung = new_tag()
    model.script(ms.hang_before_first_byte(), when=hung, repeat=True)
    first = await start(client, hung)
    second = await start(client, new_tag(), conversation_id=first.conversation_id)  # queued behind the first
    await read(client, first)
    assert first.terminal.kind == "error" and "did not start answering" in first.terminal.data
    assert_answered_in_full(await read(client, second), reset=False)
    assert [r.status for r in requests_of(model, second)] == [200, 200]


# --- Cancel at any moment: the conversation's next turn still works ----------------------------


async def cancel(client: httpx.AsyncClient, turn: Turn) -> None:
    response = await client.post(f"/api/agent/stream/{turn.conversation_id}/cancel",
                                 params={"run": turn.correlation_id})
    assert response.status_code == 200, response.text


async def wait_for(model: ms.ScriptedModelServer, condition: Any) -> None:
    await asyncio.to_thread(model.wait_until, condition, 20)


@pytest.fixture(scope="module")
def patient_host(model: ms.ScriptedModelServer, redis_url: str,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneHost]:
    """A host that would wait 30 s for a chunk: only the cancel can stop its model sooner."""
    env = {**openai_env(model), "MODEL_FIRST_BYTE_SECONDS": "30", "MODEL_IDLE_SECONDS": "30"}
    with StandaloneHost(redis_url, env, log_path=tmp_path_factory.mktemp("host") / "host.log") as running:
        yield running


@pytest.mark.parametrize("moment", ["before the first byte", "during the tool calls", "during the answer"])
async def test_a_cancel_stops_the_model_and_leaves_a_history_it_accepts(
        patient_host: StandaloneHost, model: ms.ScriptedModelServer, moment: str) -> None:
    async with httpx.AsyncClient(base_url=patient_host.base_url, timeout=30) as client:
        await cancel_then_continue(client, model, moment)


async def cancel_then_continue(client: httpx.AsyncClient, model: ms.ScriptedModelServer, moment: str) -> None:
    tag = new_tag()
    if moment == "before the first byte":
        model.script(ms.hang_before_first_byte(), when=tag)
    elif moment == "during the tool calls":
        model.script(ms.slow_chunks(0.3), when=tag)
    else:
        model.script(ms.Reply(), ms.slow_chunks(0.1), when=tag)
    first = await start(client, tag)
    number = 1 if moment != "during the answer" else 2
    sent = 0 if moment == "before the first byte" else 4

    def reached() -> bool:
        made = [r for r in model.requests if r.mentions(tag)]
        return len(made) >= number and made[number - 1].sent >= sent
    await wait_for(model, reached)
    await cancel(client, first)
    await read(client, first)
    assert first.terminal.kind == "cancelled"
    made = await asyncio.to_thread(model.settle, tag, 10)  # the host hung up on the model, long before 30 s
    assert made[-1].outcome == "client-gone" and made[-1].ended_at is not None

    second = await run_turn(client, model, conversation_id=first.conversation_id)
    assert_answered_in_full(second, reset=False)
    assert [r.status for r in requests_of(model, second)] == [200, 200]  # the model accepted the history
    assert len(model.requests_mentioning(tag)) == number  # and the cancelled turn made no other request


# --- The Azure OpenAI URL shapes through the host -------------------------------------------------


@pytest.mark.parametrize("shape", ["deployments", "v1"])
async def test_azure_openai_answers_exactly_and_fails_readably(model: ms.ScriptedModelServer, redis_url: str,
                                                               tmp_path: Path, shape: str) -> None:
    endpoint = model.azure_endpoint if shape == "deployments" else model.azure_v1_base_url
    env = {"AZURE_OPENAI_ENDPOINT": endpoint, "AZURE_OPENAI_DEPLOYMENT_NAME": "travel-gpt",
           "AZURE_OPENAI_API_KEY": "test-key", "AZURE_OPENAI_API_VERSION": "2024-10-21", **BUDGET}
    with StandaloneHost(redis_url, env, log_path=tmp_path / "host.log") as azure:
        async with httpx.AsyncClient(base_url=azure.base_url, timeout=30) as http:
            health = (await http.get("/api/health")).json()
            assert health["model"] == {"kind": "azure-openai", "host": f"127.0.0.1:{model.port}",
                                       "name": "travel-gpt"}
            turn = await run_turn(http, model)
            assert_answered_in_full(turn, reset=False)
            limited = await run_turn(http, model, ms.rate_limited("1"), repeat=True)
    for seen in requests_of(model, turn):
        if shape == "deployments":
            assert seen.path == "/openai/deployments/travel-gpt/chat/completions"
            assert (seen.query["api-version"], seen.headers["api-key"]) == ("2024-10-21", "test-key")
        else:
            assert (seen.path, seen.body["model"]) == ("/openai/v1/chat/completions", "travel-gpt")
    assert limited.terminal.kind == "error"
    assert re.fullmatch(r"the model service refused the request: 429 Too Many Requests \(Requests to the "
                        r"ChatCompletions_Create Operation under Azure OpenAI API version \S+ have exceeded token "
                        r"rate limit of your current AIServices S0 pricing tier\)" + GAVE_UP, limited.terminal.data)


# --- The Functions app ----------------------------------------------------------------------------


async def test_the_functions_app_streams_the_answer_and_ends_a_refused_run_readably(
        model: ms.ScriptedModelServer, redis_url: str) -> None:
    with FunctionsHost(redis_url, openai_env(model)) as functions:
        async with httpx.AsyncClient(base_url=functions.base_url, timeout=30) as http:
            health = (await http.get("/api/health")).json()
            assert health["model"]["kind"] == "openai-compatible"
            turn = await run_turn(http, model)
            assert_answered_in_full(turn, reset=False)
            refused = await run_turn(http, model, ms.http_error(401), conversation_id=turn.conversation_id)
            again = await run_turn(http, model, conversation_id=turn.conversation_id)
    assert len(requests_of(model, turn)) == 2
    assert refused.terminal.kind == "error"
    assert refused.terminal.data == "the model service refused the app's credentials: 401 Unauthorized; not retried"
    assert len(requests_of(model, refused)) == 1
    assert_answered_in_full(again, reset=False)
