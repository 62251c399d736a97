"""Model selection, and the real OpenAI / Azure OpenAI clients against the scripted model server.

The server (testing/model_server.py) speaks the streaming Chat Completions wire format on each URL shape
the app uses. Its first answer asks for both tools; once the request carries the tools' results it
streams an answer that quotes them, so a passing test proves the framework ran the tools and sent their
results back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from agent_framework import Agent
from agent_framework_openai import OpenAIChatCompletionClient
from azure.core.credentials import AccessToken
from openai import AsyncAzureOpenAI

from testing import model_server as ms
from tools import get_local_events, get_weather_forecast
from travelplanner import agent as agent_module
from travelplanner.agent import AGENT_NAME, INSTRUCTIONS, build_agent, build_chat_client, select_model
from travelplanner.offline_model import OfflineTravelModel
from travelplanner.settings import Settings

ARGS = {"destination": "Tokyo", "date": "2026-12-02"}


@pytest.fixture
def server() -> Iterator[ms.ScriptedModelServer]:
    with ms.ScriptedModelServer() as running:
        yield running


def settings(**values: str) -> Settings:
    return Settings.from_env(values)


def deployed(monkeypatch: pytest.MonkeyPatch, **values: str) -> Settings:
    """Settings as a host reads them: from its environment, which agent-framework-openai reads too."""
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env(values)


async def run_and_check_tool_round_trip(agent: Agent, server: ms.ScriptedModelServer) -> list[ms.RecordedRequest]:
    try:
        stream = agent.run("Plan a day in Tokyo", stream=True)
        texts = [update.text async for update in stream if update.text]
        final = await stream.get_final_response()
    finally:
        await agent.client.client.close()  # type: ignore[attr-defined]

    weather, events = get_weather_forecast(**ARGS), get_local_events(**ARGS)
    assert "".join(texts) == final.text == server.conversation.answer_text([weather, events])
    assert len(texts) > 20  # streamed in small deltas

    first, second = server.requests
    assert first.body["messages"][0] == {"role": "system", "content": INSTRUCTIONS}
    assert {t["function"]["name"] for t in first.body["tools"]} == {"get_weather_forecast", "get_local_events"}
    tool_messages = {m["tool_call_id"]: m["content"] for m in second.messages if m["role"] == "tool"}
    assert tool_messages == {"call_1_weather": weather, "call_1_events": events}
    assert first.stream and second.stream
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


def test_the_health_summary_names_kind_host_and_model_never_a_key() -> None:
    azure = select_model(settings(AZURE_OPENAI_ENDPOINT="https://contoso.openai.azure.com/openai/v1/",
                                  AZURE_OPENAI_DEPLOYMENT_NAME="gpt-4o", AZURE_OPENAI_API_KEY="azure-secret"))
    assert azure.summary() == {"kind": "azure-openai", "host": "contoso.openai.azure.com", "name": "gpt-4o"}
    compatible = select_model(settings(OPENAI_API_KEY="sk-secret", OPENAI_MODEL="llama3",
                                       OPENAI_BASE_URL="http://user:pw@localhost:11434/v1?sig=abc"))
    assert compatible.summary() == {"kind": "openai-compatible", "host": "localhost:11434", "name": "llama3"}
    assert select_model(settings()).summary() == {"kind": "offline", "host": None, "name": "offline-demo"}


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


# --- The real clients against the scripted server ------------------------------------------------


async def test_openai_compatible_client_streams_after_calling_the_tools(server: ms.ScriptedModelServer) -> None:
    config = settings(OPENAI_API_KEY="test-key", OPENAI_MODEL="fake-model", OPENAI_BASE_URL=server.base_url)
    agent = build_agent(config)
    assert isinstance(agent.client, OpenAIChatCompletionClient)

    for seen in await run_and_check_tool_round_trip(agent, server):
        assert seen.path == "/v1/chat/completions"
        assert seen.headers["authorization"] == "Bearer test-key"
        assert seen.body["model"] == "fake-model"


async def test_azure_openai_client_with_an_api_key(server: ms.ScriptedModelServer) -> None:
    config = settings(AZURE_OPENAI_ENDPOINT=server.azure_endpoint, AZURE_OPENAI_DEPLOYMENT_NAME="travel-gpt",
                      AZURE_OPENAI_API_KEY="test-key", AZURE_OPENAI_API_VERSION="2024-10-21")
    agent = build_agent(config)
    assert isinstance(agent.client.client, AsyncAzureOpenAI)

    for seen in await run_and_check_tool_round_trip(agent, server):
        assert seen.path == "/openai/deployments/travel-gpt/chat/completions"
        assert seen.query["api-version"] == "2024-10-21"
        assert seen.headers["api-key"] == "test-key"
        assert "authorization" not in seen.headers


class _FixedToken:
    """A TokenCredential that hands out the server's Entra ID token, standing in for DefaultAzureCredential."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("entra-token", 4102444800)


@pytest.mark.parametrize("shape", ["deployments", "v1"])
async def test_azure_openai_client_with_entra_id(server: ms.ScriptedModelServer, shape: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    credential = _FixedToken()
    endpoint = server.azure_endpoint if shape == "deployments" else server.azure_v1_base_url
    config = deployed(monkeypatch, AZURE_OPENAI_ENDPOINT=endpoint, AZURE_OPENAI_DEPLOYMENT_NAME="travel-gpt")
    agent = build_agent(config, build_chat_client(config, credential=credential))

    for seen in await run_and_check_tool_round_trip(agent, server):
        assert seen.api == ("azure" if shape == "deployments" else "azure-v1")
        assert seen.headers["authorization"] == "Bearer entra-token"
        assert "api-key" not in seen.headers
    assert credential.scopes and credential.scopes[0] == ("https://cognitiveservices.azure.com/.default",)


async def test_azure_v1_endpoint_is_used_as_a_base_url(server: ms.ScriptedModelServer,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    config = deployed(monkeypatch, AZURE_OPENAI_ENDPOINT=server.azure_v1_base_url,
                      AZURE_OPENAI_DEPLOYMENT_NAME="travel-gpt", AZURE_OPENAI_API_KEY="test-key")

    for seen in await run_and_check_tool_round_trip(build_agent(config), server):
        assert seen.path == "/openai/v1/chat/completions"
        assert seen.body["model"] == "travel-gpt"
