"""The TravelPlanner agent, and which model it runs on.

`select_model` decides from `Settings` alone, in this order:

1. Azure OpenAI when AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_DEPLOYMENT_NAME are set:
   the API key if AZURE_OPENAI_API_KEY is set, else Microsoft Entra ID through
   DefaultAzureCredential (the user-assigned identity AZURE_CLIENT_ID when set).
2. An OpenAI-compatible endpoint when OPENAI_API_KEY is set (OPENAI_BASE_URL, OPENAI_MODEL).
3. Otherwise the offline demo model, which is not AI (see offline_model.py).

Both remote kinds use the Chat Completions client of agent-framework-openai, held to
the run's budget of time and tries (`model_client.BudgetedChatClient`, the MODEL_* settings).
Known limit: that client still falls back to its own environment variables for
anything passed as None (for example AZURE_OPENAI_BASE_URL or OPENAI_ORG_ID);
everything this app configures is passed explicitly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from agent_framework import Agent, SupportsChatGetResponse

from tools import travel_tools
from travelplanner.model_budget import ModelPolicy
from travelplanner.offline_model import OFFLINE_MODEL_NAME, OfflineTravelModel
from travelplanner.settings import Settings

AGENT_NAME = "TravelPlanner"
AZURE_OPENAI_SCOPE = "https://cognitiveservices.azure.com/.default"
AGENT_DESCRIPTION = "Plans personalised day-by-day trips around the weather and local events."

INSTRUCTIONS = """\
You are TravelPlanner, a friendly and practical travel planner.

Write a detailed, personalised, day-by-day itinerary for the trip the user describes.

Before writing:
- Work out the destination, the number of days (default 3) and the travel dates. If the user
  gives no dates, assume the trip starts one week from today. Ask a question only when the
  destination is missing entirely.
- Call get_weather_forecast for every day of the trip (dates as YYYY-MM-DD) and
  get_local_events for every day, and base the plan on what they return.

The itinerary, in markdown:
- A title, then one heading per day in the form "## Day 1 — <weekday and date>: <theme>".
- For each day: the weather (°F and °C) and what it means for the plan; morning, afternoon and
  evening activities with approximate times; where and what to eat; how to get between places
  and how long it takes; and one practical tip.
- Arrange each day around its forecast: indoor sights in the rain, outdoor sights in the cool
  of the morning when it is hot, warm layers when it is cold. Fit the day's events into the
  matching part of the day.
- End with practical tips (transport, bookings, money, safety) and a short packing list
  that follows the forecast.
- Use the user's stated interests, pace, budget and companions when they give them.

For follow-up requests ("make day 2 more relaxed", "what should I pack?"), answer that
request about the trip already planned: rewrite only the affected days or give the short
answer asked for, and call the tools again only when you need fresh weather or events.
Never invent a forecast: use the tools.
"""

ModelKind = Literal["azure-openai", "openai-compatible", "offline"]


@dataclass(frozen=True)
class ModelChoice:
    """Which model the agent runs on. Nothing here contains a key: it is safe to log and to show."""

    kind: ModelKind
    model: str  # the Azure deployment, the OpenAI model name, or the offline model's name
    description: str
    host: str | None = None  # the endpoint's host (and port), for a remote model

    def summary(self) -> dict[str, str | None]:
        """What /api/health reports about the model."""
        return {"kind": self.kind, "host": self.host, "name": self.model}


def _host(url: str) -> str:
    # Only the host and port: a URL can carry credentials ("https://user:secret@host/").
    parts = urlsplit(url)
    return f"{parts.hostname or ''}:{parts.port}" if parts.port else parts.hostname or ""


def _loggable_url(url: str) -> str:
    # A URL can carry credentials or a signed query string.
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, _host(url), parts.path, "", ""))


def select_model(settings: Settings) -> ModelChoice:
    if settings.azure_openai_endpoint and settings.azure_openai_deployment_name:
        if settings.azure_openai_api_key:
            auth = "API key"
        elif settings.azure_client_id:
            auth = f"Microsoft Entra ID, user-assigned managed identity {settings.azure_client_id}"
        else:
            auth = "Microsoft Entra ID, DefaultAzureCredential"
        return ModelChoice(
            "azure-openai",
            settings.azure_openai_deployment_name,
            f"Azure OpenAI deployment '{settings.azure_openai_deployment_name}' at "
            f"{_loggable_url(settings.azure_openai_endpoint)} ({auth})",
            _host(settings.azure_openai_endpoint),
        )
    if settings.openai_api_key:
        base_url = settings.openai_base_url or "https://api.openai.com/v1"
        return ModelChoice(
            "openai-compatible",
            settings.openai_model,
            f"OpenAI-compatible model '{settings.openai_model}' at {_loggable_url(base_url)} (API key)",
            _host(base_url),
        )
    pace = settings.offline_model_chunks_per_second
    pace_text = "full speed" if pace == 0 else f"{pace:g} chunks/s"
    return ModelChoice(
        "offline",
        OFFLINE_MODEL_NAME,
        f"offline demo model, not AI: templated itineraries from the travel tools ({pace_text})",
    )


def _azure_credential(settings: Settings) -> Any:
    # The synchronous credential on purpose: the agent may run on event loops other than the
    # one that built it (the durable worker has its own loop thread), and the async credential's
    # HTTP session is tied to one loop. Tokens are cached, so it blocks only on a refresh.
    from azure.identity import DefaultAzureCredential

    if settings.azure_client_id:
        return DefaultAzureCredential(managed_identity_client_id=settings.azure_client_id)
    return DefaultAzureCredential()


def build_chat_client(settings: Settings, *, credential: Any = None) -> SupportsChatGetResponse[Any]:
    """The chat client `select_model` chose. Building one makes no network call.

    `credential`: the Entra ID token credential for Azure OpenAI without a key (default: DefaultAzureCredential).
    """
    choice = select_model(settings)
    if choice.kind == "offline":
        return OfflineTravelModel(chunks_per_second=settings.offline_model_chunks_per_second)

    from travelplanner.model_client import BudgetedChatClient  # the OpenAI SDK loads only when it is used

    policy = ModelPolicy.from_settings(settings)
    if choice.kind == "openai-compatible":
        return BudgetedChatClient(
            policy=policy,
            model=settings.openai_model,
            api_key=settings.openai_api_key.get_secret_value() if settings.openai_api_key else None,
            base_url=settings.openai_base_url,
        )

    endpoint = settings.azure_openai_endpoint or ""
    key = settings.azure_openai_api_key.get_secret_value() if settings.azure_openai_api_key else None
    if endpoint.rstrip("/").endswith("/openai/v1"):
        # The v1 surface is OpenAI's API: an OpenAI SDK client on it as its base URL. Built here, because
        # agent-framework-openai, given a base_url for Azure, also reads AZURE_OPENAI_ENDPOINT from the
        # environment and refuses to start with both.
        from openai import AsyncOpenAI

        token = key or _bearer_token_provider(credential or _azure_credential(settings))
        return BudgetedChatClient(policy=policy, model=settings.azure_openai_deployment_name,
                                  async_client=AsyncOpenAI(base_url=endpoint, api_key=token))
    auth: dict[str, Any] = {"api_key": key} if key else {"credential": credential or _azure_credential(settings)}
    return BudgetedChatClient(
        policy=policy,
        model=settings.azure_openai_deployment_name,
        api_version=settings.azure_openai_api_version,
        azure_endpoint=endpoint,
        **auth,
    )


def _bearer_token_provider(credential: Any) -> Callable[[], Awaitable[str]]:
    """An Entra ID access token for Azure OpenAI per request, from the (synchronous, caching) credential."""
    from azure.identity import get_bearer_token_provider

    provider = get_bearer_token_provider(credential, AZURE_OPENAI_SCOPE)

    async def token() -> str:
        return await asyncio.to_thread(provider)  # blocks only on a refresh; not on the loop

    return token


def build_agent(settings: Settings, chat_client: SupportsChatGetResponse[Any] | None = None) -> Agent[Any]:
    """The TravelPlanner agent with its tools, on `chat_client` or the model the settings select."""
    return Agent(
        client=chat_client or build_chat_client(settings),
        name=AGENT_NAME,
        description=AGENT_DESCRIPTION,
        instructions=INSTRUCTIONS,
        tools=travel_tools(),
    )


__all__ = [
    "AGENT_NAME",
    "INSTRUCTIONS",
    "ModelChoice",
    "build_agent",
    "build_chat_client",
    "select_model",
]
