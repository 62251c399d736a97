"""Figure 6, runs end to end: N runs started at once through the real host, each read by its own SSE client.

The host runs as `make run` runs it (`python -m travelplanner`, HOST_ROLE=all:
a supervisor with a web process, one worker process per core and the embedded
durable backend) with its defaults, against the bench Redis, the offline model
at its default 40 chunks/s. Load-generator processes (one per 250 runs, at
most 4) each start their runs at the same instant: one connection per run,
`POST /api/agents/TravelPlanner/run`, then the 202's stream_url on the same
connection, read to the run's terminal event (`bench/run_client.py`). After
every run of a level has ended, each generator reads every run's stream again
from its start and compares it with what arrived live: an id missing from the
live read is a lost chunk, an id that arrived twice a doubled one.

The baseline is the host as it was before the scale work (commit b29764a:
one process, the default thread pool), checked out into a temporary folder
and started the same way.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing.connection
import os
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench import ROOT
from bench.processes import LOG_DIR, Worker, cpu_seconds, machine_busy_seconds, our_host
from bench.stats import percentile
from testing.hosts import ServerProcess, StandaloneHost, free_port
from testing.procnet import process_tree

BASELINE_COMMIT = "b29764a"
MESSAGE = "Plan a 3-day trip to Lisbon"
CHUNKS_PER_SECOND = "40"
RUNS_PER_GENERATOR = 250
MAX_GENERATORS = 4
MAX_CONCURRENT_RUNS = 256  # the host's default per worker process: "no run waits for another" is judged up to it
# What the test harness sets for cheap test hosts, and make run does not: the bench runs make run's defaults.
_TEST_ONLY = ("WORKER_PROCESSES", "SHUTDOWN_GRACE_SECONDS")


# --- the hosts ---------------------------------------------------------------------------------

@contextmanager
def ours(redis_url: str) -> Iterator[StandaloneHost]:
    host = our_host(redis_url, OFFLINE_MODEL_CHUNKS_PER_SECOND=CHUNKS_PER_SECOND)
    assert host.env is not None
    for name in _TEST_ONLY:
        host.env.pop(name, None)
    with host:
        yield host


def baseline_available() -> bool:
    """Whether this checkout holds BASELINE_COMMIT (a shallow clone does not)."""
    return subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{BASELINE_COMMIT}^{{commit}}"],
                          capture_output=True).returncode == 0


@contextmanager
def baseline(redis_url: str) -> Iterator[ServerProcess]:
    """`python -m travelplanner` as of BASELINE_COMMIT, from a temporary checkout, same Redis, same settings."""
    with tempfile.TemporaryDirectory(prefix="bench-baseline-host-") as folder:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", BASELINE_COMMIT], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        template = our_host(redis_url, OFFLINE_MODEL_CHUNKS_PER_SECOND=CHUNKS_PER_SECOND)
        assert template.env is not None
        env = {k: v for k, v in template.env.items() if k not in _TEST_ONLY}
        port = free_port()
        env["PORT"], env["DATA_DIR"] = str(port), str(Path(folder) / ".data")
        host = ServerProcess([sys.executable, "-m", "travelplanner"], port=port, env=env, cwd=Path(folder),
                             log_path=LOG_DIR / f"bench-baseline-runs-{os.getpid()}.log")
        with host:
            yield host


# --- load generators (child processes) ---------------------------------------------------------

def generate(conn: multiprocessing.connection.Connection, params: dict[str, Any]) -> None:
    import bench  # noqa: F401  the repository root on sys.path in a spawned child

    asyncio.run(_generate(conn, params))


async def _generate(conn: multiprocessing.connection.Connection, params: dict[str, Any]) -> None:
    from bench.run_client import RunOutcome, run_once

    host, port, runs = params["host"], params["port"], params["runs"]
    conn.send("ready")
    _, t0, within = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    await asyncio.sleep(max(t0 - time.monotonic(), 0))
    cpu0 = time.process_time()
    outcomes = [RunOutcome() for _ in range(runs)]
    tasks = [asyncio.create_task(run_once(host, port, MESSAGE, outcome)) for outcome in outcomes]
    _, late = await asyncio.wait(tasks, timeout=within)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    cpu = time.process_time() - cpu0
    lost, doubled, garbled = await _check(host, port, outcomes)
    delivery = array("q")
    for outcome in outcomes:
        delivery.extend(outcome.delivery_us)
    conn.send({
        "post_ns": [o.accepted_ns - o.started_ns if o.accepted_ns else -1 for o in outcomes],
        "post_status": [o.post_status for o in outcomes],
        "started_ns": [o.started_ns for o in outcomes],
        "first_event_ns": [o.first_event_ns for o in outcomes],
        "first_ns": [o.first_message_ns for o in outcomes],
        "ended_ns": [o.ended_ns for o in outcomes],
        "terminal": [o.terminal for o in outcomes],
        "messages": [sum(1 for e in o.events if e.kind == "message") for o in outcomes],
        "unfinished": [f"POST {o.post_status}, stream {o.stream_status}, {len(o.events)} events" for o in outcomes
                       if o.post_status == 202 and not o.terminal],
        "delivery_us": delivery.tobytes(),
        "lost": lost, "doubled": doubled, "garbled": garbled,
        "cpu_seconds": cpu,
    })


async def _check(host: str, port: int, outcomes: list[Any]) -> tuple[int, int, int]:
    """Every run's stream read again from its start: (ids missed live, ids seen twice live, runs whose text differs)."""
    from bench.run_client import RunOutcome, run_once

    gate = asyncio.Semaphore(50)
    lost = doubled = garbled = 0

    async def one(outcome: RunOutcome) -> None:
        nonlocal lost, doubled, garbled
        again = RunOutcome()
        async with gate:
            await asyncio.wait_for(run_once(host, port, "", again, stream_url=outcome.stream_url), 60)
        live = [e.id for e in outcome.events]
        lost += len({e.id for e in again.events} - set(live))
        doubled += len(live) - len(set(live))
        if _text(outcome.events) != _text(again.events):
            garbled += 1

    await asyncio.gather(*(one(o) for o in outcomes if o.stream_url and o.terminal))
    return lost, doubled, garbled


def _text(events: list[Any]) -> str:
    return "".join(e.data for e in events if e.kind == "message")


# --- the host's processes, seen from outside -----------------------------------------------------

def role_of(pid: int, root: int) -> str:
    if pid == root:
        return "supervisor"
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            for item in environ.read().split(b"\0"):
                if item.startswith(b"HOST_ROLE="):
                    return item[10:].decode()
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return Path(cmdline.read().split(b"\0")[0].decode()).name or "other"
    except OSError:
        return "gone"


def _usage(pid: int) -> tuple[float, int]:
    """(CPU seconds, RSS bytes) of one process; (0, 0) once it has ended."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[21]) * os.sysconf("SC_PAGE_SIZE")


class TreeWatch:
    """CPU seconds and peak RSS per process of a process tree, sampled while a level runs."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.start = {pid: _usage(pid)[0] for pid in process_tree(root)}
        self.names = {pid: role_of(pid, root) for pid in self.start}
        self.peak_rss: dict[int, int] = {}
        self.last_cpu: dict[int, float] = dict(self.start)

    def sample(self) -> None:
        for pid in process_tree(self.root):
            if pid not in self.names:
                self.names[pid] = role_of(pid, self.root)
                self.start.setdefault(pid, 0.0)
            cpu, rss = _usage(pid)
            if rss:
                self.last_cpu[pid] = cpu
                self.peak_rss[pid] = max(self.peak_rss.get(pid, 0), rss)

    def per_process(self) -> dict[str, dict[str, float]]:
        """{"worker 1": {"cpu_seconds": …, "peak_rss_mib": …}, …}, in the order the processes were seen."""
        out: dict[str, dict[str, float]] = {}
        counts: dict[str, int] = {}
        for pid, name in self.names.items():
            counts[name] = counts.get(name, 0) + 1
            label = name if name == "supervisor" else f"{name} {counts[name]}"
            out[label] = {"cpu_seconds": round(self.last_cpu.get(pid, 0.0) - self.start.get(pid, 0.0), 2),
                          "peak_rss_mib": round(self.peak_rss.get(pid, 0) / 2**20, 1)}
        return out


# --- the measurement (bench process) -----------------------------------------------------------

def warm_up(host_url: str) -> None:
    """One run before measuring: imports, the first durable orchestration, the agent's set-up."""
    measure(host_url, 1, None, within=120)


def measure(host_url: str, runs: int, host_pid: int | None, *, redis_pid: int | None = None,
            within: float | None = None) -> dict[str, Any]:
    parts = urlsplit(host_url)
    within = within or 120 + runs * 0.15
    n = min(MAX_GENERATORS, math.ceil(runs / RUNS_PER_GENERATOR))
    shares = [runs // n + (1 if i < runs % n else 0) for i in range(n)]
    generators: list[Worker] = []
    try:
        generators = [Worker(generate, {"host": parts.hostname, "port": parts.port, "runs": share})
                      for share in shares]
        for generator in generators:
            assert generator.recv(120) == "ready"
        watch = TreeWatch(host_pid) if host_pid else None
        machine0, redis0 = machine_busy_seconds(), cpu_seconds(redis_pid) if redis_pid else 0.0
        t0 = time.monotonic() + 0.2
        for generator in generators:
            generator.send(("go", t0, within))
        gathered: list[dict[str, Any]] = []
        waiting = list(generators)
        while waiting:
            for generator in [g for g in waiting if g.poll()]:
                waiting.remove(generator)
                try:
                    gathered.append(generator.recv(1))
                except EOFError:
                    generator.process.join(5)
                    raise RuntimeError(f"a load generator ended without its results (exit code "
                                       f"{generator.process.exitcode})") from None
            if watch:
                watch.sample()
            time.sleep(0.25)
            if time.monotonic() > t0 + within + 300:
                raise TimeoutError(f"{runs} runs: the load generators did not report within {within + 300:.0f} s")
        machine = machine_busy_seconds() - machine0
        redis_cpu = cpu_seconds(redis_pid) - redis0 if redis_pid else math.nan
    finally:
        for generator in generators:
            generator.stop()
    return _summarise(runs, t0, gathered, watch, machine, redis_cpu)


def _summarise(runs: int, t0: float, parts: list[dict[str, Any]], watch: TreeWatch | None,
               machine: float, redis_cpu: float) -> dict[str, Any]:
    def joined(key: str) -> list[Any]:
        return [value for part in parts for value in part[key]]

    status, post_ns, started = joined("post_status"), joined("post_ns"), joined("started_ns")
    first, ended, terminal, messages = joined("first_ns"), joined("ended_ns"), joined("terminal"), joined("messages")
    delivery = array("q")
    for part in parts:
        delivery.frombytes(part["delivery_us"])
    accepted = [i for i, s in enumerate(status) if s == 202]
    done = [i for i in accepted if terminal[i] == "done"]
    first_ms = [(first[i] - started[i]) / 1e6 for i in accepted if first[i]]
    first_event = joined("first_event_ns")
    first_event_ms = [(first_event[i] - started[i]) / 1e6 for i in accepted if first_event[i]]
    t0_ns = int(t0 * 1e9)
    last_end = max((ended[i] for i in done), default=0)
    wall = (last_end - t0_ns) / 1e9 if last_end else math.nan
    first_end = min((ended[i] for i in done), default=0)
    waited = sum(1 for i in accepted if not first[i] or (first_end and first[i] > first_end))
    chunks = len(delivery)
    per_process = watch.per_process() if watch else {}
    host_cpu = sum(p["cpu_seconds"] for p in per_process.values())
    generators_cpu = sum(part["cpu_seconds"] for part in parts)
    refused = {str(s): status.count(s) for s in sorted(set(status)) if s != 202}
    errors = {
        "refused": len(status) - len(accepted),
        "error_events": sum(1 for i in accepted if terminal[i] in ("error", "cancelled")),
        "unfinished": sum(1 for i in accepted if not terminal[i]),
        "lost": sum(part["lost"] for part in parts),
        "doubled": sum(part["doubled"] for part in parts),
        "garbled": sum(part["garbled"] for part in parts),
    }
    return {
        "runs": runs,
        "accepted": len(accepted),
        "completed": len(done),
        "refused_by_status": refused,
        "unfinished_runs": joined("unfinished")[:20],  # what their clients saw
        "errors": errors,
        "error_count": sum(errors.values()),
        "lost_or_doubled": errors["lost"] + errors["doubled"],
        "post_p50_ms": percentile([post_ns[i] / 1e6 for i in range(len(status)) if post_ns[i] >= 0], 50),
        "post_p99_ms": percentile([post_ns[i] / 1e6 for i in range(len(status)) if post_ns[i] >= 0], 99),
        "first_event_p50_ms": percentile(first_event_ms, 50),
        "first_event_p99_ms": percentile(first_event_ms, 99),
        "first_p50_ms": percentile(first_ms, 50),
        "first_p99_ms": percentile(first_ms, 99),
        "delivery_p50_ms": percentile(delivery, 50) / 1000,
        "delivery_p99_ms": percentile(delivery, 99) / 1000,
        "delivery_max_ms": max(delivery) / 1000 if chunks else math.nan,
        "chunks": chunks,  # message events: chunks the writer merged into one entry are one event
        "chunks_per_run_max": max(messages, default=0),
        "chunks_per_run_min": min((messages[i] for i in done), default=0),
        "seconds": round(wall, 2),
        "runs_per_s": len(done) / wall if last_end else math.nan,
        "waited": waited,
        "no_run_waits": waited == 0,
        "host_cpu_seconds": round(host_cpu, 2),
        "cpu_per_chunk_ms": host_cpu / chunks * 1000 if chunks else math.nan,
        "cpu_per_run_ms": host_cpu / len(done) * 1000 if done else math.nan,
        "processes": per_process,
        "generators_cpu_seconds": round(generators_cpu, 2),
        "generators": len(parts),
        "redis_cpu_seconds": round(redis_cpu, 2),
        # Everything else the (shared) machine ran meanwhile.
        "others_cpu_seconds": round(max(machine - host_cpu - generators_cpu - (redis_cpu if redis_cpu == redis_cpu
                                                                                 else 0.0), 0.0), 2),
    }


def per_model_chunk(measured: dict[str, list[dict[str, Any]]]) -> None:
    """Give each result its CPU per chunk the model yielded, not per entry written.

    Every run answers the same request with the same number of chunks; a writer that falls behind merges
    the chunks waiting for it into one entry, so under load a run has fewer events than chunks. A lone run
    writes each chunk as its own entry: its event count is the chunk count.
    """
    lone = measured.get("1", [])
    per_run = max((result["chunks_per_run_max"] for result in lone), default=0)
    for results in measured.values():
        for result in results:
            model_chunks = per_run * result["completed"]
            result["model_chunks_per_run"] = per_run
            result["cpu_per_chunk_ms"] = result["host_cpu_seconds"] / model_chunks * 1000 if model_chunks else math.nan
