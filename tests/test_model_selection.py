"""Model selection, and the real OpenAI / Azure OpenAI clients against a fake OpenAI-compatible server.

The fake server speaks the streaming Chat Completions wire format: SSE `data: {chunk}`
lines whose `choices[0].delta` carries either `tool_calls` fragments or text, then
`data: [DONE]`. Its first answer asks for both tools; once the request carries `role:
tool` messages it streams a short text that quotes them, so a passing test proves the
framework ran the tools and sent their results back.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from agent_framework import Agent
from agent_framework_openai import OpenAIChatCompletionClient
from azure.core.credentials import AccessToken
from openai import AsyncAzureOpenAI

from tools import get_local_events, get_weather_forecast
from travelplanner import agent as agent_module
from travelplanner.agent import AGENT_NAME, INSTRUCTIONS, build_agent, build_chat_client, select_model
from travelplanner.offline_model import OfflineTravelModel
from travelplanner.settings import Settings

FINAL_WORDS = ["Day 1 — ", "Lisbon ", "looks ", "good: "]


@dataclass
class Seen:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeOpenAI:
    url: str
    requests: list[Seen] = field(default_factory=list)


def _chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    payload = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1767225600, "model": "fake",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _tool_call_chunks() -> Iterator[bytes]:
    calls = [("get_weather_forecast", {"destination": "Lisbon", "date": "2026-12-02"}),
             ("get_local_events", {"destination": "Lisbon", "date": "2026-12-02"})]
    yield _chunk({"role": "assistant", "content": None})
    for index, (name, args) in enumerate(calls):
        arguments = json.dumps(args)
        yield _chunk({"tool_calls": [{"index": index, "id": f"call_{index}", "type": "function",
                                      "function": {"name": name, "arguments": ""}}]})
        # Arguments arrive in fragments, as real models send them.
        for start in range(0, len(arguments), 12):
            yield _chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments[start:start + 12]}}]})
    yield _chunk({}, "tool_calls")


def _text_chunks(tool_messages: list[dict[str, Any]]) -> Iterator[bytes]:
    weather = next(m["content"] for m in tool_messages if m["tool_call_id"] == "call_0")
    yield _chunk({"role": "assistant", "content": ""})
    for word in [*FINAL_WORDS, weather]:
        yield _chunk({"content": word})
    yield _chunk({}, "stop")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        parts = urlsplit(self.path)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.fake.requests.append(
            Seen(parts.path, parse_qs(parts.query), {k.lower(): v for k, v in self.headers.items()}, body))
        if not parts.path.endswith("/chat/completions") or not body.get("stream"):
            self.send_error(404 if body.get("stream") else 400)
            return
        tool_messages = [m for m in body["messages"] if m["role"] == "tool"]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for chunk in _text_chunks(tool_messages) if tool_messages else _tool_call_chunks():
            self.wfile.write(chunk)
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenAI


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.fake = FakeOpenAI(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="fake-openai", daemon=True)
    thread.start()
    yield server.fake
    server.shutdown()
    server.server_close()
    thread.join()


def settings(**values: str) -> Settings:
    return Settings.from_env(values)


async def run_and_check_tool_round_trip(agent: Agent, fake: FakeOpenAI) -> list[Seen]:
    stream = agent.run("Plan a day in Lisbon", stream=True)
    texts = [update.text async for update in stream if update.text]
    final = await stream.get_final_response()

    weather = get_weather_forecast("Lisbon", "2026-12-02")
    assert texts == [*FINAL_WORDS, weather]
    assert final.text == "".join(FINAL_WORDS) + weather

    first, second = fake.requests
    assert first.body["messages"][0] == {"role": "system", "content": INSTRUCTIONS}
    offered = {t["function"]["name"] for t in first.body["tools"]}
    assert offered == {"get_weather_forecast", "get_local_events"}
    tool_messages = {m["tool_call_id"]: m["content"] for m in second.body["messages"] if m["role"] == "tool"}
    assert tool_messages == {"call_0": weather, "call_1": get_local_events("Lisbon", "2026-12-02")}
    return [first, second]


# --- Selection -----------------------------------------------------------------------------------


def test_nothing_configured_selects_the_offline_demo_model() -> None:
    choice = select_model(settings())
    assert choice.kind == "offline"
    assert "offline demo model, not AI" in choice.description
    client = build_chat_client(settings(OFFLINE_MODEL_CHUNKS_PER_SECOND="0"))
    assert isinstance(client, OfflineTravelModel) and client.chunks_per_second == 0


def test_openai_key_selects_the_openai_compatible_endpoint() -> None:
    choice = select_model(settings(OPENAI_API_KEY="sk-secret", OPENAI_MODEL="llama3",
                                   OPENAI_BASE_URL="http://user:pw@localhost:11434/v1?sig=abc"))
    assert choice.kind == "openai-compatible" and choice.model == "llama3"
    assert choice.description == "OpenAI-compatible model 'llama3' at http://localhost:11434/v1 (API key)"


def test_azure_wins_over_openai_and_never_logs_the_key() -> None:
    choice = select_model(settings(
        AZURE_OPENAI_ENDPOINT="https://contoso.openai.azure.com/", AZURE_OPENAI_DEPLOYMENT_NAME="gpt-4o",
        AZURE_OPENAI_API_KEY="azure-secret", OPENAI_API_KEY="sk-secret"))
    assert choice.kind == "azure-openai" and choice.model == "gpt-4o"
    assert "secret" not in choice.description
    assert choice.description == "Azure OpenAI deployment 'gpt-4o' at https://contoso.openai.azure.com/ (API key)"


def test_azure_without_a_key_uses_entra_id() -> None:
    base = {"AZURE_OPENAI_ENDPOINT": "https://contoso.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT_NAME": "gpt-4o"}
    assert "DefaultAzureCredential" in select_model(settings(**base)).description
    with_identity = settings(**base, AZURE_CLIENT_ID="1111-2222")
    assert "managed identity 1111-2222" in select_model(with_identity).description
    credential = agent_module._azure_credential(with_identity)
    assert type(credential).__name__ == "DefaultAzureCredential"


def test_azure_needs_both_endpoint_and_deployment() -> None:
    only_endpoint = settings(AZURE_OPENAI_ENDPOINT="https://contoso.openai.azure.com")
    assert select_model(only_endpoint).kind == "offline"


def test_the_agent_is_named_and_has_both_tools() -> None:
    agent = build_agent(settings())
    assert agent.name == AGENT_NAME == "TravelPlanner"
    assert isinstance(agent.client, OfflineTravelModel)
    tools = agent.default_options.get("tools") or []
    assert {t.name for t in tools} == {"get_weather_forecast", "get_local_events"}


# --- The real clients against the fake server ----------------------------------------------------


async def test_openai_compatible_client_streams_after_calling_the_tools(fake_openai: FakeOpenAI) -> None:
    config = settings(OPENAI_API_KEY="sk-test", OPENAI_MODEL="fake-model", OPENAI_BASE_URL=f"{fake_openai.url}/v1")
    agent = build_agent(config)
    assert isinstance(agent.client, OpenAIChatCompletionClient)

    for seen in await run_and_check_tool_round_trip(agent, fake_openai):
        assert seen.path == "/v1/chat/completions"
        assert seen.headers["authorization"] == "Bearer sk-test"
        assert seen.body["model"] == "fake-model" and seen.body["stream"] is True


async def test_azure_openai_client_with_an_api_key(fake_openai: FakeOpenAI) -> None:
    config = settings(AZURE_OPENAI_ENDPOINT=fake_openai.url, AZURE_OPENAI_DEPLOYMENT_NAME="travel-gpt",
                      AZURE_OPENAI_API_KEY="azure-test-key", AZURE_OPENAI_API_VERSION="2024-10-21")
    agent = build_agent(config)
    assert isinstance(agent.client.client, AsyncAzureOpenAI)

    for seen in await run_and_check_tool_round_trip(agent, fake_openai):
        assert seen.path == "/openai/deployments/travel-gpt/chat/completions"
        assert seen.query["api-version"] == ["2024-10-21"]
        assert seen.headers["api-key"] == "azure-test-key"
        assert "authorization" not in seen.headers


class _FixedToken:
    """A TokenCredential that hands out one token, standing in for DefaultAzureCredential."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("entra-token", 4102444800)


async def test_azure_openai_client_with_entra_id(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    credential = _FixedToken()
    monkeypatch.setattr(agent_module, "_azure_credential", lambda _settings: credential)
    config = settings(AZURE_OPENAI_ENDPOINT=fake_openai.url, AZURE_OPENAI_DEPLOYMENT_NAME="travel-gpt")

    for seen in await run_and_check_tool_round_trip(build_agent(config), fake_openai):
        assert seen.path == "/openai/deployments/travel-gpt/chat/completions"
        assert seen.headers["authorization"] == "Bearer entra-token"
        assert "api-key" not in seen.headers
    assert credential.scopes and credential.scopes[0] == ("https://cognitiveservices.azure.com/.default",)


async def test_azure_v1_endpoint_is_used_as_a_base_url(fake_openai: FakeOpenAI) -> None:
    config = settings(AZURE_OPENAI_ENDPOINT=f"{fake_openai.url}/openai/v1/", AZURE_OPENAI_DEPLOYMENT_NAME="travel-gpt",
                      AZURE_OPENAI_API_KEY="azure-test-key")

    for seen in await run_and_check_tool_round_trip(build_agent(config), fake_openai):
        assert seen.path == "/openai/v1/chat/completions"
        assert seen.body["model"] == "travel-gpt"
