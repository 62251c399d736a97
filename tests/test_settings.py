"""settings.py: defaults, validation, and README's table kept in step with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from settings import SETTINGS, Settings, SettingsError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.port, settings.role) == ("127.0.0.1", 7071, "all")
    assert settings.redis_connection_string is None
    assert settings.stream_ttl_seconds == 600 and settings.stream_max_seconds == 120
    assert settings.heartbeat_seconds == 15 and settings.offline_chunks_per_second == 40


@pytest.mark.parametrize(("name", "value"), [
    ("PORT", "seventy"), ("HOST_ROLE", "boss"), ("REDIS_AUTH", "password"), ("STREAM_MAX_SECONDS", "0"),
    ("REDIS_STREAM_MAXLEN", "-5"),
])
def test_unusable_values_are_refused_with_the_setting_named(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_a_writer_outage_allowance_must_be_shorter_than_the_stall_time() -> None:
    with pytest.raises(SettingsError, match="REDIS_OUTAGE_SECONDS must be shorter than STREAM_STALL_SECONDS"):
        Settings.from_env({"STREAM_STALL_SECONDS": "10", "REDIS_OUTAGE_SECONDS": "10"})


def test_blank_values_mean_unset() -> None:
    assert Settings.from_env({"REDIS_CONNECTION_STRING": "  ", "PORT": ""}).port == 7071


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in readme]
    assert not missing, f"README's Configuration table lacks {missing}"


def test_nothing_but_settings_py_reads_the_environment() -> None:
    # A text scan, not ast.parse: CPython 3.11.7's parser can fail deep inside pytest's stack.
    reads = re.compile(r"\bos\.(environ|getenv)\b|\bfrom os import .*\b(environ|getenv)\b")
    offenders = []
    for path in ROOT.glob("*.py"):
        if path.name in ("settings.py", "client.py"):  # client.py is a separate program with its own flags
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if reads.search(line.split("#")[0]):
                offenders.append(f"{path.name}:{number}")
    assert not offenders, f"read settings through settings.py, not os.environ: {offenders}"
