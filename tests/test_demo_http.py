"""demo.http, run top to bottom by httpyac against the real standalone host.

Every request in demo.http states the status it expects (`# ?? status == N`); httpyac.config.js makes
httpyac check those, and this test also checks them itself from httpyac's JSON report, so a config that
silently stopped asserting would not pass. httpyac comes from package.json (`npm install`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import require_tool

from testing import ROOT
from testing.hosts import StandaloneHost

DEMO = ROOT / "demo.http"
HTTPYAC = ROOT / "node_modules" / ".bin" / "httpyac"
REQUEST_LINE = re.compile(r"^(GET|POST|PUT|PATCH|DELETE) ", re.MULTILINE)
EXPECTED_STATUS = re.compile(r"^# \?\? status == (\d{3})$", re.MULTILINE)


@dataclass(frozen=True)
class Expected:
    title: str
    status: int


def expected_requests() -> list[Expected]:
    """(title, status) of each request in demo.http, in order, read from the file itself."""
    expected = []
    for block in DEMO.read_text().split("\n###")[1:]:
        title, _, body = block.partition("\n")
        if REQUEST_LINE.search(body):
            statuses = EXPECTED_STATUS.findall(body)
            assert len(statuses) == 1, f"request {title.strip()!r} must state one expected status"
            expected.append(Expected(title.strip(), int(statuses[0])))
    return expected


def httpyac() -> str:
    require_tool("node")
    if not os.access(HTTPYAC, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail("node_modules/.bin/httpyac is required in CI; .ci/run runs npm install")
        pytest.skip("httpyac is not installed: run `npm install` in the project folder")
    return str(HTTPYAC)


def send_demo(*variables: str, report_file: Path) -> tuple[int, dict[str, Any]]:
    command = [httpyac(), "send", str(DEMO), "--all", "--json", "--var", *variables]
    # To a file, not a pipe: node exits before a pipe has taken more than 64 KiB, truncating the report.
    with report_file.open("w") as out:
        result = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.PIPE, text=True, timeout=90,
                                stdin=subprocess.DEVNULL)
    try:
        return result.returncode, json.loads(report_file.read_text())
    except ValueError:
        pytest.fail(f"httpyac wrote no JSON report (exit {result.returncode}):\n{report_file.read_text()[-3000:]}"
                    f"\n{result.stderr}")


@pytest.fixture(scope="module")
def host(redis_url: str) -> Iterator[StandaloneHost]:
    with StandaloneHost(redis_url, {"OFFLINE_MODEL_CHUNKS_PER_SECOND": "200"}) as running:
        yield running


@pytest.fixture(scope="module")
def keyed_host(redis_url: str) -> Iterator[StandaloneHost]:
    with StandaloneHost(redis_url, {"OFFLINE_MODEL_CHUNKS_PER_SECOND": "0", "API_KEY": "s3cret"}) as running:
        yield running


def assert_every_status_as_expected(exit_code: int, report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Checks the report request by request; returns the responses by title."""
    expected = expected_requests()
    requests = report["requests"]
    assert [r["title"] for r in requests] == [e.title for e in expected], "httpyac did not run every request"
    for request, wanted in zip(requests, expected, strict=True):
        status = (request.get("response") or {}).get("statusCode")
        assert status == wanted.status, f"{wanted.title!r}: {status}, not {wanted.status}: {request['testResults']}"
    summary = report["summary"]
    assert summary["totalTests"] == len(expected), "some `# ?? status` lines were not turned into httpyac assertions"
    assert summary["failedTests"] == summary["erroredTests"] == summary["erroredRequests"] == 0, summary
    assert exit_code == 0
    return {r["title"]: r["response"] for r in requests}


def test_demo_http_runs_top_to_bottom(host: StandaloneHost, tmp_path: Path) -> None:
    exit_code, report = send_demo(f"host={host.base_url}", report_file=tmp_path / "report.json")

    responses = assert_every_status_as_expected(exit_code, report)

    def body(title_start: str) -> str:
        [found] = [response["body"] for title, response in responses.items() if title.startswith(title_start)]
        return str(found)

    sse, plain = body("Stream the run as Server-Sent Events"), body("The same run as plain text")
    after_cursor, after_header = body("Resume with ?cursor="), body("Resume with Last-Event-ID")
    first_id = re.findall(r"^id: (\S+)$", sse, re.MULTILINE)[0]
    assert sse.rstrip().endswith("event: done\ndata: [DONE]")
    assert plain.endswith(after_cursor) and 0 < len(after_cursor) < len(plain), "?cursor= did not resume mid-run"
    assert first_id not in after_header and after_header.rstrip().endswith("data: [DONE]")
    first, second = json.loads(body("Start a run")), json.loads(body("Second turn"))
    assert second["conversation_id"] == first["conversation_id"]
    assert "Tokyo" in body("Stream the second turn"), "the second turn does not know the first"


def test_demo_http_sends_the_api_key_everywhere_it_is_needed(keyed_host: StandaloneHost, tmp_path: Path) -> None:
    exit_code, report = send_demo(f"host={keyed_host.base_url}", "apiKey=s3cret", report_file=tmp_path / "report.json")

    assert_every_status_as_expected(exit_code, report)


def test_a_wrong_status_fails_the_run(keyed_host: StandaloneHost, tmp_path: Path) -> None:
    """Without the key every request but health gets 401: httpyac must report failures, and so must we."""
    exit_code, report = send_demo(f"host={keyed_host.base_url}", report_file=tmp_path / "report.json")

    assert exit_code != 0
    assert report["summary"]["failedTests"] + report["summary"]["erroredTests"] > 0
    with pytest.raises(AssertionError):
        assert_every_status_as_expected(exit_code, report)
