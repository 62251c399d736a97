"""Figure 1, the write path: chunks appended per second, round trips per chunk, in-process cost per append.

Each "model" is a task that yields a chunk, hands it to the log and yields to
the event loop again, as fast as it can, for a fixed time. Ours hands it to
`RunWriter.add()` (buffering only; the writer's task flushes one Lua call per
batch); the baseline awaits its write (new client, XADD, EXPIRE). Throughput
counts a chunk once it is durable in Redis (the terminal entry written).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench import redis_server
from bench.baseline import BaselineWriter
from bench.counting import TALLY, CountingConnection, counted
from bench.stats import percentile
from bench.workload import chunks, new_id
from redis_stream_response_handler import Retention, RunLog, WritePolicy
from streaming.redis_clients import connect


async def _ours(url: str, streams: int, seconds: float, max_chunks: int) -> dict[str, Any]:
    log = RunLog(counted(connect(url)), Retention())
    sync = redis_server.client(url)
    try:
        conversations = [new_id("w") for _ in range(streams)]
        await asyncio.gather(*(log.open_run(c, "run-1") for c in conversations))
        writers = [log.writer(c, "run-1", WritePolicy()) for c in conversations]
        while any(w.attempt is None for w in writers):  # noqa: ASYNC110  RunWriter exposes no event for it
            await asyncio.sleep(0.005)
        TALLY.reset()
        calls_before = redis_server.command_calls(sync)
        costs: list[int] = []
        added = 0
        started = time.perf_counter()
        deadline = started + seconds

        async def model(writer: Any) -> None:
            nonlocal added
            source = chunks()
            for _ in range(max_chunks):
                if time.perf_counter() >= deadline:
                    break
                text = next(source)
                t0 = time.perf_counter_ns()
                writer.add(text)
                costs.append(time.perf_counter_ns() - t0)
                added += 1
                await asyncio.sleep(0)
            await writer.finish("done")

        await asyncio.gather(*(model(w) for w in writers))
        elapsed = time.perf_counter() - started
        calls = redis_server.calls_delta(calls_before, redis_server.command_calls(sync))
        flushes = sum(w.flushes for w in writers)
        return _result(added, elapsed, costs, TALLY.round_trips, flushes, calls)
    finally:
        await log.redis.aclose()
        sync.close()


async def _baseline(url: str, streams: int, seconds: float, max_chunks: int) -> dict[str, Any]:
    writer = BaselineWriter(url, connection_class=CountingConnection)
    sync = redis_server.client(url)
    conversations = [new_id("bw") for _ in range(streams)]
    TALLY.reset()
    calls_before = redis_server.command_calls(sync)
    costs: list[int] = []
    added = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def model(conversation_id: str) -> None:
        nonlocal added
        source = chunks()
        sequence = 0
        for _ in range(max_chunks):
            if time.perf_counter() >= deadline:
                break
            text = next(source)
            t0 = time.perf_counter_ns()
            await writer.write_chunk(conversation_id, text, sequence)
            costs.append(time.perf_counter_ns() - t0)
            sequence += 1
            added += 1
        await writer.write_completion(conversation_id, sequence)

    try:
        await asyncio.gather(*(model(c) for c in conversations))
        elapsed = time.perf_counter() - started
        calls = redis_server.calls_delta(calls_before, redis_server.command_calls(sync))
        # Each baseline write carries one chunk (the end-of-answer writes add round trips, not batches).
        return _result(added, elapsed, costs, TALLY.round_trips, added, calls)
    finally:
        sync.close()


def _result(chunks_added: int, elapsed: float, costs_ns: list[int], round_trips: int, flushes: int,
            calls: dict[str, int]) -> dict[str, Any]:
    chunks_added = max(chunks_added, 1)
    return {
        "chunks": chunks_added,
        "seconds": elapsed,
        "chunks_per_s": chunks_added / elapsed,
        "append_p50_ms": percentile(costs_ns, 50) / 1e6,
        "append_p99_ms": percentile(costs_ns, 99) / 1e6,
        "round_trips": round_trips,
        "round_trips_per_chunk": round_trips / chunks_added,
        "flushes": flushes,
        "flushes_per_s": flushes / elapsed,
        "round_trips_per_flush": round_trips / max(flushes, 1),
        "chunks_per_flush": chunks_added / max(flushes, 1),
        "server_commands_per_chunk": sum(calls.values()) / chunks_added,
        "server_calls": calls,
    }


def measure(design: str, url: str, streams: int, seconds: float) -> dict[str, Any]:
    run = _ours if design == "ours" else _baseline
    max_chunks = max(1_000_000 // streams, 50)  # a bound on count as well as on time
    return asyncio.run(run(url, streams, seconds, max_chunks))
