"""Admission control over HTTP: when runs pile up waiting for a worker, POST refuses more, promptly, with Retry-After.

Two web-only hosts share a Redis and a durable backend that no worker serves, so every accepted run waits.
What one host accepted counts for the other: the count of waiting runs lives in Redis.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testing import ROOT
from testing.hosts import StandaloneHost, free_port
from travelplanner.embedded_redis import EmbeddedRedis

RUN = "/api/agents/TravelPlanner/run"
LIMITS = {"MAX_QUEUED_RUNS": "4", "MAX_QUEUED_TURNS_PER_CONVERSATION": "2"}


@pytest.fixture(scope="module")
def backend_without_workers() -> Iterator[str]:
    port = free_port()
    backend = subprocess.Popen([sys.executable, "-m", "travelplanner.embedded_backend", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        assert b"127.0.0.1" in (backend.stdout.readline() if backend.stdout else b"")
        yield f"Endpoint=http://127.0.0.1:{port};Authentication=None"
    finally:
        backend.terminate()
        backend.wait(10)


@pytest.fixture
def web_hosts(backend_without_workers: str, tmp_path: Path) -> Iterator[tuple[StandaloneHost, StandaloneHost]]:
    """Two web processes on a Redis of this test's own (the queue of waiting runs is server-wide)."""
    env = {**LIMITS, "HOST_ROLE": "web", "DURABLE_TASK_SCHEDULER_CONNECTION_STRING": backend_without_workers}
    with EmbeddedRedis(tmp_path / "redis") as redis, \
            StandaloneHost(redis.url, env, log_path=tmp_path / "a.log") as first, \
            StandaloneHost(redis.url, env, log_path=tmp_path / "b.log") as second:
        yield first, second


def post(host: StandaloneHost, conversation_id: str | None = None) -> httpx.Response:
    body = {"message": "Plan a 2-day trip to Porto"}
    if conversation_id:
        body["conversation_id"] = conversation_id
    return httpx.post(f"{host.base_url}{RUN}", json=body, timeout=10)


def refused(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert int(response.headers["retry-after"]) >= 1
    return str(response.json()["error"])


def test_runs_waiting_for_a_worker_are_capped_across_web_processes(
    web_hosts: tuple[StandaloneHost, StandaloneHost],
) -> None:
    first, second = web_hosts
    accepted = [post(first), post(second), post(first), post(second)]
    assert [response.status_code for response in accepted] == [202] * 4
    assert "waiting for a worker" in refused(post(first), 503)
    assert "waiting for a worker" in refused(post(second), 503)  # the other process counts the same runs
    waiting = accepted[0].json()
    cancel = httpx.post(f"{second.base_url}/api/agent/stream/{waiting['conversation_id']}/cancel",
                        params={"run": waiting["correlation_id"]}, timeout=10)
    assert cancel.status_code == 200  # a cancelled run waits no more: room for one
    assert post(first).status_code == 202
    refused(post(second), 503)


def test_turns_waiting_in_one_conversation_are_capped(web_hosts: tuple[StandaloneHost, StandaloneHost]) -> None:
    first, second = web_hosts
    conversation = f"busy-{uuid.uuid4().hex}"
    assert post(first, conversation).status_code == 202
    second_turn = post(second, conversation)
    assert second_turn.status_code == 202
    assert "turns waiting" in refused(post(first, conversation), 429)
    assert post(first).status_code == 202  # other conversations are not held up
    latest = httpx.post(f"{first.base_url}/api/agent/stream/{conversation}/cancel", timeout=10)
    assert latest.json()["correlation_id"] == second_turn.json()["correlation_id"]  # the refused turn left nothing
    assert post(second, conversation).status_code == 202  # the cancelled turn waits no more
