"""Every environment variable the app reads, with its default, in one place.

Nothing else in the project reads the environment for configuration: hosts,
the agent and the run log take a `Settings` object. `SETTINGS` is also what
the infrastructure test compares with the Bicep app settings, so the two
cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None  # None: optional, unset means "not configured"
    help: str


SETTINGS: tuple[Setting, ...] = (
    # Redis: the run log.
    Setting("REDIS_CONNECTION_STRING", None,
            "redis:// or rediss:// URL. Unset: the standalone host starts an embedded redis-server."),
    Setting("REDIS_AUTH", "url",
            "'url' (credentials in the connection string) or 'entra' (Microsoft Entra ID through redis-entraid)."),
    Setting("REDIS_STREAM_TTL_MINUTES", "10", "Sliding expiry of a conversation's stream after its last write."),
    Setting("REDIS_STREAM_MAXLEN", "20000", "Approximate cap on entries kept per conversation stream."),
    Setting("REDIS_WRITE_COALESCE_MS", "0",
            "Extra time a writer waits to batch chunks of one run into one round trip (0: no wait)."),
    Setting("REDIS_WRITE_BUFFER_CHUNKS", "20000", "Chunks a writer holds while Redis is unreachable."),
    Setting("REDIS_OUTAGE_SECONDS", "20",
            "How long a writer retries an unreachable Redis before it gives the run up as interrupted."),
    # The stream endpoint.
    Setting("STREAM_MAX_SECONDS", "120", "A stream response ends after this long; the client resumes."),
    Setting("STREAM_HEARTBEAT_SECONDS", "15", "Idle time after which an SSE comment keeps the connection open."),
    Setting("STREAM_STALL_SECONDS", "60",
            "A run whose worker shows no sign of life for this long is ended with a 'stalled' error."),
    Setting("STREAM_START_SECONDS", "600",
            "A run no worker has begun this long after it was accepted is ended with a 'not started' error."),
    Setting("STREAM_RETRY_MS", "1000", "The SSE 'retry:' reconnection delay suggested to clients."),
    # The model.
    Setting("AZURE_OPENAI_ENDPOINT", None, "Azure OpenAI endpoint; with the deployment name, selects Azure OpenAI."),
    Setting("AZURE_OPENAI_DEPLOYMENT_NAME", None, "Azure OpenAI chat deployment."),
    Setting("AZURE_OPENAI_API_KEY", None, "Azure OpenAI key; unset: Microsoft Entra ID (DefaultAzureCredential)."),
    Setting("AZURE_OPENAI_API_VERSION", None, "Azure OpenAI API version; unset: the client library's default."),
    Setting("AZURE_CLIENT_ID", None, "Client id of a user-assigned managed identity for Entra ID sign-in."),
    Setting("OPENAI_API_KEY", None, "Key for an OpenAI-compatible endpoint; selects it when Azure is not set."),
    Setting("OPENAI_BASE_URL", None, "Base URL of the OpenAI-compatible endpoint; unset: api.openai.com."),
    Setting("OPENAI_MODEL", "gpt-4o-mini", "Model name for the OpenAI-compatible endpoint."),
    Setting("OFFLINE_MODEL_CHUNKS_PER_SECOND", "40", "Pace of the offline demo model; 0 streams at full speed."),
    # The standalone host.
    Setting("HOST", "127.0.0.1", "Address the standalone host binds."),
    Setting("PORT", "7071", "Port the standalone host binds."),
    Setting("HOST_ROLE", "all", "'all', 'web' (HTTP only) or 'worker' (agent execution only)."),
    Setting("API_KEY", None, "When set, every route but health needs it (Bearer token or x-api-key)."),
    Setting("ALLOW_PUBLIC_BIND", "false", "Allow a non-loopback HOST without API_KEY."),
    Setting("DURABLE_TASK_SCHEDULER_CONNECTION_STRING", None,
            "Durable Task Scheduler ('Endpoint=...;Authentication=...'). Unset: embedded in-memory backend."),
    Setting("TASKHUB_NAME", "default", "Durable Task hub name."),
    Setting("DATA_DIR", ".data", "Folder for the embedded redis-server's socket-free working files."),
    Setting("LOG_LEVEL", "INFO", "Python logging level."),
)

_BY_NAME = {s.name: s for s in SETTINGS}


class SettingsError(ValueError):
    """A setting has a value the app cannot use; the message names it."""


@dataclass(frozen=True)
class Settings:
    redis_connection_string: str | None
    redis_auth: str
    stream_ttl_seconds: int
    stream_maxlen: int
    write_coalesce_seconds: float
    write_buffer_chunks: int
    outage_seconds: float
    stream_max_seconds: float
    heartbeat_seconds: float
    stall_seconds: float
    start_seconds: float
    retry_ms: int
    azure_openai_endpoint: str | None
    azure_openai_deployment: str | None
    azure_openai_api_key: str | None
    azure_openai_api_version: str | None
    azure_client_id: str | None
    openai_api_key: str | None
    openai_base_url: str | None
    openai_model: str
    offline_chunks_per_second: float
    host: str
    port: int
    role: str
    api_key: str | None
    allow_public_bind: bool
    durable_task_scheduler_connection_string: str | None
    taskhub_name: str
    data_dir: str
    log_level: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or _BY_NAME[name].default

        def number(name: str, minimum: float = 0) -> float:
            raw = text(name)
            try:
                value = float(raw or "")
            except ValueError:
                raise SettingsError(f"{name} must be a number, not {raw!r}") from None
            if value < minimum:
                raise SettingsError(f"{name} must be at least {minimum}, not {raw!r}")
            return value

        def choice(name: str, allowed: tuple[str, ...]) -> str:
            value = (text(name) or "").lower()
            if value not in allowed:
                raise SettingsError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
            return value

        if number("REDIS_OUTAGE_SECONDS") >= number("STREAM_STALL_SECONDS", 1):
            # A writer still riding out an outage renews no lease: readers would end its run as stalled.
            raise SettingsError("REDIS_OUTAGE_SECONDS must be shorter than STREAM_STALL_SECONDS")
        return cls(
            redis_connection_string=text("REDIS_CONNECTION_STRING"),
            redis_auth=choice("REDIS_AUTH", ("url", "entra")),
            stream_ttl_seconds=int(number("REDIS_STREAM_TTL_MINUTES", 1) * 60),
            stream_maxlen=int(number("REDIS_STREAM_MAXLEN", 100)),
            write_coalesce_seconds=number("REDIS_WRITE_COALESCE_MS") / 1000,
            write_buffer_chunks=int(number("REDIS_WRITE_BUFFER_CHUNKS", 1)),
            outage_seconds=number("REDIS_OUTAGE_SECONDS"),
            stream_max_seconds=number("STREAM_MAX_SECONDS", 1),
            heartbeat_seconds=number("STREAM_HEARTBEAT_SECONDS", 0.05),
            stall_seconds=number("STREAM_STALL_SECONDS", 1),
            start_seconds=number("STREAM_START_SECONDS", 1),
            retry_ms=int(number("STREAM_RETRY_MS")),
            azure_openai_endpoint=text("AZURE_OPENAI_ENDPOINT"),
            azure_openai_deployment=text("AZURE_OPENAI_DEPLOYMENT_NAME"),
            azure_openai_api_key=text("AZURE_OPENAI_API_KEY"),
            azure_openai_api_version=text("AZURE_OPENAI_API_VERSION"),
            azure_client_id=text("AZURE_CLIENT_ID"),
            openai_api_key=text("OPENAI_API_KEY"),
            openai_base_url=text("OPENAI_BASE_URL"),
            openai_model=text("OPENAI_MODEL") or "gpt-4o-mini",
            offline_chunks_per_second=number("OFFLINE_MODEL_CHUNKS_PER_SECOND"),
            host=text("HOST") or "127.0.0.1",
            port=int(number("PORT")),
            role=choice("HOST_ROLE", ("all", "web", "worker")),
            api_key=text("API_KEY"),
            allow_public_bind=(text("ALLOW_PUBLIC_BIND") or "").lower() in ("1", "true", "yes"),
            durable_task_scheduler_connection_string=text("DURABLE_TASK_SCHEDULER_CONNECTION_STRING"),
            taskhub_name=text("TASKHUB_NAME") or "default",
            data_dir=text("DATA_DIR") or ".data",
            log_level=(text("LOG_LEVEL") or "INFO").upper(),
        )
