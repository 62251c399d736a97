"""Figure 2b, time to first byte of a new run: POST the request, then time to the first `message` event.

The offline model streams at full speed. Ours: the real standalone host
(durable dispatch, tool calls, run log, live tail). Baseline: its answer is
buffered, so its first byte is the end of the run (its host runs the same
offline agent in-process, without durable dispatch: the kindest set-up for it).
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from bench.stats import median

AGENT = "TravelPlanner"
REQUEST = "Plan a 3-day trip to Lisbon"


def _one(base_url: str, sse: bool) -> tuple[float, float, int]:
    """(seconds to the first message, seconds to the end of the answer, bytes received) for one new run."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        started = time.perf_counter()
        accepted = client.post(f"/api/agents/{AGENT}/run", content=REQUEST, headers={"Content-Type": "text/plain"})
        accepted.raise_for_status()
        url = accepted.json()["stream_url"]
        first = None
        received = 0
        accept = "text/event-stream" if sse else "text/plain"
        with client.stream("GET", url, headers={"Accept": accept}) as response:
            response.raise_for_status()
            if not sse:
                first = time.perf_counter() - started  # the buffered body starts with the whole answer
            for line in response.iter_lines():
                received += len(line) + 1
                if first is None and line == "event: message":
                    first = time.perf_counter() - started
                if sse and line == "event: done":
                    break
        return (first if first is not None else float("nan")), time.perf_counter() - started, received


def measure(base_url: str, runs: int, *, sse: bool) -> dict[str, Any]:
    _one(base_url, sse)  # warm-up: imports, first durable orchestration, script loading
    samples = [_one(base_url, sse) for _ in range(runs)]
    return {
        "runs": runs,
        "first_byte_ms": median([s[0] * 1000 for s in samples]),
        "whole_answer_ms": median([s[1] * 1000 for s in samples]),
        "answer_bytes": median([s[2] for s in samples]),
        "samples_ms": [[round(a * 1000, 1), round(b * 1000, 1)] for a, b, _ in samples],
    }
