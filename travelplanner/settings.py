"""Every environment variable the app reads, with its type, bounds and default, in one place.

Nothing else in the project reads the environment (ruff's banned-API rule,
configured in pyproject.toml, enforces it): hosts, the agent and the run log
take a `Settings` object. A field's name is its variable's name in lower case;
README's configuration table and the Bicep app settings are checked against
these fields by the tests, so the three cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

_EXPLICIT: ContextVar[bool] = ContextVar("explicit_environment", default=False)


class SettingsError(ValueError):
    """A setting has a value the app cannot use; the message names it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True, validate_default=True)

    # --- Redis: the run log
    redis_connection_string: SecretStr | None = Field(
        None, description="redis:// or rediss:// URL. Unset: the standalone host starts an embedded redis-server.")
    redis_auth: Literal["url", "entra"] = Field(
        "url", description="'url' (credentials in the connection string) or 'entra' (Microsoft Entra ID "
                           "through redis-entraid).")
    redis_stream_ttl_minutes: float = Field(10, ge=1, description="Sliding expiry of a conversation's stream "
                                                                   "after its last write.")
    redis_stream_maxlen: int = Field(20000, ge=100, description="Approximate cap on entries kept per conversation "
                                                                "stream.")
    redis_write_coalesce_ms: float = Field(0, ge=0, description="Extra time a writer waits to batch chunks of one "
                                                                "run into one round trip (0: no wait).")
    redis_write_buffer_chunks: int = Field(20000, ge=1, description="Chunks a writer holds while Redis is "
                                                                    "unreachable.")
    redis_outage_seconds: float = Field(20, ge=0, description="How long a writer retries an unreachable Redis "
                                                              "before it gives the run up as interrupted.")
    # --- The stream endpoint
    stream_max_seconds: float = Field(120, ge=1, description="A stream response ends after this long; the client "
                                                             "resumes.")
    stream_heartbeat_seconds: float = Field(15, ge=0.05, description="Idle time after which an SSE comment keeps "
                                                                     "the connection open.")
    stream_stall_seconds: float = Field(60, ge=1, description="A run whose worker shows no sign of life for this "
                                                              "long is ended with a 'stalled' error.")
    stream_start_seconds: float = Field(600, ge=1, description="A run no worker has begun this long after it was "
                                                               "accepted is ended with a 'not started' error.")
    stream_retry_ms: int = Field(1000, ge=0, description="The SSE 'retry:' reconnection delay suggested to "
                                                         "clients.")
    # --- Admission: runs accepted but not yet begun by a worker
    max_queued_runs: int = Field(1000, ge=0, description="Accepted runs that may wait for a worker to begin them, "
                                                        "across all web processes; more are answered 503 with "
                                                        "Retry-After (0: no limit).")
    max_queued_turns_per_conversation: int = Field(3, ge=0, description="Turns of one conversation that may wait "
                                                                        "for a worker; more are answered 429 with "
                                                                        "Retry-After (0: no limit).")
    # --- The model
    azure_openai_endpoint: str | None = Field(None, description="Azure OpenAI endpoint; with the deployment name, "
                                                                "selects Azure OpenAI.")
    azure_openai_deployment_name: str | None = Field(None, description="Azure OpenAI chat deployment.")
    azure_openai_api_key: SecretStr | None = Field(None, description="Azure OpenAI key; unset: Microsoft Entra ID "
                                                                     "(DefaultAzureCredential).")
    azure_openai_api_version: str | None = Field(None, description="Azure OpenAI API version; unset: the client "
                                                                   "library's default.")
    azure_client_id: str | None = Field(None, description="Client id of a user-assigned managed identity for Entra "
                                                          "ID sign-in.")
    openai_api_key: SecretStr | None = Field(None, description="Key for an OpenAI-compatible endpoint; selects it "
                                                               "when Azure is not set.")
    openai_base_url: str | None = Field(None, description="Base URL of the OpenAI-compatible endpoint; unset: "
                                                          "api.openai.com.")
    openai_model: str = Field("gpt-4o-mini", description="Model name for the OpenAI-compatible endpoint.")
    offline_model_chunks_per_second: float = Field(40, ge=0, description="Pace of the offline demo model; 0 "
                                                                         "streams at full speed.")
    # --- The model's budget per run (OpenAI and Azure OpenAI)
    model_connect_seconds: float = Field(10, gt=0, description="Longest wait to connect to the model service.")
    model_first_byte_seconds: float = Field(60, gt=0, description="Longest wait for the first chunk of a streamed "
                                                                  "model request.")
    model_idle_seconds: float = Field(30, gt=0, description="Longest silence between two chunks of a streamed "
                                                            "model answer.")
    model_tries: int = Field(3, ge=1, le=10, description="Failed model requests a run accepts before it gives up "
                                                         "(first tries, retries and the fallback together).")
    model_retry_after_max_seconds: float = Field(30, ge=0, description="The longest Retry-After a run waits for; "
                                                                       "a longer one ends the run at once.")
    model_run_seconds: float = Field(300, gt=0, description="The time a run may spend on the model in all, "
                                                            "retries and waits included.")
    # --- The standalone host
    host: str = Field("127.0.0.1", description="Address the standalone host binds.")
    port: int = Field(7071, ge=0, le=65535, description="Port the standalone host binds.")
    host_role: Literal["all", "web", "worker"] = Field(
        "all", description="'all', 'web' (HTTP only) or 'worker' (agent execution only).")
    api_key: SecretStr | None = Field(None, description="When set, every route but health and the page needs it "
                                                        "(Bearer token, x-api-key or ?code=).")
    allow_public_bind: bool = Field(False, description="Allow a non-loopback HOST without API_KEY.")
    http_header_timeout_seconds: float = Field(10, gt=0, description="A request's headers must arrive within this "
                                                                     "long of its first byte (or of connecting): "
                                                                     "408 otherwise.")
    http_body_timeout_seconds: float = Field(30, gt=0, description="A request's body must arrive within this long "
                                                                   "of its headers: 408 otherwise.")
    http_send_timeout_seconds: float = Field(30, gt=0, description="A client that reads nothing while its "
                                                                   "connection's write buffer is full this long is "
                                                                   "cut off.")
    http_max_connections: int = Field(10000, ge=1, description="Open HTTP connections per web process; more are "
                                                              "answered 503 with Retry-After.")
    allowed_hosts: str = Field("", description="Comma-separated Host names the standalone host answers to, besides "
                                               "its loopback names when bound to loopback; '*': any.")
    allowed_origins: str = Field("", description="Comma-separated origins (scheme://host[:port]) of other sites "
                                                 "whose pages may call the API (CORS); other sites are refused.")
    durable_task_scheduler_connection_string: str | None = Field(
        None, description="Durable Task Scheduler ('Endpoint=...;Authentication=...'). Unset: embedded in-memory "
                          "backend.")
    taskhub_name: str = Field("default", description="Durable Task hub name.")
    # --- The standalone host's processes
    max_concurrent_runs: int = Field(256, ge=1, le=10000, description="Runs one worker process executes at once "
                                     "(each holds a thread while its model streams); more wait in the durable "
                                     "backend's queue.")
    worker_processes: int = Field(0, ge=0, le=256, description="Worker processes the 'all' role starts; 0: one "
                                                               "per core.")
    web_processes: int = Field(1, ge=1, le=64, description="Web processes the 'all' role starts; they share one "
                                                           "listening socket.")
    shutdown_grace_seconds: float = Field(10, ge=0, description="On SIGTERM, how long a worker lets its runs "
                                          "finish before it ends the rest with an error saying so.")
    listen_fd: int | None = Field(None, ge=0, description="Set by the 'all' role for the web processes it starts: "
                                                          "the listening socket they share. Unset: bind HOST:PORT.")
    data_dir: str = Field(".data", description="Folder for the embedded redis-server's working files.")
    # --- Telemetry (off unless one of these is set)
    applicationinsights_connection_string: SecretStr | None = Field(
        None, description="Application Insights connection string; set: traces and metrics go there through "
                          "azure-monitor-opentelemetry, signed in with Entra ID (AZURE_CLIENT_ID's managed identity, "
                          "else DefaultAzureCredential).")
    otel_exporter_otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP endpoint (http://collector:4318); set: traces and metrics are exported there "
                          "(the OpenTelemetry SDK's own OTEL_* variables apply as well).")
    log_level: Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"] = Field(
        "INFO", description="Python logging level.")

    @model_validator(mode="before")
    @classmethod
    def _blank_means_unset(cls, values: Any) -> Any:
        if isinstance(values, Mapping):
            return {k: v for k, v in values.items() if not (isinstance(v, str) and not v.strip())}
        return values

    @field_validator("redis_auth", "host_role", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in _listed(value):
            scheme, _, rest = origin.partition("://")
            if scheme not in ("http", "https") or not rest or "/" in rest.rstrip("/"):
                raise ValueError(f"each origin is scheme://host[:port], like https://app.example.com; not {origin!r}")
        return value

    @model_validator(mode="after")
    def _outage_shorter_than_stall(self) -> Settings:
        if self.redis_outage_seconds >= self.stream_stall_seconds:
            # A writer still riding out an outage renews no lease: readers would end its run as stalled.
            raise ValueError("REDIS_OUTAGE_SECONDS must be shorter than STREAM_STALL_SECONDS")
        return self

    @model_validator(mode="after")
    def _model_run_shorter_than_start(self) -> Settings:
        remote = self.openai_api_key or (self.azure_openai_endpoint and self.azure_openai_deployment_name)
        if remote and self.model_run_seconds >= self.stream_start_seconds:
            # A conversation's next turn waits for the run before it: it must begin before its start allowance ends.
            raise ValueError("MODEL_RUN_SECONDS must be shorter than STREAM_START_SECONDS")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        if _EXPLICIT.get():  # from_env(environ): that mapping and nothing else
            return (init_settings,)
        return init_settings, env_settings, dotenv_settings, file_secret_settings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The process environment's settings, or exactly those of `environ` (nothing else is read)."""
        token = _EXPLICIT.set(environ is not None)
        try:
            return cls(**{name.lower(): value for name, value in (environ or {}).items()})
        except ValidationError as error:
            raise SettingsError(_describe(error)) from None
        finally:
            _EXPLICIT.reset(token)

    # --- in the units the code uses

    @property
    def redis_url(self) -> str | None:
        return self.redis_connection_string.get_secret_value() if self.redis_connection_string else None

    @property
    def worker_process_count(self) -> int:
        return self.worker_processes or os.cpu_count() or 1

    @property
    def stream_ttl_seconds(self) -> int:
        return int(self.redis_stream_ttl_minutes * 60)

    @property
    def write_coalesce_seconds(self) -> float:
        return self.redis_write_coalesce_ms / 1000

    @property
    def allowed_host_list(self) -> tuple[str, ...]:
        return _listed(self.allowed_hosts)

    @property
    def allowed_origin_list(self) -> tuple[str, ...]:
        return _listed(self.allowed_origins)


def _listed(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def environment_with(overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment with `overrides`: what a process it starts is configured with."""
    return {**os.environ, **overrides}


def _describe(error: ValidationError) -> str:
    problems = []
    for problem in error.errors():
        if problem["loc"]:
            name = str(problem["loc"][0]).upper()
            shown = "a secret" if "KEY" in name or "CONNECTION_STRING" in name else repr(problem["input"])
            problems.append(f"{name}: {problem['msg']}, not {shown}")
        else:
            problems.append(problem["msg"].removeprefix("Value error, "))
    return "; ".join(problems)


@dataclass(frozen=True)
class Setting:
    """One variable as README documents it."""

    name: str
    default: str | None  # None: optional, unset means "not configured"
    help: str


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(name.upper(), None if field.default is None else str(field.default), field.description or "")
    for name, field in Settings.model_fields.items()
)
