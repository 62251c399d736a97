"""function_app.py run as the Functions host runs it (tests/functions_host.py), over a real socket and Redis."""

from __future__ import annotations

import json
import re
import typing
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from agent_framework import AgentResponse
from httpx_sse import aconnect_sse
from starlette.requests import Request

from testing.functions_host import RPC_PREFIX, EntityOperation, FunctionsHost

AGENT = "TravelPlanner"
ENTITY = f"dafx-{AGENT}"
FIRST_MESSAGE = "Plan a 3-day trip to Lisbon"
FOLLOW_UP = "What should I pack?"

HTTP_FUNCTIONS = {
    "run_agent": ("agents/{agent_name}/run", ["POST"]),
    "stream": ("agent/stream/{conversation_id}", ["GET"]),
    "cancel": ("agent/stream/{conversation_id}/cancel", ["POST"]),
    "health": ("health", ["GET", "HEAD"]),
    "page": ("app", ["GET"]),
}


@pytest.fixture
def host(functions_host: FunctionsHost) -> FunctionsHost:
    return functions_host  # one Functions app per process, shared with the contract suite


@pytest.fixture
async def client(host: FunctionsHost) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=host.base_url, timeout=60) as client:
        yield client


async def start_run(client: httpx.AsyncClient, host: FunctionsHost, body: dict[str, str]) -> dict[str, Any]:
    response = await client.post(f"/api/agents/{AGENT}/run", json=body)
    assert response.status_code == 202, (response.text, host.function_errors)
    return dict(response.json())


def dispatch_of(host: FunctionsHost, accepted: dict[str, Any]) -> EntityOperation:
    """The entity signal sent for the run the 202 answer describes."""
    matching = [d for d in host.dispatches_to(accepted["conversation_id"])
                if (d.input or {}).get("correlationId") == accepted["correlation_id"]]
    assert len(matching) == 1, host.dispatches
    return matching[0]


async def answer_text(operation: EntityOperation) -> str:
    """The final answer text the entity returned for the operation."""
    await operation.finished()
    assert operation.failure is None and operation.is_error is False, operation
    assert isinstance(operation.result, dict) and "error" not in operation.result, operation.result
    return AgentResponse.from_dict(operation.result).text


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


def test_the_app_indexes_the_contract_routes_and_the_entity_only(host: FunctionsHost) -> None:
    assert host.app is not None
    functions = {f.get_function_name(): f for f in host.app.functions}
    assert set(functions) == {*HTTP_FUNCTIONS, ENTITY}
    for name, (route, methods) in HTTP_FUNCTIONS.items():
        trigger = functions[name].get_trigger()
        assert (trigger.route, [m.value for m in trigger.methods]) == (route, methods)
        # Our handlers, typed for the HTTP streams extension: not the package's classic built-in routes.
        handler = functions[name].get_user_function()
        assert handler.__module__ == "function_app"
        assert typing.get_type_hints(handler)["req"] is Request
    entity = functions[ENTITY].get_trigger()
    assert (entity.get_binding_name(), entity.entity_name) == ("entityTrigger", ENTITY)


async def test_unknown_routes_get_404_json(client: httpx.AsyncClient) -> None:
    for method, path in (("GET", "/api/nothing"), ("GET", f"/api/agents/{AGENT}/run"), ("GET", "/health")):
        response = await client.request(method, path)
        assert response.status_code == 404, (method, path)
        assert "error" in response.json()


async def test_health_answers_through_the_function(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/health")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "agents": [AGENT], "redis": "ok"}


async def test_the_page_is_served_with_its_policy_and_cannot_be_framed(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/app")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "require-trusted-types-for 'script'" in policy


# --- a run -------------------------------------------------------------------------------------


async def test_a_run_is_accepted_and_signals_the_conversations_entity(
    client: httpx.AsyncClient, host: FunctionsHost
) -> None:
    accepted = await start_run(client, host, {"message": FIRST_MESSAGE})
    cid, run = accepted["conversation_id"], accepted["correlation_id"]
    assert accepted["stream_url"] == f"/api/agent/stream/{cid}?run={run}"

    signal = dispatch_of(host, accepted)
    assert (signal.entity, signal.key, signal.operation) == (ENTITY, cid, "run")
    assert httpx.URL(signal.url).path == f"{RPC_PREFIX}entities/{ENTITY}/{cid}"
    assert isinstance(json.loads(signal.raw_input or "null"), str)  # the input is JSON text inside JSON
    assert signal.input["message"] == FIRST_MESSAGE
    assert signal.input["correlationId"] == run
    assert signal.input["options"]["run_log"] == {"conversation_id": cid, "correlation_id": run}
    await signal.finished()
    assert signal.exists_before is False and signal.failure is None and signal.is_error is False


async def test_the_sse_stream_is_the_entitys_answer_byte_for_byte(
    client: httpx.AsyncClient, host: FunctionsHost
) -> None:
    accepted = await start_run(client, host, {"message": FIRST_MESSAGE})
    kinds, streamed = await read_sse(client, accepted["stream_url"])

    assert kinds[-1] == "done" and set(kinds[:-1]) == {"message"}, kinds
    assert streamed.startswith("# ") and day_headings(streamed) == ["1", "2", "3"], streamed[:500]
    answer = await answer_text(dispatch_of(host, accepted))
    assert len(answer) > 200
    assert streamed == answer


async def test_plain_text_gives_the_same_text_and_a_final_newline(
    client: httpx.AsyncClient, host: FunctionsHost
) -> None:
    accepted = await start_run(client, host, {"message": FIRST_MESSAGE})
    _, streamed = await read_sse(client, accepted["stream_url"])
    plain = await read_plain(client, accepted["stream_url"])

    assert len(streamed) > 200
    assert plain == streamed + "\n"


async def test_a_second_turn_continues_the_conversation_in_its_entity(
    client: httpx.AsyncClient, host: FunctionsHost
) -> None:
    first = await start_run(client, host, {"message": FIRST_MESSAGE})
    cid = first["conversation_id"]
    first_answer = await answer_text(dispatch_of(host, first))
    state_after_first = host.entity_state(ENTITY, cid)

    second = await start_run(client, host, {"message": FOLLOW_UP, "conversation_id": cid})
    assert second["conversation_id"] == cid and second["correlation_id"] != first["correlation_id"]
    signal = dispatch_of(host, second)
    second_answer = await answer_text(signal)

    # The host fed the first turn's state back to the entity.
    assert signal.exists_before is True
    assert json.loads(signal.state_before or "null") == state_after_first
    kinds, streamed = await read_sse(client, second["stream_url"])
    assert kinds[-1] == "done"
    assert len(second_answer) > 50 and streamed == second_answer
    assert first_answer not in streamed and day_headings(streamed) == []
    # The offline model knows the destination only from the conversation so far.
    assert "Lisbon" in streamed and "pack" in streamed.lower()
