"""travelplanner/settings.py: defaults, validation, and README's table kept in step with it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from testing import ROOT
from travelplanner.settings import SETTINGS, Settings, SettingsError


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.port, settings.host_role) == ("127.0.0.1", 7071, "all")
    assert settings.redis_url is None
    assert settings.stream_ttl_seconds == 600 and settings.stream_max_seconds == 120
    assert settings.stream_heartbeat_seconds == 15 and settings.offline_model_chunks_per_second == 40


def test_values_are_read_by_variable_name_and_converted() -> None:
    settings = Settings.from_env({"PORT": "8000", "HOST_ROLE": "Web", "REDIS_STREAM_TTL_MINUTES": "2",
                                  "REDIS_WRITE_COALESCE_MS": "20", "ALLOW_PUBLIC_BIND": "true", "LOG_LEVEL": "debug"})
    assert (settings.port, settings.host_role, settings.stream_ttl_seconds) == (8000, "web", 120)
    assert settings.write_coalesce_seconds == 0.02 and settings.allow_public_bind and settings.log_level == "DEBUG"


@pytest.mark.parametrize(("name", "value"), [
    ("PORT", "seventy"), ("HOST_ROLE", "boss"), ("REDIS_AUTH", "password"), ("STREAM_MAX_SECONDS", "0"),
    ("REDIS_STREAM_MAXLEN", "-5"), ("PORT", "70000"), ("ALLOW_PUBLIC_BIND", "perhaps"),
    ("HTTP_HEADER_TIMEOUT_SECONDS", "0"), ("HTTP_MAX_CONNECTIONS", "0"), ("HTTP_SEND_TIMEOUT_SECONDS", "-1"),
])
def test_unusable_values_are_refused_with_the_setting_named(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_a_refused_secret_is_not_echoed() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"REDIS_CONNECTION_STRING": "redis://:hunter2@x", "REDIS_STREAM_MAXLEN": "-5",
                           "API_KEY": "k" * 5})
    assert "hunter2" not in str(refused.value)
    settings = Settings.from_env({"API_KEY": "s3cret", "OPENAI_API_KEY": "sk-secret"})
    assert "s3cret" not in repr(settings) and "sk-secret" not in repr(settings)


def test_a_writer_outage_allowance_must_be_shorter_than_the_stall_time() -> None:
    with pytest.raises(SettingsError, match="REDIS_OUTAGE_SECONDS must be shorter than STREAM_STALL_SECONDS"):
        Settings.from_env({"STREAM_STALL_SECONDS": "10", "REDIS_OUTAGE_SECONDS": "10"})


def test_the_model_budget_has_defaults_and_bounds() -> None:
    settings = Settings.from_env({})
    assert (settings.model_connect_seconds, settings.model_first_byte_seconds, settings.model_idle_seconds) == (
        10, 60, 30)
    assert (settings.model_tries, settings.model_retry_after_max_seconds, settings.model_run_seconds) == (3, 30, 300)
    with pytest.raises(SettingsError, match="MODEL_TRIES"):
        Settings.from_env({"MODEL_TRIES": "0"})


def test_a_remote_models_run_must_end_before_the_next_turns_start_allowance() -> None:
    remote = {"OPENAI_API_KEY": "sk-test", "STREAM_START_SECONDS": "120"}
    with pytest.raises(SettingsError, match="MODEL_RUN_SECONDS must be shorter than STREAM_START_SECONDS"):
        Settings.from_env({**remote, "MODEL_RUN_SECONDS": "120"})
    assert Settings.from_env({**remote, "MODEL_RUN_SECONDS": "100"}).model_run_seconds == 100
    assert Settings.from_env({"STREAM_START_SECONDS": "2"}).model_run_seconds == 300  # the offline model has none


@pytest.mark.parametrize("origins", ["app.example.com", "ftp://a.example", "https://a.example/path", "*"])
def test_allowed_origins_are_scheme_host_and_port(origins: str) -> None:
    with pytest.raises(SettingsError, match="ALLOWED_ORIGINS"):
        Settings.from_env({"ALLOWED_ORIGINS": origins})


def test_allowed_hosts_and_origins_are_comma_separated_lists() -> None:
    settings = Settings.from_env({"ALLOWED_HOSTS": " planner.example.com,, api.example.com ",
                                  "ALLOWED_ORIGINS": "https://a.example, http://localhost:3000/"})
    assert settings.allowed_host_list == ("planner.example.com", "api.example.com")
    assert settings.allowed_origin_list == ("https://a.example", "http://localhost:3000/")


def test_blank_values_mean_unset() -> None:
    settings = Settings.from_env({"REDIS_CONNECTION_STRING": "  ", "PORT": ""})
    assert settings.port == 7071 and settings.redis_url is None


def test_an_explicit_environment_is_all_that_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: from_env({...}) also read the process environment, so the result depended on what else had
    run (the Functions host double sets REDIS_CONNECTION_STRING for the whole test session)."""
    monkeypatch.setenv("REDIS_CONNECTION_STRING", "redis://elsewhere:6379/0")
    monkeypatch.setenv("PORT", "9999")
    settings = Settings.from_env({"HOST_ROLE": "web"})
    assert settings.redis_url is None and settings.port == 7071 and settings.host_role == "web"


def test_the_process_environment_is_read_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_RETRY_MS", "2500")
    assert Settings.from_env().stream_retry_ms == 2500


def test_given_values_are_read_alone_whatever_the_process_environment_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: pydantic-settings read the environment on validation too, so a Functions host running in the
    same test process (which sets REDIS_CONNECTION_STRING) changed what from_env({}) returned."""
    monkeypatch.setenv("REDIS_CONNECTION_STRING", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("PORT", "9999")
    assert Settings.from_env({}).redis_url is None and Settings.from_env({}).port == 7071
    assert Settings.from_env({"PORT": "8000"}).port == 8000 and Settings.from_env().port == 9999


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in readme]
    assert not missing, f"README's Configuration table lacks {missing}"


@pytest.mark.parametrize("path", ["function_app.py", "streaming/reader.py", "travelplanner/agent.py",
                                  "redis_stream_response_handler.py"])
@pytest.mark.parametrize("read", ["import os\nos.environ.get('X')\n", "from os import getenv\ngetenv('X')\n"])
def test_only_settings_reads_the_environment(path: str, read: str) -> None:
    """The rule is ruff's banned-API check (pyproject.toml), which `make test` runs over the whole tree."""
    checked = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--stdin-filename", path, "-"],
                             input=read, capture_output=True, text=True, cwd=ROOT)
    assert checked.returncode == 1 and "TID251" in checked.stdout, checked.stdout + checked.stderr
