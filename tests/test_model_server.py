"""testing/model_server.py against the real openai SDK: the wire format, the validation and every fault.

The end-to-end model tests (test_model_failures.py) trust this server to fail the way the real service
does; these tests show the SDK reads it the way it reads the real one.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncAzureOpenAI, AsyncOpenAI

from testing import model_server as ms

USER = [{"role": "user", "content": "Plan a day in Tokyo"}]
ARGS = {"destination": "Tokyo", "date": "2026-12-02"}
Sdk = Callable[..., AsyncOpenAI]


@pytest.fixture
def server() -> Iterator[ms.ScriptedModelServer]:
    with ms.ScriptedModelServer() as running:
        yield running


@pytest.fixture
async def keep() -> AsyncIterator[Callable[[Any], Any]]:
    """Closes the SDK clients a test made (an unclosed client leaks its sockets)."""
    made: list[Any] = []

    def remember(client: Any) -> Any:
        made.append(client)
        return client
    yield remember
    for client in made:
        await client.close()


@pytest.fixture
def sdk(server: ms.ScriptedModelServer, keep: Callable[[Any], Any]) -> Sdk:
    """AsyncOpenAI on the server's OpenAI path, without the SDK's retries unless asked for."""
    def make(**kwargs: Any) -> AsyncOpenAI:
        return keep(AsyncOpenAI(base_url=server.base_url, api_key="test-key", **{"max_retries": 0, **kwargs}))
    return make


def answered(call_ids: tuple[str, str] = ("call_1_weather", "call_1_events")) -> list[dict[str, Any]]:
    """A history in which the default tool calls were made and answered."""
    calls = [{"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(ARGS)}}
             for i, n in zip(call_ids, ["get_weather_forecast", "get_local_events"], strict=True)]
    return [*USER, {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": call_ids[0], "content": "Sunny, 20°C"},
            {"role": "tool", "tool_call_id": call_ids[1], "content": "Festival at 東京 tower 🎆"}]


async def collect(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]


# --- The wire format ------------------------------------------------------------------------------


async def test_tool_calls_stream_in_fragments_then_finish_and_usage(server: ms.ScriptedModelServer,
                                                                    sdk: Sdk) -> None:
    chunks = await collect(await sdk().chat.completions.create(
        model="gpt-test", messages=USER, stream=True, stream_options={"include_usage": True}))
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += call.id or ""
            entry["name"] += call.function.name or ""
            entry["arguments"] += call.function.arguments or ""
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("call_1_weather", "get_weather_forecast", ARGS), ("call_1_events", "get_local_events", ARGS)]
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.tool_calls) > 6  # arguments in pieces
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    (seen,) = server.requests
    assert (seen.api, seen.path, seen.headers["authorization"], seen.outcome) == (
        "openai", "/v1/chat/completions", "Bearer test-key", "done")


async def test_unicode_text_is_exact_though_written_cut_inside_characters(server: ms.ScriptedModelServer,
                                                                         sdk: Sdk) -> None:
    chunks = await collect(await sdk().chat.completions.create(model="m", messages=answered(), stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == server.conversation.answer_text(["Sunny, 20°C", "Festival at 東京 tower 🎆"])
    assert {"é", "東", "京", "🍙", "\n"} <= set(text) and "👨\u200d👩\u200d👧" in text
    assert len(chunks) > 40  # small deltas, not one block
    assert server.split_writes >= 10  # multi-byte characters were written in two pieces
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_a_non_streamed_request_gets_the_same_turn_whole(sdk: Sdk) -> None:
    completion = await sdk().chat.completions.create(model="m", messages=USER)
    calls = completion.choices[0].message.tool_calls or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("call_1_weather", "get_weather_forecast", ARGS), ("call_1_events", "get_local_events", ARGS)]
    assert completion.choices[0].finish_reason == "tool_calls"


async def test_the_azure_deployment_path_takes_an_api_key_or_an_entra_token(
        server: ms.ScriptedModelServer, keep: Callable[[Any], Any]) -> None:
    def azure(**auth: Any) -> AsyncAzureOpenAI:
        return keep(AsyncAzureOpenAI(azure_endpoint=server.azure_endpoint, api_version="2024-10-21", max_retries=0,
                                     **auth))
    chunks = await collect(await azure(api_key="test-key").chat.completions.create(
        model="travel-gpt", messages=answered(), stream=True))
    assert chunks[0].choices == []  # Azure's prompt-filter event comes first
    assert "東京" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    await collect(await azure(azure_ad_token_provider=lambda: "entra-token").chat.completions.create(
        model="travel-gpt", messages=USER, stream=True))
    with pytest.raises(openai.AuthenticationError) as refused:
        await azure(azure_ad_token_provider=lambda: "expired").chat.completions.create(
            model="travel-gpt", messages=USER, stream=True)
    assert "Access denied" in refused.value.message
    keyed, entra, expired = server.requests
    assert (keyed.api, keyed.path, keyed.query["api-version"], keyed.headers["api-key"]) == (
        "azure", "/openai/deployments/travel-gpt/chat/completions", "2024-10-21", "test-key")
    assert entra.headers["authorization"] == "Bearer entra-token"
    assert expired.outcome == "refused"


async def test_the_azure_v1_path_takes_the_key_as_a_bearer(server: ms.ScriptedModelServer,
                                                           keep: Callable[[Any], Any]) -> None:
    client = keep(AsyncOpenAI(base_url=server.azure_v1_base_url, api_key="test-key", max_retries=0))
    await collect(await client.chat.completions.create(model="travel-gpt", messages=USER, stream=True))
    assert (server.requests[0].api, server.requests[0].path) == ("azure-v1", "/openai/v1/chat/completions")


async def test_a_missing_api_version_or_unknown_deployment_is_404() -> None:
    with ms.ScriptedModelServer(deployments=["travel-gpt"]) as server:
        async with httpx.AsyncClient() as client:
            url = f"{server.root}/openai/deployments/%s/chat/completions"
            no_version = await client.post(url % "travel-gpt", headers={"api-key": "test-key"}, json={})
            unknown = await client.post(url % "other", params={"api-version": "2024-10-21"},
                                        headers={"api-key": "test-key"}, json={"messages": USER})
    assert no_version.status_code == 404
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "DeploymentNotFound"


# --- Validation: history bugs are 400s in the real error shape ------------------------------------


async def test_an_unanswered_tool_call_is_refused_like_the_real_api(server: ms.ScriptedModelServer,
                                                                    sdk: Sdk) -> None:
    history = [*answered()[:-1], {"role": "user", "content": "and day 2?"}]  # call_1_events never answered
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk().chat.completions.create(model="m", messages=history, stream=True)
    assert refused.value.body == {
        "message": "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                   "'tool_call_id'. The following tool_call_ids did not have response messages: call_1_events",
        "type": "invalid_request_error", "param": "messages.[1].role", "code": None}
    assert server.requests[0].outcome == "refused"


@pytest.mark.parametrize(("messages", "fragment"), [
    ([{"role": "tool", "tool_call_id": "x", "content": "?"}], "must be a response to a preceeding message"),
    ([*USER, {"role": "robot", "content": "?"}], "'robot' is not one of"),
    ([], "too short"),
    (answered()[:2], "did not have response messages: call_1_weather, call_1_events"),
])
def test_validation_refuses_what_the_real_api_refuses(messages: list[dict[str, Any]], fragment: str) -> None:
    problem = ms.validate_request({"model": "m", "messages": messages})
    assert problem is not None and fragment in problem[0]
    assert ms.validate_request({"model": "m", "messages": answered()}) is None


# --- Scripts --------------------------------------------------------------------------------------


async def test_a_script_for_a_tag_leaves_other_requests_alone(server: ms.ScriptedModelServer, sdk: Sdk) -> None:
    server.script(ms.http_error(503), when="tag-1", repeat=True)
    other = await sdk().chat.completions.create(model="m", messages=USER)
    assert other.choices[0].finish_reason == "tool_calls"
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            await sdk().chat.completions.create(model="m", messages=[{"role": "user", "content": "go tag-1"}])
    assert [r.status for r in server.requests] == [200, 503, 503]
    assert [r.number for r in server.requests_mentioning("tag-1")] == [2, 3]


async def test_a_scripted_callable_sees_the_request(sdk: Sdk, server: ms.ScriptedModelServer) -> None:
    server.script(lambda seen: ms.Reply(turn=ms.text_turn([f"{len(seen.messages)} messages"])))
    chunks = await collect(await sdk().chat.completions.create(model="m", messages=USER, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "1 messages"


# --- Faults, as the SDK sees them -----------------------------------------------------------------


async def test_429_carries_retry_after_and_the_real_body(server: ms.ScriptedModelServer, sdk: Sdk) -> None:
    server.script(ms.rate_limited("7", retry_after_ms="6500"))
    with pytest.raises(openai.RateLimitError) as refused:
        await sdk().chat.completions.create(model="m", messages=USER, stream=True)
    headers = refused.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("7", "6500")
    assert refused.value.code == "rate_limit_exceeded"


@pytest.mark.parametrize(("status", "error"), [
    (500, openai.InternalServerError), (503, openai.InternalServerError), (401, openai.AuthenticationError),
    (400, openai.BadRequestError)])
async def test_status_errors(server: ms.ScriptedModelServer, sdk: Sdk, status: int, error: type[Exception]) -> None:
    server.script(ms.http_error(status))
    with pytest.raises(error) as raised:
        await sdk().chat.completions.create(model="m", messages=USER, stream=True)
    assert isinstance(raised.value, openai.APIStatusError) and raised.value.status_code == status


async def test_a_reset_mid_stream_is_a_connection_error_after_partial_chunks(server: ms.ScriptedModelServer,
                                                                            sdk: Sdk) -> None:
    server.script(ms.reset_after(3))
    got: list[Any] = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in await sdk().chat.completions.create(model="m", messages=USER, stream=True):
            got.append(chunk)
    assert len(got) == 3 and server.settle()[0].outcome == "reset"


async def test_a_clean_early_end_looks_like_success_to_the_sdk(sdk: Sdk, server: ms.ScriptedModelServer) -> None:
    server.script(ms.end_early_after(4))
    chunks = await collect(await sdk().chat.completions.create(model="m", messages=USER, stream=True))
    assert len(chunks) == 4 and all(c.choices[0].finish_reason is None for c in chunks)


async def test_a_hang_before_the_first_byte_ends_when_the_client_gives_up(server: ms.ScriptedModelServer,
                                                                         sdk: Sdk) -> None:
    server.script(ms.hang_before_first_byte())
    with pytest.raises(openai.APITimeoutError):
        await sdk(timeout=0.3).chat.completions.create(model="m", messages=USER, stream=True)
    (seen,) = server.settle()
    assert seen.status is None and seen.outcome == "client-gone"


async def test_a_stall_mid_stream_sends_some_chunks_then_nothing(sdk: Sdk, server: ms.ScriptedModelServer) -> None:
    server.script(ms.stall_after(3))
    got: list[Any] = []
    with pytest.raises(openai.APITimeoutError):
        async for chunk in await sdk(timeout=0.3).chat.completions.create(model="m", messages=USER, stream=True):
            got.append(chunk)
    assert len(got) == 3 and server.settle()[0].outcome == "stalled"


async def test_a_malformed_chunk_surfaces_as_a_json_error(sdk: Sdk, server: ms.ScriptedModelServer) -> None:
    server.script(ms.malformed_chunk_at(2))
    with pytest.raises(json.JSONDecodeError):
        await collect(await sdk().chat.completions.create(model="m", messages=USER, stream=True))


@pytest.mark.parametrize("fault", [ms.end_early_after(1), ms.malformed_chunk_at(0)])
async def test_a_broken_non_streamed_body_is_not_json(sdk: Sdk, server: ms.ScriptedModelServer,
                                                      fault: ms.Reply) -> None:
    server.script(fault)
    with pytest.raises(json.JSONDecodeError):
        await sdk().chat.completions.create(model="m", messages=USER)


async def test_slow_chunks_are_paced(sdk: Sdk, server: ms.ScriptedModelServer) -> None:
    server.script(ms.slow_chunks(0.05))
    started = time.monotonic()
    chunks = await collect(await sdk(timeout=5).chat.completions.create(model="m", messages=USER, stream=True))
    assert time.monotonic() - started >= 0.05 * (len(chunks) - 2)
