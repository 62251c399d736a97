"""The chaos run: many concurrent sessions and injected failures against one real host and one real Redis.

A session is one run of the agent and one client that reads it to its
terminal event the hard way: it hangs up at uniformly random byte offsets
(mid-event included), waits a random while, and resumes from the id of the
last event it fully received, alternating `Last-Event-ID` and `?cursor=`.
Then it reads the run again uninterrupted (SSE, or plain text for some) and
the checks compare. Every random choice comes from the seed; what the
machine's timing does with them is the chaos.

Faults: overlapping redeliveries and failing models are executed in this
process through the product's `RecordedAgent` (as a second durable worker
would); Redis is frozen (SIGSTOP) once and restarted twice (persistent, same
port); the host is killed (SIGKILL) and restarted once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import re
import sys
import tempfile
import textwrap
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis as sync_redis
from redis.exceptions import RedisError

from redis_stream_response_handler import (
    KEY_PREFIX,
    Liveness,
    Retention,
    RunLog,
    WritePolicy,
    meta_key,
    normalize_newlines,
    stream_key,
)
from streaming.redis_clients import connect
from testing import procnet
from testing.hosts import StandaloneHost, free_port
from testing.scripted_model import Execution, ScriptedModel, execute
from testing.sse import ReceivedEvent, SSEStream, reassemble, terminals
from travelplanner.embedded_redis import EmbeddedRedis

AGENT = "TravelPlanner"
PLAIN_ENDED_EARLY = re.compile(r"\n\[Ended early: [^\n]*\]\n\Z")
MESSAGES = ("Plan 3 days in Tokyo", "Plan 2 days in Paris", "Plan 4 days in Rome", "Plan 1 day in Oslo",
            "Plan 5 days in Kyoto")
STALL_SECONDS = 5.0  # the host's STREAM_STALL_SECONDS: a killed host's runs end this long after
OUTAGE_SECONDS = 4.0  # REDIS_OUTAGE_SECONDS, kept below the stall time (a live writer is never taken for dead)
HOST_ENV = {
    "STREAM_STALL_SECONDS": str(STALL_SECONDS),
    "REDIS_OUTAGE_SECONDS": str(OUTAGE_SECONDS),
    "STREAM_START_SECONDS": "30",  # runs queued in a killed host's embedded backend end after this
    "STREAM_MAX_SECONDS": "8",  # response windows end too: one more way to resume
    "STREAM_HEARTBEAT_SECONDS": "1",
    "REDIS_WRITE_COALESCE_MS": "20",
    "LOG_LEVEL": "WARNING",
}
RETENTION = Retention(ttl_seconds=600, maxlen=20000)
POLICY = WritePolicy(coalesce_seconds=0.02, outage_seconds=OUTAGE_SECONDS,
                     liveness=Liveness(stall_seconds=STALL_SECONDS))
CLOSE_GRACE = 5.0  # a response must end this soon after its terminal event
FAILURE_COLUMNS = ("text_mismatch", "gaps", "duplicate_ids", "bad_terminal_count", "open_after_terminal",
                   "unfinished", "server_errors", "unexpected_status", "keys_without_ttl", "leaked_connections",
                   "leaked_readers", "crashes")


@dataclass(frozen=True)
class Config:
    sessions: int = 300
    seed: int = 1
    concurrency: int = 40
    arrivals_per_second: float = 8.0
    pace: float = 150.0  # the host's offline model, chunks per second
    faults: bool = True
    session_seconds: float = 120.0  # a session still without its terminal event after this is "unfinished"
    data_dir: Path | None = None
    verbose: bool = False


@dataclass
class Tally:
    counts: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def fail(self, name: str, note: str, n: int = 1) -> None:
        self.counts[name] += n
        if len(self.notes) < 40:
            self.notes.append(f"{name}: {note}")


class Environment:
    """The persistent Redis and the host, with the faults that can be done to them."""

    def __init__(self, config: Config, data_dir: Path) -> None:
        self.redis = EmbeddedRedis(data_dir, port=free_port(), persistent=True)
        env = {**HOST_ENV, "OFFLINE_MODEL_CHUNKS_PER_SECOND": str(config.pace)}
        self.host = StandaloneHost(self.redis.url, env, port=free_port(), log_path=data_dir / "host.log")
        self.redis_up = asyncio.Event()
        self.host_up = asyncio.Event()

    async def start(self) -> None:
        await asyncio.to_thread(self.redis.start)
        self.redis_up.set()
        await asyncio.to_thread(self.host.start)
        self.host_up.set()

    async def stop(self) -> None:
        await asyncio.to_thread(self.host.stop)
        await asyncio.to_thread(self.redis.stop)

    def redis_pid(self) -> int:
        with sync_redis.Redis(port=self.redis.port) as client:
            return int(client.info("server")["process_id"])

    async def freeze_redis(self, seconds: float) -> None:
        import os
        import signal

        pid = self.redis_pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)

    async def restart_redis(self, down_seconds: float) -> None:
        self.redis_up.clear()
        await asyncio.to_thread(self.redis.stop)
        await asyncio.sleep(down_seconds)
        await asyncio.to_thread(self.redis.start)
        self.redis_up.set()

    async def kill_host(self) -> None:
        self.host_up.clear()
        await asyncio.to_thread(self.host.kill)
        await asyncio.to_thread(self.host.start)
        self.host_up.set()


@dataclass
class Session:
    index: int
    kind: str  # host, redeliver, cancel, fail, fallback
    rng: random.Random
    message: str
    conversation_id: str = ""
    correlation_id: str = ""
    url: str = ""
    received: list[ReceivedEvent] = field(default_factory=list)
    injected: Execution | None = None
    injected_model: ScriptedModel | None = None
    injected_done: asyncio.Event = field(default_factory=asyncio.Event)


class Chaos:
    def __init__(self, config: Config, env: Environment, redis: Any) -> None:
        self.config = config
        self.env = env
        self.redis = redis  # the chaos process's own client (shared by its executions)
        self.tally = Tally()
        self.canonical: dict[str, str] = {}
        self.sessions: list[Session] = []
        self.executions: set[asyncio.Task[None]] = set()

    # --- HTTP, tolerant of the faults we cause ----------------------------------------

    async def _retrying(self, call: Any, what: str) -> httpx.Response:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = await call()
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code != 503:
                return response
            if response is not None:
                self.tally.add("expected_503")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: no answer for 60 s")
            await asyncio.sleep(0.2)

    async def _redis_call(self, call: Any) -> Any:
        """This process's own Redis reads, through the restarts it causes (bounded: 60 s)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                return await call()
            except (RedisError, OSError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def start_run(self, client: httpx.AsyncClient, session: Session) -> None:
        if session.kind in ("fail", "fallback"):
            session.conversation_id, session.correlation_id = f"chaos-{uuid.uuid4().hex}", uuid.uuid4().hex
            # What POST /run does first: readers can attach at once.
            await self._redis_call(lambda: RunLog(self.redis, RETENTION).open_run(session.conversation_id,
                                                                                  session.correlation_id))
        else:
            url = f"/api/agents/{AGENT}/run"
            response = await self._retrying(lambda: client.post(url, content=session.message), "POST /run")
            if response.status_code != 202:
                raise RuntimeError(f"POST /run answered {response.status_code}: {response.text[:200]}")
            body = response.json()
            session.conversation_id, session.correlation_id = body["conversation_id"], body["correlation_id"]
        session.url = f"/api/agent/stream/{session.conversation_id}?run={session.correlation_id}"

    def inject(self, session: Session) -> None:
        """Run an attempt of the session's run in this process: a redelivery, or a model that fails."""
        rng = session.rng
        tag = session.correlation_id[:8]
        chunks = [f"[{tag}] line {i}: {'é' * rng.randint(0, 3)} {rng.choice(['ok', 'fine', '🗼'])}\n"
                  for i in range(rng.randint(20, 80))]
        if session.kind == "fail":
            model = ScriptedModel(chunks, chunks_per_second=100, fail_stream_after=rng.randint(0, 15), fail_whole=True)
        elif session.kind == "fallback" or rng.random() < 0.3:
            model = ScriptedModel(chunks, chunks_per_second=100, fail_stream_after=rng.randint(0, 15),
                                  whole_text=f"[{tag}] the complete answer\r\n" + "".join(chunks))
        else:
            model = ScriptedModel(chunks, chunks_per_second=100)
        session.injected_model = model
        delay = rng.uniform(0.05, 1.5) if session.kind == "redeliver" else 0.0

        async def run() -> None:
            try:
                await asyncio.sleep(delay)
                session.injected = await execute(model, self.env.redis.url, session.conversation_id,
                                                 session.correlation_id, policy=POLICY, retention=RETENTION,
                                                 redis=self.redis, settle_seconds=OUTAGE_SECONDS + 30)
            finally:
                session.injected_done.set()

        task = asyncio.create_task(run())
        self.executions.add(task)
        task.add_done_callback(self.executions.discard)

    # --- Reading ------------------------------------------------------------------

    async def read(self, client: httpx.AsyncClient, session: Session, *, cursor: str | None, header: bool,
                   cut: int | None) -> tuple[int, SSEStream, bool]:
        """One GET; returns (status, parsed, the server ended it). Checks the end follows the terminal event."""
        headers = {"Last-Event-ID": cursor} if cursor and header else {}
        params = {"run": session.correlation_id} | ({"cursor": cursor} if cursor and not header else {})
        parsed = SSEStream()
        received = 0
        terminal_at: float | None = None
        url = f"/api/agent/stream/{session.conversation_id}"
        async with asyncio.timeout(30), client.stream("GET", url, params=params, headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
                return response.status_code, parsed, True
            tail = b""  # the last bytes received: does the cut fall between two events, or inside one?
            async for piece in response.aiter_raw():
                if cut is not None and received + len(piece) >= cut:
                    piece = piece[: cut - received]
                    parsed.feed(piece)
                    self.tally.add("cuts")
                    if not (tail + piece).endswith(b"\n\n"):
                        self.tally.add("cuts_mid_event")
                    return 200, parsed, False
                received += len(piece)
                tail = (tail + piece)[-2:]
                fresh = parsed.feed(piece)
                if any(event.terminal for event in fresh):
                    terminal_at = time.monotonic()
        if terminal_at is not None and time.monotonic() - terminal_at > CLOSE_GRACE:
            self.tally.fail("open_after_terminal", f"session {session.index}: response open "
                            f"{time.monotonic() - terminal_at:.1f} s after its terminal event")
        return 200, parsed, True

    async def follow(self, client: httpx.AsyncClient, session: Session) -> None:
        rng = session.rng
        cursor: str | None = None
        deadline = time.monotonic() + self.config.session_seconds
        reads = 0
        while time.monotonic() < deadline:
            header = reads % 2 == 0 if rng.random() < 0.8 else rng.random() < 0.5
            cut = rng.randint(0, 9000) if rng.random() < 0.75 else None
            reads += 1
            try:
                status, parsed, _ = await self.read(client, session, cursor=cursor, header=header, cut=cut)
            except (httpx.TransportError, TimeoutError):
                self.tally.add("transport_errors")  # the host restarting, or a Redis freeze
                await asyncio.sleep(rng.uniform(0.05, 0.5))
                continue
            if status >= 500 and status != 503:
                self.tally.fail("server_errors", f"session {session.index}: GET answered {status}")
            elif status == 503:
                self.tally.add("expected_503")
            elif status != 200:
                self.tally.fail("unexpected_status", f"session {session.index}: GET answered {status}")
            if status != 200:
                await asyncio.sleep(rng.uniform(0.1, 0.5))
                continue
            self.tally.add("reads_header" if header and cursor else "reads_cursor" if cursor else "reads_start")
            if cursor:
                self.tally.add("resumes")
            session.received += parsed.events
            cursor = parsed.last_id or cursor
            if session.received and session.received[-1].terminal:
                return
            await asyncio.sleep(rng.uniform(0, 0.4))
        self.tally.fail("unfinished", f"session {session.index} ({session.kind}): no terminal event after "
                        f"{self.config.session_seconds:.0f} s; got {[e.kind for e in session.received][-3:]}")

    async def cancel(self, client: httpx.AsyncClient, session: Session, *, after: float) -> None:
        await asyncio.sleep(after)
        url = f"/api/agent/stream/{session.conversation_id}/cancel"
        answer = await self._retrying(lambda: client.post(url, params={"run": session.correlation_id}), "cancel")
        self.tally.add("cancelled" if answer.status_code == 200 else f"cancel_{answer.status_code}")

    async def verify(self, client: httpx.AsyncClient, session: Session) -> None:
        """An uninterrupted read (or plain text), then every check a session can fail."""
        whole: list[ReceivedEvent] = []
        cursor: str | None = None
        for _ in range(10):
            try:
                status, parsed, _ = await self.read(client, session, cursor=cursor, header=True, cut=None)
            except (httpx.TransportError, TimeoutError):
                await asyncio.sleep(0.3)
                continue
            if status != 200:
                await asyncio.sleep(0.3)
                continue
            whole += parsed.events
            cursor = parsed.last_id or cursor
            if whole and whole[-1].terminal:
                break
        ids = [event.id for event in session.received]
        whole_ids = [event.id for event in whole]
        duplicates = len(ids) - len(set(ids))
        if duplicates:
            self.tally.fail("duplicate_ids", f"session {session.index}: {duplicates} ids received twice", duplicates)
        missing = len(set(whole_ids) - set(ids))
        if missing or (not duplicates and ids != whole_ids):
            self.tally.fail("gaps", f"session {session.index} ({session.kind}): {missing} events missed "
                            f"or out of order", max(missing, 1))
        text = reassemble(session.received)
        if text != reassemble(whole):
            self.tally.fail("text_mismatch", f"session {session.index}: resumed text differs from the whole read")
        self.check_answer(session, whole)
        if session.rng.random() < 0.3:
            await self.verify_plain(client, session, whole)
        entries = await self._redis_call(lambda: self.redis.xrange(stream_key(session.conversation_id)))
        ordinal = await self._redis_call(
            lambda: self.redis.hget(meta_key(session.conversation_id), f"run:{session.correlation_id}"))
        logged = [f["k"] for _, f in entries if f["r"] == ordinal and f["k"] in ("d", "e", "x")]
        if len(logged) != 1 or len(terminals(whole)) != 1:
            self.tally.fail("bad_terminal_count", f"session {session.index}: {len(logged)} terminal entries "
                            f"in the log, {len(terminals(whole))} read")
        if whole:
            self.tally.add(f"terminal_{whole[-1].kind}")
            if whole[-1].kind == "error":
                why = whole[-1].data
                if "stalled" in why:
                    self.tally.add(f"stalled_{session.kind}")
                self.tally.add("error_stalled" if "stalled" in why else "error_interrupted" if "interrupted" in why
                               else "error_agent" if why.startswith("the agent failed") else "error_other")
            self.tally.add("events", len(whole))

    def check_answer(self, session: Session, whole: list[ReceivedEvent]) -> None:
        """The final answer: the offline model's deterministic text, or the injected execution's."""
        text = reassemble(whole)
        kind = whole[-1].kind if whole else "none"
        canonical = self.canonical[session.message]
        injected = session.injected
        expected: str | None = None
        if session.kind in ("fail", "fallback"):
            model = session.injected_model
            assert model is not None
            if kind == "done":
                expected = normalize_newlines(model.whole_text if model.fail_stream_after is not None
                                              else "".join(model.chunks))
            elif kind == "error" and "the model is overloaded" in whole[-1].data:
                expected = "".join(model.chunks[: model.fail_stream_after])
        elif session.kind == "redeliver" and injected is not None and injected.writer is not None:
            writer = injected.writer
            if kind == "done" and writer.fenced is None and writer.interrupted is None:
                expected = normalize_newlines(injected.text or "")  # the injected attempt is the final one
            elif kind == "done" and writer.fenced is not None:
                expected = canonical  # the host's attempt won (it had ended, or replaced ours)
        elif kind == "done" and not any(e.kind == "reset" for e in whole):
            expected = canonical
        if expected is not None and text != expected:
            self.tally.fail("text_mismatch", f"session {session.index} ({session.kind}, {kind}): "
                            f"{len(text)} chars, expected {len(expected)}: {_first_difference(text, expected)}")
        elif expected is None and session.kind in ("host", "cancel") and not canonical.startswith(text):
            self.tally.fail("text_mismatch", f"session {session.index} ({session.kind}, {kind}): not a prefix of "
                            f"the answer: {_first_difference(text, canonical)}")

    async def verify_plain(self, client: httpx.AsyncClient, session: Session, whole: list[ReceivedEvent]) -> None:
        markers = {"done": "\n", "reset": "\n[Restarted: the text below replaces the text above]\n",
                   "cancelled": "\n[Cancelled]\n", "tool": "", "usage": ""}  # plain text shows no tool activity
        expected = "".join(e.data if e.kind == "message" else f"\n[Error: {e.data}]\n" if e.kind == "error"
                           else markers[e.kind] for e in whole)
        try:
            response = await client.get(session.url, headers={"Accept": "text/plain"}, timeout=30)
        except httpx.TransportError:
            return
        if response.status_code == 200:
            self.tally.add("reads_plain")
            text = response.content.decode("utf-8")
            cut = PLAIN_ENDED_EARLY.search(text)
            if cut:  # the response ended before the run did (a fault meanwhile), and said so: a prefix
                self.tally.add("plain_ended_early")
                text, expected = text[:cut.start()], expected[:cut.start()]
            if text != expected:
                self.tally.fail("text_mismatch", f"session {session.index}: plain text differs from SSE: "
                                f"{_first_difference(text, expected)}")

    # --- The run ------------------------------------------------------------------

    async def session(self, client: httpx.AsyncClient, session: Session) -> None:
        try:
            await self.start_run(client, session)
            if session.kind in ("redeliver", "fail", "fallback"):
                self.inject(session)
                self.tally.add(f"injected_{session.kind}")
            if session.kind == "cancel":  # while its reader comes and goes
                canceller = asyncio.create_task(self.cancel(client, session, after=session.rng.uniform(0.2, 2.0)))
            await self.follow(client, session)
            if session.kind == "cancel":
                await canceller
            if session.received and session.received[-1].terminal:
                if session.injected_model is not None:  # its outcome is judged once it is over
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(session.injected_done.wait(), 60)
                await self.verify(client, session)
        except Exception as error:  # noqa: BLE001 - counted, with the reason
            self.tally.fail("crashes", f"session {session.index} ({session.kind}): {type(error).__name__}: {error}")

    async def learn_canonical_answers(self, client: httpx.AsyncClient) -> None:
        """What an uninterrupted read of each message's run yields (the offline model is deterministic)."""
        for message in MESSAGES:
            probe = Session(-1, "host", random.Random(0), message)
            await self.start_run(client, probe)
            await self.follow_plainly(client, probe)
            self.canonical[message] = reassemble(probe.received)

    async def follow_plainly(self, client: httpx.AsyncClient, session: Session) -> None:
        cursor = None
        for _ in range(20):
            _, parsed, _ = await self.read(client, session, cursor=cursor, header=True, cut=None)
            session.received += parsed.events
            cursor = parsed.last_id or cursor
            if session.received and session.received[-1].terminal:
                return
        raise RuntimeError("a probe run did not finish")

    async def faults(self, expected_seconds: float) -> None:
        schedule = [(0.2, "freeze"), (0.4, "redis"), (0.6, "host"), (0.8, "redis")]
        started = time.monotonic()
        for fraction, fault in schedule:
            await asyncio.sleep(max(0.0, started + fraction * expected_seconds - time.monotonic()))
            if fault == "freeze":
                await self.env.freeze_redis(1.5)
                self.tally.add("redis_freezes")
            elif fault == "redis":
                await self.env.restart_redis(1.0)
                self.tally.add("redis_restarts")
            else:
                await self.env.kill_host()
                self.tally.add("host_kills")

    async def run(self) -> None:
        config = self.config
        rng = random.Random(config.seed)
        kinds = ["host"] * 60 + ["redeliver"] * 15 + ["cancel"] * 8 + ["fail"] * 9 + ["fallback"] * 8
        limits = httpx.Limits(max_connections=config.concurrency * 2, max_keepalive_connections=config.concurrency)
        async with httpx.AsyncClient(base_url=self.env.host.base_url, timeout=30, limits=limits) as client:
            await self.learn_canonical_answers(client)
            gate = asyncio.Semaphore(config.concurrency)
            expected_seconds = config.sessions / config.arrivals_per_second
            faults = asyncio.create_task(self.faults(expected_seconds)) if config.faults else None
            tasks = []
            for index in range(config.sessions):
                session = Session(index, rng.choice(kinds), random.Random(rng.getrandbits(64)), rng.choice(MESSAGES))
                self.sessions.append(session)
                await asyncio.sleep(rng.expovariate(config.arrivals_per_second))
                await gate.acquire()
                task = asyncio.create_task(self.session(client, session))
                task.add_done_callback(lambda _: gate.release())
                tasks.append(task)
                if config.verbose and index % 100 == 0:
                    print(f"  {index} sessions started, {dict(self.tally.counts)}", file=sys.stderr)
            await asyncio.gather(*tasks)
            if faults is not None:
                await faults
            if self.executions:
                await asyncio.wait(self.executions, timeout=60)
        self.tally.add("sessions", len(self.sessions))

    async def check_leaks(self) -> None:
        """After everyone has gone: keys without TTL, connections, readers still subscribed."""
        keys_without_ttl = 0
        async for key in self.redis.scan_iter(match=f"{KEY_PREFIX}*", count=1000):
            if await self.redis.ttl(key) == -1:
                keys_without_ttl += 1
        async for key in self.redis.scan_iter(count=1000):
            if not key.startswith(KEY_PREFIX):
                self.tally.fail("keys_without_ttl", f"a key outside the key space: {key[:80]}")
        if keys_without_ttl:
            self.tally.fail("keys_without_ttl", f"{keys_without_ttl} keys never expire", keys_without_ttl)
        await asyncio.sleep(6.5)  # longer than the tail's XREAD BLOCK (5 s): an idle tail stops reading
        clients = await self.redis.client_list()
        blocked = [c for c in clients if "b" in c.get("flags", "") and c.get("cmd") == "xread"]
        if blocked:
            self.tally.fail("leaked_readers", f"the host's tail is still blocked in XREAD for {len(blocked)} "
                            "readers with nobody connected", len(blocked))
        host_pid = self.env.host.process.pid if self.env.host.process else None
        for pid in procnet.process_tree(host_pid) if host_pid is not None else []:
            # Each process of the host's group: a pool per event loop (3) and, in a web process, the tail's one.
            ports = procnet.ports_connected_to(pid, self.env.redis.port)
            self.tally.counts["host_redis_connections"] += len(ports)
            bound = 3 + 1
            if len(ports) > bound:
                held = [f"{c.get('cmd')}(age {c.get('age')}s, idle {c.get('idle')}s)" for c in clients
                        if int(str(c.get("addr", ":0")).rsplit(":", 1)[1]) in ports]
                self.tally.fail("leaked_connections", f"process {pid} of the host holds {len(ports)} Redis "
                                f"connections: {', '.join(sorted(held))}", len(ports) - bound)
        open_http = procnet.connections_on(self.env.host.port)
        if open_http:
            self.tally.fail("leaked_connections", f"{open_http} HTTP connections still open on the host", open_http)
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                health = (await client.get(f"{self.env.host.base_url}/api/health")).json()
        except httpx.HTTPError:
            health = {}
        if "live_readers" in health:
            self.tally.counts["live_readers_reported"] = health["live_readers"]
            if health["live_readers"]:
                self.tally.fail("leaked_readers", f"health reports {health['live_readers']} live readers",
                                health["live_readers"])


def _first_difference(text: str, expected: str) -> str:
    at = next((i for i, (a, b) in enumerate(zip(text, expected, strict=False)) if a != b), min(len(text),
                                                                                              len(expected)))
    return f"first difference at {at}: got {text[at:at + 40]!r}, expected {expected[at:at + 40]!r}"


@dataclass
class Report:
    counts: Counter[str]
    notes: list[str]
    seconds: float

    @property
    def failures(self) -> int:
        return sum(self.counts[name] for name in FAILURE_COLUMNS)

    def line(self, config: Config) -> str:
        c = self.counts
        faults = (f"redeliveries={c['injected_redeliver']} model_failures={c['injected_fail']} "
                  f"fallbacks={c['injected_fallback']} cancels={c['cancelled']} redis_freezes={c['redis_freezes']} "
                  f"redis_restarts={c['redis_restarts']} host_kills={c['host_kills']}")
        seen = (f"events={c['events']} reads={c['reads_start'] + c['reads_header'] + c['reads_cursor']} "
                f"resumes={c['resumes']} (last-event-id={c['reads_header']} cursor={c['reads_cursor']}) "
                f"plain={c['reads_plain']} cuts={c['cuts']} mid_event={c['cuts_mid_event']} "
                f"503s={c['expected_503']} transport_errors={c['transport_errors']} "
                f"terminals(done/error/cancelled)={c['terminal_done']}/{c['terminal_error']}/{c['terminal_cancelled']} "
                f"errors(agent/stalled/interrupted/other)={c['error_agent']}/{c['error_stalled']}/"
                f"{c['error_interrupted']}/{c['error_other']} host_redis_connections={c['host_redis_connections']}")
        failures = " ".join(f"{name}={c[name]}" for name in FAILURE_COLUMNS)
        return (f"chaos seed={config.seed} sessions={c['sessions']} in {self.seconds:.0f}s | {seen} | {faults} | "
                f"FAILURES {failures}")


async def run_chaos(config: Config) -> Report:
    data_dir = Path(tempfile.mkdtemp(prefix="chaos-", dir=config.data_dir))
    env = Environment(config, data_dir)
    started = time.monotonic()
    await env.start()
    redis = connect(env.redis.url)
    redis.connection_pool.max_connections = 16  # type: ignore[attr-defined]  # shared by all injected attempts
    chaos = Chaos(config, env, redis)
    try:
        await chaos.run()
        await chaos.check_leaks()
    finally:
        with contextlib.suppress(Exception):
            await redis.aclose()
        await env.stop()
    tracebacks = distinct_tracebacks(env.host.log_path.read_text(errors="replace"))
    for traceback_text, times in tracebacks[:3]:  # in the output itself: CI keeps no files
        chaos.tally.notes.append(f"the host logged this traceback {times}x ({env.host.log_path}):\n"
                                 + textwrap.indent(traceback_text, "      "))
    return Report(chaos.tally.counts, chaos.tally.notes, time.monotonic() - started)


def distinct_tracebacks(log: str, lines: int = 30) -> list[tuple[str, int]]:
    """The tracebacks in a log, one of each kind (by its last line) with how often it came, most frequent first."""
    found: dict[str, tuple[str, int]] = {}
    block: list[str] = []
    for line in log.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            block = [line]
        elif block:
            block.append(line)
            if not line.startswith((" ", "\t")):  # the exception's own line ends the traceback
                text, times = found.get(line, ("\n".join(block[-lines:]), 0))
                found[line] = (text, times + 1)
                block = []
    return sorted(found.values(), key=lambda item: -item[1])


def expected_minutes(config: Config) -> float:
    return math.ceil(config.sessions / config.arrivals_per_second / 60 + 1)
