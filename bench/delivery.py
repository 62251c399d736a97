"""Figure 2, delivery latency: from the model yielding a chunk to its bytes arriving at an SSE client.

Feeder processes play the model: each stream gets one chunk every 1/40 s
(streams spread evenly over the period), each chunk's text its send time.
Ours: the feeder appends with RunLog/RunWriter (one writer per run, the
product's pool) and the real standalone host serves the streams. Baseline:
the feeder writes as the baseline does (a new client per chunk) and the
baseline host answers each stream once its run has ended. Reader processes
hold the SSE connections on raw sockets and record arrival - send per chunk.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing.connection
import time
from array import array
from typing import Any
from urllib.parse import urlsplit

from bench.processes import Worker, cpu_seconds, machine_busy_seconds
from bench.stats import percentile
from bench.workload import new_id

RATE = 40.0  # chunks per second per stream
READERS_PER_PROCESS = 500
STREAMS_PER_FEEDER = 250
MAX_FEEDERS = 2


def _spread(streams: int) -> list[float]:
    return [j / streams / RATE for j in range(streams)]


# --- feeders (child processes) -----------------------------------------------------------------

def feed(conn: multiprocessing.connection.Connection, params: dict[str, Any]) -> None:
    import bench  # noqa: F401  the repository root on sys.path in a spawned child

    run = _feed_ours if params["design"] == "ours" else _feed_baseline
    asyncio.run(run(conn, params))


async def _recv(conn: multiprocessing.connection.Connection) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, conn.recv)


async def _feed_ours(conn: multiprocessing.connection.Connection, params: dict[str, Any]) -> None:
    from bench.sse_client import marker
    from redis_stream_response_handler import Retention, RunLog, WritePolicy
    from streaming.redis_clients import connect

    log = RunLog(connect(params["redis_url"]), Retention())
    durable_us = _time_appends(log)
    conversations: list[str] = params["conversations"]
    for start in range(0, len(conversations), 200):
        await asyncio.gather(*(log.open_run(c, "run-1") for c in conversations[start:start + 200]))
    writers = [log.writer(c, "run-1", WritePolicy()) for c in conversations]
    while any(w.attempt is None for w in writers):  # noqa: ASYNC110  RunWriter exposes no event for it
        await asyncio.sleep(0.01)
    conn.send("ready")
    _, t0, seconds = await _recv(conn)
    cpu0 = time.process_time()
    phases = _spread(len(writers))
    period = 1 / RATE
    end = t0 + seconds
    sent = index = rounds = since_yield = 0
    while True:
        due = t0 + phases[index] + rounds * period
        if due >= end:
            break
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
            since_yield = 0
        elif since_yield >= 20:  # behind schedule: still let the writers' flush tasks run
            await asyncio.sleep(0)
            since_yield = 0
        writers[index].add(marker())
        sent += 1
        since_yield += 1
        index += 1
        if index == len(writers):
            index, rounds = 0, rounds + 1
    fed_seconds = time.monotonic() - t0
    await asyncio.wait_for(asyncio.gather(*(w.finish("done") for w in writers)), 60)
    conn.send({"sent": sent, "fed_seconds": fed_seconds, "flushes": sum(w.flushes for w in writers),
               "cpu_seconds": time.process_time() - cpu0, "durable_us": durable_us.tobytes()})
    await log.redis.aclose()


def _time_appends(log: Any) -> array:
    """Per chunk, send -> its append acknowledged by Redis: the write stage of the delivery latency."""
    from bench.sse_client import markers_in

    samples = array("q")
    append = log.append

    async def timed(conversation_id: str, correlation_id: str, attempt: Any, entries: Any, **options: Any) -> str:
        status = await append(conversation_id, correlation_id, attempt, entries, **options)
        now = time.monotonic_ns()
        for kind, text in entries:
            if kind == "message":
                samples.extend((now - sent) // 1000 for sent in markers_in(text.encode()))
        return status

    log.append = timed
    return samples


async def _feed_baseline(conn: multiprocessing.connection.Connection, params: dict[str, Any]) -> None:
    from bench.baseline import BaselineWriter
    from bench.sse_client import marker

    writer = BaselineWriter(params["redis_url"])
    conversations: list[str] = params["conversations"]
    conn.send("ready")
    _, t0, seconds = await _recv(conn)
    cpu0 = time.process_time()
    phases = _spread(len(conversations))
    period = 1 / RATE
    end, hard_stop = t0 + seconds, t0 + 2 * seconds  # a model slowed by its writes stops at 2x the time
    sent = 0

    async def stream(j: int, conversation_id: str) -> None:
        nonlocal sent
        sequence = 0
        while True:
            due = t0 + phases[j] + sequence * period
            now = time.monotonic()
            if due >= end or now >= hard_stop:
                break
            if due > now:
                await asyncio.sleep(due - now)
            await writer.write_chunk(conversation_id, marker(), sequence)
            sequence += 1
            sent += 1
        await writer.write_completion(conversation_id, sequence)

    await asyncio.gather(*(stream(j, c) for j, c in enumerate(conversations)), return_exceptions=True)
    conn.send({"sent": sent, "fed_seconds": time.monotonic() - t0, "flushes": sent,
               "cpu_seconds": time.process_time() - cpu0})


# --- readers (child processes) -----------------------------------------------------------------

def read(conn: multiprocessing.connection.Connection, params: dict[str, Any]) -> None:
    import bench  # noqa: F401

    asyncio.run(_read(conn, params))


async def _read(conn: multiprocessing.connection.Connection, params: dict[str, Any]) -> None:
    from bench.sse_client import open_streams

    latencies = array("q")
    clients = await open_streams(params["host"], params["port"], params["paths"], latencies,
                                 sse=params["sse"], within_seconds=120)
    bad = sum(1 for c in clients if c.status not in (0, 200))
    conn.send("ready")
    _, until = await _recv(conn)
    cpu0 = time.process_time()
    pending = [c.done for c in clients]
    try:
        await asyncio.wait_for(asyncio.gather(*pending), max(until - time.monotonic(), 0.1))
    except TimeoutError:
        pass
    finished = sum(1 for c in clients if c.done.done())
    for client in clients:
        client.close()
    conn.send({"latencies_us": latencies.tobytes(), "finished": finished, "opened": len(clients), "bad": bad,
               "cpu_seconds": time.process_time() - cpu0})


# --- the measurement (bench process) -----------------------------------------------------------

def measure(design: str, redis_url: str, host_url: str, streams: int, seconds: float,
            pids: dict[str, int] | None = None) -> dict[str, Any]:
    """One run; `pids` (e.g. host, redis) get their CPU use over the run reported too."""
    parts = urlsplit(host_url)
    conversations = [new_id("d" if design == "ours" else "bd") for _ in range(streams)]
    feeders_n = min(MAX_FEEDERS, math.ceil(streams / STREAMS_PER_FEEDER))
    readers_n = math.ceil(streams / READERS_PER_PROCESS)
    run_query = "?run=run-1" if design == "ours" else ""
    workers: list[Worker] = []
    try:
        feeders = [Worker(feed, {"design": design, "redis_url": redis_url,
                                 "conversations": conversations[i::feeders_n]}) for i in range(feeders_n)]
        workers += feeders
        for feeder in feeders:
            assert feeder.recv(120) == "ready"
        readers = [Worker(read, {"host": parts.hostname, "port": parts.port, "sse": design == "ours",
                                 "paths": [f"/api/agent/stream/{c}{run_query}" for c in conversations[i::readers_n]]})
                   for i in range(readers_n)]
        workers += readers
        for reader in readers:
            assert reader.recv(180) == "ready"
        time.sleep(0.3 + streams / 2000)  # let the host's subscriptions settle
        t0 = time.monotonic() + 0.3
        cpu0 = {name: cpu_seconds(pid) for name, pid in (pids or {}).items()}
        machine0 = machine_busy_seconds()
        grace = 15.0 if design == "ours" else seconds + 15.0
        for feeder in feeders:
            feeder.send(("go", t0, seconds))
        for reader in readers:
            reader.send(("until", t0 + seconds + grace))
        fed = [feeder.recv(3 * seconds + 90) for feeder in feeders]
        gathered = [reader.recv(seconds + grace + 60) for reader in readers]
        cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in (pids or {}).items()}
        machine = machine_busy_seconds() - machine0
    finally:
        for worker in workers:
            worker.stop()
    latencies = array("q")
    for part in gathered:
        latencies.frombytes(part["latencies_us"])
    sent = sum(f["sent"] for f in fed)
    durable = array("q")
    for part in fed:
        durable.frombytes(part.get("durable_us", b""))
    fed_seconds = max(f["fed_seconds"] for f in fed)
    values = latencies.tolist()
    cpu_use = {**{k: round(v, 2) for k, v in cpu.items()},
               "feeders": round(sum(f["cpu_seconds"] for f in fed), 2),
               "readers": round(sum(r["cpu_seconds"] for r in gathered), 2)}
    # Everything else the machine ran meanwhile (it is shared): busy CPU not spent by the processes above.
    cpu_use["others"] = round(max(machine - sum(cpu_use.values()), 0.0), 2)
    return {
        "streams": streams,
        "seconds": seconds,
        "sent": sent,
        "received": len(values),
        "lost": sent - len(values),
        "offered_per_s": streams * RATE,
        "fed_per_s": sent / fed_seconds if fed_seconds else math.nan,
        "delivered_per_s": len(values) / fed_seconds if fed_seconds else math.nan,
        "streams_finished": sum(r["finished"] for r in gathered),
        "bad_responses": sum(r["bad"] for r in gathered),
        "p50_ms": percentile(values, 50) / 1000,
        "p99_ms": percentile(values, 99) / 1000,
        "max_ms": (max(values) / 1000) if values else math.nan,
        "write_stage_p50_ms": percentile(durable, 50) / 1000,
        "write_stage_p99_ms": percentile(durable, 99) / 1000,
        "cpu_seconds": cpu_use,
    }
