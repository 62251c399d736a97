"""How many agent runs one Python worker process executes at once, under the real worker.

The agent's entity function is synchronous: azure-functions-runtime runs it on its thread pool, and the
agent framework blocks that thread until the run ends (the model call itself is awaited on the framework's
own event loop). So a worker process runs at most PYTHON_THREADPOOL_THREAD_COUNT runs at once (unset:
Python's default, min(32, cores + 4)); further runs wait for a thread. HTTP functions are async and run on
the worker's event loop, so stream readers do not take pool threads.

Each case starts more runs than the pool has threads and reads them all as SSE at once, then takes each
run's busy interval from its events (its first chunk to its terminal event, by the time in their Redis
entry ids) and counts how many overlap at most: exactly the pool size.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import httpx
import pytest

from testing import ROOT
from testing.functions_worker import FunctionsWorkerHost, worker_python_or_skip
from testing.sse import ReceivedEvent, get_stream

# PYTHON_THREADPOOL_THREAD_COUNT as the deployment sets it (infra/app/api.bicep, equal to host.json's
# maxConcurrentEntityFunctions), and Python's default when it is unset.
_AGENT_RUNS = re.search(r"^var\s+agentRunsPerInstance\s*=\s*(\d+)", (ROOT / "infra/app/api.bicep").read_text(), re.M)
assert _AGENT_RUNS is not None, "infra/app/api.bicep: var agentRunsPerInstance"
DEPLOYED_THREADS = int(_AGENT_RUNS[1])
DEFAULT_THREADS = min(32, (os.cpu_count() or 1) + 4)
EXTRA_RUNS = 2  # beyond the pool: these must wait for a thread
PACE = "40"  # chunks a second from the offline model: a run takes about 5 s, far longer than starting them all


def busy_interval(events: list[ReceivedEvent]) -> tuple[int, int]:
    """(first chunk, terminal event) of a run, in milliseconds: the times in their Redis entry ids."""
    first = next(e for e in events if e.kind == "message")
    return int(first.id.split("-")[0]), int(events[-1].id.split("-")[0])


def most_at_once(intervals: list[tuple[int, int]]) -> int:
    # An end and a start in the same millisecond do not overlap: ends sort first.
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    best = current = 0
    for _, step in points:
        current += step
        best = max(best, current)
    return best


async def run_all(base_url: str, runs: int) -> list[list[ReceivedEvent]]:
    """Start `runs` runs at once and read each to its end: each run's events."""
    async with httpx.AsyncClient(base_url=base_url, timeout=120,
                                 limits=httpx.Limits(max_connections=None)) as client:
        cities = ["Lisbon", "Rome", "Porto", "Madrid"]
        started = await asyncio.gather(*(client.post("/api/agents/TravelPlanner/run",
                                                     content=f"Plan 2 days in {cities[index % len(cities)]}",
                                                     headers={"Content-Type": "text/plain"})
                                         for index in range(runs)))
        assert [response.status_code for response in started] == [202] * runs
        accepted = [response.json() for response in started]
        health = await client.get("/api/health")  # the pool is busy; HTTP functions are not held up
        assert health.status_code == 200
        reads = await asyncio.gather(*(get_stream(client, run["stream_url"], within=90) for run in accepted))
    return [read.events for read in reads]


@pytest.mark.parametrize(("setting", "threads"), [(str(DEPLOYED_THREADS), DEPLOYED_THREADS), (None, DEFAULT_THREADS)],
                         ids=["deployed", "default"])
def test_one_worker_runs_as_many_agent_runs_at_once_as_its_pool_has_threads(
    redis_url: str, tmp_path: Path, setting: str | None, threads: int
) -> None:
    settings = {"OFFLINE_MODEL_CHUNKS_PER_SECOND": PACE}
    if setting is not None:
        settings["PYTHON_THREADPOOL_THREAD_COUNT"] = setting
    with FunctionsWorkerHost(redis_url, settings, python=worker_python_or_skip(), work_dir=tmp_path) as host:
        runs = asyncio.run(run_all(host.base_url, threads + EXTRA_RUNS))
    assert [events[-1].kind for events in runs] == ["done"] * len(runs)
    intervals = [busy_interval(events) for events in runs]
    assert most_at_once(intervals) == threads, sorted(intervals)
