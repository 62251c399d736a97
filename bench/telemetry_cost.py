"""The telemetry figure: what tracing and metrics cost per chunk, on and off.

A run of the offline model at full speed is recorded through `RecordedAgent` and the real run log, then read
back through the streaming core as a stream response would (`read_run`, SSE framing), all in one process, so
both the writer's and the reader's per-chunk work is in the figure. With telemetry off, nothing is given a
tracer or an observer (the hosts' default). With it on, the process is configured as a host configures it,
exporting to memory instead of the network (so the figure is the instrumentation's work, not an exporter's
I/O): the run's span, agent-framework's spans, the redis-py spans and every metric.

OpenTelemetry's providers are set once per process, so each mode runs in a fresh interpreter:

    python -m bench.telemetry_cost --mode on --url redis://127.0.0.1:6379/0 --runs 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import uuid
from typing import Any

from bench import ROOT

MESSAGE = "Plan a 5-day trip to Lisbon"
WARMUP_RUNS = 2


def measure(url: str, runs: int, repeat: int = 1) -> dict[str, Any]:
    """Each mode in its own process, alternating, `repeat` times; per-chunk medians over the repeats."""
    out: dict[str, Any] = {"off": [], "on": []}
    for _ in range(repeat):
        for mode in ("off", "on"):
            done = subprocess.run([sys.executable, "-m", "bench.telemetry_cost", "--mode", mode, "--url", url,
                                   "--runs", str(runs)], cwd=ROOT, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise RuntimeError(f"telemetry cost ({mode}) failed:\n{done.stderr[-3000:]}")
            out[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


def table(results: dict[str, Any]) -> str:
    def median(mode: str, key: str) -> float:
        values = sorted(run[key] for run in results[mode])
        return values[len(values) // 2]

    off_cpu, on_cpu = median("off", "cpu_us_per_chunk"), median("on", "cpu_us_per_chunk")
    off_wall, on_wall = median("off", "wall_us_per_chunk"), median("on", "wall_us_per_chunk")
    lines = ["## Telemetry: cost per chunk (a run written and read back in one process)", "",
             "| | off (default) | on (in-memory export) | on − off |", "| --- | --- | --- | --- |",
             f"| CPU per chunk | {off_cpu:.1f} µs | {on_cpu:.1f} µs | {on_cpu - off_cpu:+.1f} µs |",
             f"| wall time per chunk | {off_wall:.1f} µs | {on_wall:.1f} µs | {on_wall - off_wall:+.1f} µs |",
             f"| spans per run | {median('off', 'spans_per_run'):.0f} | {median('on', 'spans_per_run'):.0f} | |",
             f"| chunks per run | {median('off', 'chunks_per_run'):.0f} | {median('on', 'chunks_per_run'):.0f} | |"]
    return "\n".join(lines)


async def _run(mode: str, url: str, runs: int) -> dict[str, Any]:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from redis_stream_response_handler import Retention, RunLog, WritePolicy
    from streaming.framing import sse_frame
    from streaming.live_tail import LiveTail
    from streaming.observer import observed
    from streaming.reader import ReadPolicy, read_run
    from streaming.redis_clients import connect
    from tools import describe_call
    from travelplanner import telemetry
    from travelplanner.agent import build_agent
    from travelplanner.offline_model import OfflineTravelModel
    from travelplanner.recorder import RecordedAgent, run_log_options
    from travelplanner.settings import Settings

    settings = Settings.from_env({"REDIS_CONNECTION_STRING": url, "OFFLINE_MODEL_CHUNKS_PER_SECOND": "0"})
    spans = InMemorySpanExporter()
    exporters = telemetry.Exporters(spans, InMemoryMetricReader()) if mode == "on" else None
    configured = telemetry.configure(settings, "worker", exporters=exporters)
    with telemetry.untraced():
        log = RunLog(connect(url), Retention(ttl_seconds=120), observer=configured.metrics if configured else None)
    tail = LiveTail(connect(url, blocking_reader=True), log.redis)  # never started: the runs are read when done
    agent = RecordedAgent(build_agent(settings, OfflineTravelModel(chunks_per_second=0)), lambda: log,
                          WritePolicy(), tool_labels=describe_call, tracer=configured.tracer if configured else None)
    chunks = span_count = 0
    cpu = wall = 0.0
    for index in range(WARMUP_RUNS + runs):
        conversation, run = f"bench-telemetry-{uuid.uuid4().hex}", uuid.uuid4().hex
        await log.open_run(conversation, run)
        spans.clear()
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        stream = agent.run(MESSAGE, stream=True, options=run_log_options(conversation, run))
        written = 0
        async for update in stream:
            written += 1 if update.text else 0
        await stream.get_final_response()
        items = read_run(log, tail, await log.resolve(conversation, correlation_id=run), ReadPolicy())
        if configured is not None:
            items = observed(items, configured.metrics, plain=False, resumed=None)
        sent = 0
        async for item in items:
            sse_frame(item)
            sent += 1
        if index >= WARMUP_RUNS:
            cpu += time.process_time() - cpu_started
            wall += time.perf_counter() - wall_started
            chunks += written
            span_count += len(spans.get_finished_spans())
    await log.redis.aclose()
    await tail.stop()
    if configured is not None:
        configured.shutdown()
    return {"mode": mode, "runs": runs, "chunks_per_run": chunks / runs, "spans_per_run": span_count / runs,
            "cpu_us_per_chunk": cpu / chunks * 1e6, "wall_us_per_chunk": wall / chunks * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.telemetry_cost")
    parser.add_argument("--mode", choices=("off", "on"), required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_run(args.mode, args.url, args.runs))))


if __name__ == "__main__":
    main()
