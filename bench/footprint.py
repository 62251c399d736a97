"""Figure 4, Redis footprint of one completed run: MEMORY USAGE of its keys, and keys left without a TTL.

Paces, for a run of N chunks of model-sized text (bench/workload.py):
- one entry per chunk: each chunk is added only once the previous flush is in
  Redis. That is the layout a 40 chunks/s model gets (a flush takes far less
  than the 25 ms between its chunks, so each is flushed alone), without
  waiting N/40 seconds: every entry is the same size whatever the gap between
  entry ids (the id deltas stay small integers either way). Measuring a short
  real-time run instead and extrapolating would mislead: Redis allocates a
  stream's listpack nodes 4 KB at a time, so a short run is mostly slack.
- four chunks per entry: what REDIS_WRITE_COALESCE_MS=100 gives a 40 chunks/s
  model (4-5 chunks per flush), for the trade-off of a coalescing window;
- full speed: chunks added as fast as the model yields them (they merge into
  fewer, larger entries).
The baseline writes the same chunks its way: one entry per chunk, always.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench import redis_server
from bench.baseline import BaselineWriter
from bench.baseline import stream_key as baseline_key
from bench.workload import MEAN_CHUNK_BYTES, chunks, new_id
from redis_stream_response_handler import Retention, RunLog, WritePolicy, meta_key, stream_key
from streaming.redis_clients import connect

PACES = {"one entry per chunk": 1, "four chunks per entry": 4, "full speed": 0}


async def _ours(redis_url: str, count: int, per_entry: int) -> tuple[list[str], int]:
    log = RunLog(connect(redis_url), Retention())
    conversation = new_id("f")
    try:
        await log.open_run(conversation, "run-1")
        writer = log.writer(conversation, "run-1", WritePolicy())
        while writer.attempt is None:  # noqa: ASYNC110  RunWriter exposes no event for it
            await asyncio.sleep(0.001)
        source = chunks()
        for i in range(count):
            writer.add(next(source))
            if not per_entry:
                await asyncio.sleep(0)
            elif (i + 1) % per_entry == 0:
                flushed = writer.flushes
                while writer.flushes == flushed and not writer.stopped:  # noqa: ASYNC110  (no flush event)
                    await asyncio.sleep(0.0002)  # this batch becomes one entry
        await writer.finish("done")
        entries = await log.redis.xlen(stream_key(conversation))
        return [stream_key(conversation), meta_key(conversation)], int(entries)
    finally:
        await log.redis.aclose()


async def _baseline(redis_url: str, count: int) -> tuple[list[str], int]:
    writer = BaselineWriter(redis_url)
    conversation = new_id("bf")
    source = chunks()
    for sequence in range(count):
        await writer.write_chunk(conversation, next(source), sequence)
    await writer.write_completion(conversation, count)
    return [baseline_key(conversation)], count + 1


def _run(redis_url: str, design: str, count: int, per_entry: int = 1) -> dict[str, Any]:
    sync = redis_server.client(redis_url)
    try:
        used_before = int(sync.info("memory")["used_memory"])
        if design == "ours":
            keys, entries = asyncio.run(_ours(redis_url, count, per_entry))
        else:
            keys, entries = asyncio.run(_baseline(redis_url, count))
        used_after = int(sync.info("memory")["used_memory"])
        usage = redis_server.memory_usage(sync, *keys)
        return {
            "chunks": count,
            "entries": entries,
            "bytes": usage,
            "bytes_per_chunk": usage / max(count, 1),
            "text_bytes": round(MEAN_CHUNK_BYTES * count),
            "used_memory_delta": used_after - used_before,
            "keys": len(keys),
            "keys_without_ttl": sum(1 for key in keys if sync.ttl(key) == -1),
        }
    finally:
        sync.close()


def measure(redis_url: str, chunk_count: int, embedded: bool) -> dict[str, Any]:
    result: dict[str, Any] = {f"ours, {pace}": _run(redis_url, "ours", chunk_count, per_entry)
                              for pace, per_entry in PACES.items()}
    result["baseline"] = _run(redis_url, "baseline", chunk_count)
    if embedded:  # the bench's own Redis: every key in it is the bench's to inspect
        sync = redis_server.client(redis_url)
        result["all_keys"] = sync.dbsize()
        result["all_keys_without_ttl"] = len(redis_server.keys_without_ttl(sync))
        sync.close()
    return result
