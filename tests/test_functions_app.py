"""function_app.py as Azure Functions runs it: under the real Python worker, else the in-process double.

Each test runs against `functions-worker` (the deployment package under azure-functions-runtime behind the
host stand-in, testing/functions_worker) and `functions` (testing/functions_host.py, in process). The double
runs only where the real worker cannot: on a machine without Python 3.13 (CI has it, so there the double is
not run); see tests/conftest.py. What each host saw of the durable entity (the signal, its input, the state
fed back) is read through `Dispatch`, the same for both.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from agent_framework import AgentResponse
from conftest import FUNCTIONS_HOSTS
from httpx_sse import aconnect_sse

from testing import ROOT

AGENT = "TravelPlanner"
ENTITY = f"dafx-{AGENT}"
FIRST_MESSAGE = "Plan a 3-day trip to Lisbon"
FOLLOW_UP = "What should I pack?"


def http_function(route: str, methods: list[str], auth: str, *, durable_client: bool = False
                  ) -> list[dict[str, Any]]:
    trigger = {"direction": "IN", "type": "httpTrigger", "name": "req", "methods": methods, "authLevel": auth,
               "route": route}
    client = [{"direction": "IN", "type": "durableClient", "name": "client"}] if durable_client else []
    return [*client, trigger, {"direction": "OUT", "type": "http", "name": "$return"}]


# The function metadata the worker reports to the host at indexing: names, triggers, routes, methods,
# auth levels and every binding.
FUNCTIONS = {
    "run_agent": http_function("agents/{agent_name}/run", ["POST"], "FUNCTION", durable_client=True),
    "stream": http_function("agent/stream/{conversation_id}", ["GET"], "FUNCTION"),
    "cancel": http_function("agent/stream/{conversation_id}/cancel", ["POST"], "FUNCTION"),
    "health": http_function("health", ["GET", "HEAD"], "ANONYMOUS"),
    "page": http_function("app", ["GET"], "ANONYMOUS"),
    ENTITY: [{"direction": "IN", "type": "entityTrigger", "name": "context", "entityName": ENTITY}],
}


@pytest.fixture(params=FUNCTIONS_HOSTS)
def host(request: pytest.FixtureRequest) -> Any:
    """The app under each Functions host (one of each per session, shared with the contract suite)."""
    return request.getfixturevalue("functions_worker" if request.param == "functions-worker" else "functions_host")


@pytest.fixture
async def client(host: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=host.base_url, timeout=60) as client:
        yield client


def is_worker(host: Any) -> bool:
    return hasattr(host, "signals")


@dataclass(frozen=True)
class Dispatch:
    """An entity signal as the host's Durable extension received it, and what became of it."""

    entity: str
    key: str
    operation: str
    url: str
    raw_input: str | None  # the request body: the operation's input
    exists_before: bool | None  # what the entity's batch was given
    state_before: str | None
    result: Any  # the operation's result, decoded
    is_error: bool | None
    failure: str | None  # the whole batch failed
    state_after: Any  # the entity's state once it ran

    @property
    def input(self) -> Any:
        return None if self.raw_input is None else json.loads(json.loads(self.raw_input))

    @property
    def answer(self) -> str:
        """The final answer text the entity returned."""
        assert self.failure is None and self.is_error is False, self
        assert isinstance(self.result, dict) and "error" not in self.result, self.result
        return AgentResponse.from_dict(self.result).text


def _run_of(signal_input: str | None, accepted: dict[str, Any]) -> bool:
    decoded = json.loads(json.loads(signal_input)) if signal_input else {}
    return decoded.get("correlationId") == accepted["correlation_id"]


async def dispatch_of(host: Any, accepted: dict[str, Any]) -> Dispatch:
    """The entity signal sent for the run the 202 answer describes, once the entity has run it."""
    key = accepted["conversation_id"]
    if is_worker(host):
        seen = await asyncio.to_thread(host.signals, key, wait_seconds=60)
        matching = [s for s in seen["signals"] if _run_of(s["raw_input"], accepted)]
        assert len(matching) == 1, seen
        s = matching[0]
        return Dispatch(s["entity"], s["key"], s["operation"], s["url"], s["raw_input"], s["exists_before"],
                        s["state_before"], s["result"], s["is_error"], s["failure"], seen["states"].get(key))
    matching = [d for d in host.dispatches_to(key) if _run_of(d.raw_input, accepted)]
    assert len(matching) == 1, host.dispatches
    d = await matching[0].finished()
    return Dispatch(d.entity, d.key, d.operation, d.url, d.raw_input, d.exists_before, d.state_before, d.result,
                    d.is_error, d.failure, host.entity_state(ENTITY, key))


def indexed_bindings(host: Any) -> dict[str, list[dict[str, Any]]]:
    """Each function's bindings as the host was told them at indexing."""
    if is_worker(host):
        return {f["name"]: f["bindings"] for f in host.functions()}
    return {f.get_function_name(): json.loads(f.get_function_json())["bindings"] for f in host.app.functions}


async def start_run(client: httpx.AsyncClient, body: dict[str, str]) -> dict[str, Any]:
    response = await client.post(f"/api/agents/{AGENT}/run", json=body)
    assert response.status_code == 202, response.text
    return dict(response.json())


async def read_sse(client: httpx.AsyncClient, url: str) -> tuple[list[str], str]:
    """The event types of a run's SSE stream (up to `done`) and the text of its message events."""
    kinds, text = [], ""
    async with aconnect_sse(client, "GET", url) as source:
        assert source.response.status_code == 200, await source.response.aread()
        assert source.response.headers["content-type"].startswith("text/event-stream")
        async for event in source.aiter_sse():
            if event.retry is not None and not event.data:
                continue  # the opening "retry:" frame
            kinds.append(event.event)
            if event.event == "message":
                text += event.data
            if event.event in ("done", "error", "cancelled"):
                break
    return kinds, text


async def read_plain(client: httpx.AsyncClient, url: str) -> str:
    body = b""
    async with client.stream("GET", url, headers={"Accept": "text/plain"}) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/plain")
        async for chunk in response.aiter_bytes():
            body += chunk
    return body.decode("utf-8")


def day_headings(markdown: str) -> list[str]:
    return re.findall(r"^## Day (\d+)\b", markdown, flags=re.MULTILINE)


# --- indexing ----------------------------------------------------------------------------------


def test_the_app_indexes_the_contract_routes_and_the_entity_only(host: Any) -> None:
    assert indexed_bindings(host) == FUNCTIONS


def test_the_worker_is_the_pinned_runtime_on_python_313_with_http_streams(functions_worker: Any) -> None:
    status = functions_worker.status()
    pinned = re.search(r"^azure-functions-runtime==(\S+);", (ROOT / "requirements.txt").read_text(), re.M)
    assert pinned is not None
    assert status["worker"] == {"runtime_name": "python", "runtime_version": "3.13", "worker_version": pinned[1]}
    # The worker serves HTTP itself (the HTTP streams extension), so responses are streamed, not buffered.
    assert status["capabilities"]["HttpUri"].startswith("http://127.0.0.1:")


def test_the_double_loads_our_handlers_typed_for_http_streams(functions_host: Any) -> None:
    """In process only: the handlers are ours, typed with the extension's Request (the worker proves the
    same by loading and serving them)."""
    import typing

    from starlette.requests import Request

    for function in functions_host.app.functions:
        if function.get_function_name() != ENTITY:
            handler = function.get_user_function()
            assert handler.__module__ == "function_app"
            assert typing.get_type_hints(handler)["req"] is Request


async def test_unknown_routes_get_404(client: httpx.AsyncClient) -> None:
    for method, path in (("GET", "/api/nothing"), ("GET", f"/api/agents/{AGENT}/run"), ("GET", "/health")):
        response = await client.request(method, path)
        assert response.status_code == 404, (method, path)


async def test_health_answers_through_the_function(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/health")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "agents": [AGENT], "redis": "ok",
                               "model": {"kind": "offline", "host": None, "name": "offline-demo"}}


async def test_the_page_is_served_with_its_policy_and_cannot_be_framed(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/app")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "require-trusted-types-for 'script'" in policy


# --- a run -------------------------------------------------------------------------------------


async def test_a_run_is_accepted_and_signals_the_conversations_entity(client: httpx.AsyncClient, host: Any) -> None:
    accepted = await start_run(client, {"message": FIRST_MESSAGE})
    cid, run = accepted["conversation_id"], accepted["correlation_id"]
    assert accepted["stream_url"] == f"/api/agent/stream/{cid}?run={run}"

    signal = await dispatch_of(host, accepted)
    assert (signal.entity, signal.key, signal.operation) == (ENTITY, cid, "run")
    assert httpx.URL(signal.url).path.endswith(f"/entities/{ENTITY}/{cid}")
    assert isinstance(json.loads(signal.raw_input or "null"), str)  # the input is JSON text inside JSON
    assert signal.input["message"] == FIRST_MESSAGE
    assert signal.input["correlationId"] == run
    assert signal.input["options"]["run_log"] == {"conversation_id": cid, "correlation_id": run}
    assert signal.exists_before is False and signal.failure is None and signal.is_error is False


async def test_the_sse_stream_is_the_entitys_answer_byte_for_byte(client: httpx.AsyncClient, host: Any) -> None:
    accepted = await start_run(client, {"message": FIRST_MESSAGE})
    kinds, streamed = await read_sse(client, accepted["stream_url"])

    assert kinds[-1] == "done" and set(kinds[:-1]) == {"tool", "message"}, kinds
    assert streamed.startswith("# ") and day_headings(streamed) == ["1", "2", "3"], streamed[:500]
    answer = (await dispatch_of(host, accepted)).answer
    assert len(answer) > 200
    assert streamed == answer


async def test_plain_text_gives_the_same_text_and_a_final_newline(client: httpx.AsyncClient) -> None:
    accepted = await start_run(client, {"message": FIRST_MESSAGE})
    _, streamed = await read_sse(client, accepted["stream_url"])
    plain = await read_plain(client, accepted["stream_url"])

    assert len(streamed) > 200
    assert plain == streamed + "\n"


async def test_a_second_turn_continues_the_conversation_in_its_entity(client: httpx.AsyncClient, host: Any) -> None:
    first = await start_run(client, {"message": FIRST_MESSAGE})
    cid = first["conversation_id"]
    first_signal = await dispatch_of(host, first)
    first_answer = first_signal.answer

    second = await start_run(client, {"message": FOLLOW_UP, "conversation_id": cid})
    assert second["conversation_id"] == cid and second["correlation_id"] != first["correlation_id"]
    signal = await dispatch_of(host, second)
    second_answer = signal.answer

    # The host fed the first turn's state back to the entity.
    assert signal.exists_before is True
    assert json.loads(signal.state_before or "null") == first_signal.state_after
    kinds, streamed = await read_sse(client, second["stream_url"])
    assert kinds[-1] == "done"
    assert len(second_answer) > 50 and streamed == second_answer
    assert first_answer not in streamed and day_headings(streamed) == []
    # The offline model knows the destination only from the conversation so far.
    assert "Lisbon" in streamed and "pack" in streamed.lower()
