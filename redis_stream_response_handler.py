"""The run log: every agent run's streamed answer, kept in one Redis Stream per conversation.

Layout (all keys of a conversation share the `{conversation_id}` hash tag, so
they live in one Redis Cluster slot):

- `agent-stream:{cid}`       the stream. Entry fields: `r` the run's number in
  the conversation, `n` the entry's sequence number within the run, `k` the
  kind, `t` the text. Kinds: `s` start (text: the correlation id), `m` message
  chunk, `r` reset (discard this run's text so far; what follows replaces it),
  and the terminal kinds `d` done, `e` error, `x` cancelled.
- `agent-stream:{cid}:meta`  a hash: `runs` (runs so far), `latest` (latest
  correlation id), `origin` (first entry id ever), `lease` (server time in ms
  of the last sign of life from a writer), and per correlation id C:
  `run:C` (number), `corr:N` (the reverse), `at:C` (start entry id), `try:C` (current attempt),
  `seq:C` (last sequence number), `end:C` (terminal entry id, once sealed).

A `LogObserver`, when given, is told what the log does (runs opened and ended, chunks written and how
long each waited, round trip times) for metrics; without one nothing is measured, not even a clock read.

Every write is one Lua script call, so one round trip, and fenced: a write
from an attempt that has been replaced, or to a run that already has its
terminal entry, is refused atomically. Both keys get a sliding TTL on every
write, and the stream an approximate length cap.

One key is shared by all conversations: `agent-stream:~queued`, a sorted set
of the runs accepted with an `Admission` that no worker has begun yet (scored
by acceptance time, trimmed by age), so every web process sees how many runs
are waiting. It is kept apart from the conversations' scripts, which touch one
Cluster slot each.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

logger = logging.getLogger(__name__)

KEY_PREFIX = "agent-stream:"
QUEUE_KEY = f"{KEY_PREFIX}~queued"  # accepted runs no worker has begun yet, across conversations
TERMINAL_KINDS = frozenset({"done", "error", "cancelled"})

_KIND_CODES = {"message": "m", "tool": "t", "usage": "u", "reset": "r", "done": "d", "error": "e", "cancelled": "x"}
EVENT_KINDS = frozenset({"tool", "usage"})  # written whole, one entry each: never merged with text
_KIND_NAMES = {code: name for name, code in _KIND_CODES.items()} | {"s": "start"}
_TERMINAL_CODES = frozenset(_KIND_CODES[kind] for kind in TERMINAL_KINDS)
_ENTRY_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")  # ASCII: \d would match any script's digits
_U64_MAX = 2**64 - 1


def stream_key(conversation_id: str) -> str:
    return f"{KEY_PREFIX}{{{conversation_id}}}"


def meta_key(conversation_id: str) -> str:
    return f"{KEY_PREFIX}{{{conversation_id}}}:meta"


def parse_entry_id(value: str) -> tuple[int, int] | None:
    """The (milliseconds, sequence) of a Redis entry id, or None if it is not one."""
    match = _ENTRY_ID.fullmatch(value)
    if not match:
        return None
    ms, seq = int(match[1]), int(match[2])
    return (ms, seq) if ms <= _U64_MAX and seq <= _U64_MAX else None


def previous_entry_id(entry_id: str) -> str:
    """The greatest id strictly before `entry_id`, for exclusive reads that start at it."""
    parsed = parse_entry_id(entry_id)
    assert parsed is not None, entry_id
    ms, seq = parsed
    return f"{ms}-{seq - 1}" if seq else f"{ms - 1}-{_U64_MAX}"


def normalize_newlines(text: str) -> str:
    # SSE treats CR, LF and CRLF alike as line ends, so a CR cannot survive the
    # trip; normalising at write time keeps SSE and plain-text readers identical.
    return text.replace("\r\n", "\n").replace("\r", "\n")


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One entry of a run as readers see it."""

    id: str
    kind: str  # "message", "tool", "usage", "reset", "done", "error" or "cancelled"
    text: str

    @property
    def terminal(self) -> bool:
        return self.kind in TERMINAL_KINDS


@dataclass(frozen=True, slots=True)
class RunRef:
    """Where a reader starts: a run of a conversation, and the entry id to read after.

    A run is named by its correlation id; `ordinal` is its place in the conversation (1, 2, ...), which is
    what its entries carry in the stream.
    """

    conversation_id: str
    ordinal: str
    correlation_id: str | None
    after: str
    past_the_end: bool = False  # the position is the run's terminal event: nothing can follow


class ConversationNotFound(LookupError):
    pass


class RunNotFound(LookupError):
    pass


class InvalidCursor(ValueError):
    pass


class CursorExpired(LookupError):
    """The cursor points at entries that retention has already removed."""


class QueueFull(Exception):
    """More accepted runs wait for a worker than the admission allows; the run was not opened."""

    def __init__(self, waiting: int) -> None:
        super().__init__(f"{waiting} runs are waiting for a worker")
        self.waiting = waiting


class ConversationBusy(Exception):
    """The conversation has as many turns waiting for a worker as the admission allows; not opened."""

    def __init__(self, waiting: int) -> None:
        super().__init__(f"{waiting} turns of this conversation are waiting for a worker")
        self.waiting = waiting


# Lua shared by the scripts. `now_ms` is server time, so every host agrees on leases.
_LUA_COMMON = """
local stream, meta = KEYS[1], KEYS[2]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function add(run, corr, kind, text, maxlen)
  local n = redis.call('HINCRBY', meta, 'seq:' .. corr, 1)
  local id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'r', run, 'n', n, 'k', kind, 't', text)
  if kind == 'd' or kind == 'e' or kind == 'x' then redis.call('HSET', meta, 'end:' .. corr, id) end
  return id
end
local function touch(ttl)
  redis.call('HSET', meta, 'lease', now_ms())
  redis.call('EXPIRE', stream, ttl)
  redis.call('EXPIRE', meta, ttl)
end
local function open(corr, maxlen)
  local run = redis.call('HINCRBY', meta, 'runs', 1)
  local id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'r', run, 'n', 0, 'k', 's', 't', corr)
  redis.call('HSET', meta, 'run:' .. corr, run, 'at:' .. corr, id, 'try:' .. corr, 0, 'seq:' .. corr, 0,
             'corr:' .. run, corr, 'latest', corr)
  redis.call('HSETNX', meta, 'origin', id)
  return run, id
end
"""

# ARGV: corr, maxlen, ttl, max waiting turns (0: no limit), window ms  ->  {start id, run number} | {'busy', n}
# A waiting turn: accepted within the window, not begun by a worker, not ended. Only the latest runs are looked
# at (a conversation's turns are begun in order), so the check costs O(max) whatever the conversation's length.
_OPEN = _LUA_COMMON + """
local corr, maxlen, ttl, max_waiting, window_ms = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5])
if max_waiting > 0 then
  local oldest, waiting = now_ms() - window_ms, 0
  local runs = tonumber(redis.call('HGET', meta, 'runs') or 0)
  for n = runs, math.max(1, runs - 2 * max_waiting - 8), -1 do
    local c = redis.call('HGET', meta, 'corr:' .. n)
    if c then
      local f = redis.call('HMGET', meta, 'try:' .. c, 'end:' .. c, 'at:' .. c)
      if f[1] == '0' and not f[2] and f[3] and tonumber(string.match(f[3], '^%d+')) >= oldest then
        waiting = waiting + 1
      end
    end
  end
  if waiting >= max_waiting then return {'busy', waiting} end
end
local run, id = open(corr, maxlen)
touch(ttl)
return {id, run}
"""

# KEYS: the queue. ARGV: corr, max waiting runs, window ms  ->  {1 admitted | 0 refused, runs waiting}
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local waiting = redis.call('ZCARD', KEYS[1])
if waiting >= tonumber(ARGV[2]) then return {0, waiting} end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], window)
return {1, waiting + 1}
"""

# KEYS: the queue. ARGV: corr  ->  1 if it was waiting, else 0
_DEQUEUE = """
return redis.call('ZREM', KEYS[1], ARGV[1])
"""

# ARGV: corr, maxlen, ttl  ->  {'ok', attempt} | {'sealed', 0}
# A run unknown to the log (expired, or started around the HTTP route) is opened here.
_BEGIN = _LUA_COMMON + """
local corr, maxlen, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local run = redis.call('HGET', meta, 'run:' .. corr)
if not run then run = open(corr, maxlen) end
if redis.call('HEXISTS', meta, 'end:' .. corr) == 1 then return {'sealed', 0} end
local attempt = redis.call('HINCRBY', meta, 'try:' .. corr, 1)
redis.call('HSET', meta, 'ack:' .. corr, 0)
if attempt > 1 then add(run, corr, 'r', 'restarted', maxlen) end
touch(ttl)
return {'ok', attempt}
"""

# ARGV: corr, attempt ('*' for any), flush (the writer's batch number; 0: not deduplicated), maxlen, ttl,
#       kind1, text1, ...  ->  {'ok'|'sealed'|'replaced'|'unknown', id}
_APPEND = _LUA_COMMON + """
local corr, attempt, flush, maxlen, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local run = redis.call('HGET', meta, 'run:' .. corr)
if not run then return {'unknown', false} end
if attempt ~= '*' and redis.call('HGET', meta, 'try:' .. corr) ~= attempt then return {'replaced', false} end
if flush > 0 then
  -- A retried flush (its reply was lost to a timeout) that already landed is not applied twice.
  if flush <= tonumber(redis.call('HGET', meta, 'ack:' .. corr) or 0) then return {'ok', false} end
  redis.call('HSET', meta, 'ack:' .. corr, flush)
end
if redis.call('HEXISTS', meta, 'end:' .. corr) == 1 then return {'sealed', false} end
local id = false
for i = 6, #ARGV, 2 do
  id = add(run, corr, ARGV[i], ARGV[i + 1], maxlen)
  if ARGV[i] == 'd' or ARGV[i] == 'e' or ARGV[i] == 'x' then break end
end
touch(ttl)
return {'ok', id}
"""

# ARGV: corr, stall_ms, start_ms, maxlen, ttl, stalled message, never-started message
#   ->  'stalled' | 'alive' | 'sealed' | 'unknown'
# A run no worker has begun yet (queued behind others) gets the longer start allowance.
_SEAL_STALLED = _LUA_COMMON + """
local corr, stall_ms, start_ms, maxlen, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local run = redis.call('HGET', meta, 'run:' .. corr)
if not run then return 'unknown' end
if redis.call('HEXISTS', meta, 'end:' .. corr) == 1 then return 'sealed' end
local begun = tonumber(redis.call('HGET', meta, 'try:' .. corr) or 0) > 0
local allowance = begun and stall_ms or start_ms
if now_ms() - tonumber(redis.call('HGET', meta, 'lease') or 0) < allowance then return 'alive' end
add(run, corr, 'e', begun and ARGV[6] or ARGV[7], maxlen)
redis.call('EXPIRE', stream, ttl)
redis.call('EXPIRE', meta, ttl)
return 'stalled'
"""


class LogObserver(Protocol):
    """What the log reports as it works, for whoever measures it (metrics)."""

    def run_opened(self) -> None: ...

    def run_ended(self, outcome: str) -> None:
        """A run's terminal entry was written: outcome is done, error or cancelled."""

    def written(self, waited: Sequence[float]) -> None:
        """A writer's flush was acknowledged: for each chunk it wrote, the seconds from add() until then."""

    def round_trip(self, seconds: float, operation: str) -> None:
        """One round trip to Redis: "write" (the writers' shared pipeline) or "read" (a reader's page)."""


@dataclass(frozen=True)
class Retention:
    ttl_seconds: int = 600
    maxlen: int = 20000


@dataclass(frozen=True)
class Admission:
    """How many accepted runs may wait for a worker to begin them (0: no limit).

    A run waiting longer than `window_seconds` is no longer counted: the liveness rule ends it as not
    started (`Liveness.start_seconds`), and a stale count must not refuse runs for ever after an outage.
    """

    max_queued_runs: int = 1000
    max_queued_per_conversation: int = 3
    window_seconds: float = 600.0

    @property
    def window_ms(self) -> int:
        return max(1, int(self.window_seconds * 1000))


@dataclass(frozen=True)
class Liveness:
    """When a run counts as dead, for writers and readers alike.

    A writer renews its run's lease every `lease_seconds`, also while the model is silent (a long tool
    call). A reader that sees no progress for `stall_seconds` asks the log to seal the run if its lease
    is older than that; a run no worker has begun yet gets `start_seconds` instead (it may be queued).
    """

    stall_seconds: float = 60.0
    start_seconds: float = 600.0

    @property
    def lease_seconds(self) -> float:
        return self.stall_seconds / 3  # three renewals per stall window: one lost write is not death


class RunLog:
    """Writes and reads run logs over one shared connection pool.

    Bound to the event loop it is used on (redis-py's asyncio pool is).
    """

    def __init__(self, redis: aioredis.Redis, retention: Retention, observer: LogObserver | None = None) -> None:
        self.redis = redis
        self.retention = retention
        self.observer = observer
        # The shared round trip belongs to no one caller: it runs in the context the log was made in (its
        # trace, if any), not in that of whichever write happened to start it.
        self._context = contextvars.copy_context()
        self._open = redis.register_script(_OPEN)
        self._admit = redis.register_script(_ADMIT)
        self._dequeue = redis.register_script(_DEQUEUE)
        self._begin = redis.register_script(_BEGIN)
        self._append = redis.register_script(_APPEND)
        self._seal_stalled = redis.register_script(_SEAL_STALLED)
        self._queued: list[tuple[AsyncScript, list[str], list[Any], asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None

    def _keys(self, conversation_id: str) -> list[str]:
        return [stream_key(conversation_id), meta_key(conversation_id)]

    def _limits(self) -> list[Any]:
        return [self.retention.maxlen, self.retention.ttl_seconds]

    # --- writing ---------------------------------------------------------

    async def open_run(self, conversation_id: str, correlation_id: str, *, admission: Admission | None = None) -> str:
        """Record that a run was accepted; returns its start entry id. Readers can attach at once.

        With an `admission`, the run is refused (QueueFull, ConversationBusy) rather than opened when too many
        runs already wait for a worker, and counted as waiting until one begins it. Costs one more script call.
        """
        per_conversation, window_ms = (admission.max_queued_per_conversation, admission.window_ms) if admission \
            else (0, 0)
        queued = bool(admission and admission.max_queued_runs)
        if admission and queued:  # admission: for the type checker, which cannot see it in `queued`
            admitted, waiting = await self._shared_round_trip(
                self._admit, [QUEUE_KEY], [correlation_id, admission.max_queued_runs, window_ms])
            if not admitted:
                raise QueueFull(int(waiting))
        try:
            first, second = await self._shared_round_trip(
                self._open, self._keys(conversation_id), [correlation_id, *self._limits(), per_conversation, window_ms])
        except Exception:
            if queued:
                await self.dequeue(correlation_id)
            raise
        if first == "busy":
            if queued:
                await self.dequeue(correlation_id)
            raise ConversationBusy(int(second))
        if self.observer is not None:
            self.observer.run_opened()
        return str(first)

    async def dequeue(self, correlation_id: str) -> None:
        """The run waits for a worker no more (it began, was cancelled, or could not be started)."""
        with contextlib.suppress(RedisError, OSError):
            await self._shared_round_trip(self._dequeue, [QUEUE_KEY], [correlation_id])

    async def begin_attempt(self, conversation_id: str, correlation_id: str) -> int | None:
        """Start (or restart) executing a run; None when the run already has its terminal entry."""
        # Both in the same shared round trip: the run begins, and waits for a worker no more.
        (status, attempt), _ = await asyncio.gather(
            self._shared_round_trip(self._begin, self._keys(conversation_id), [correlation_id, *self._limits()]),
            self._shared_round_trip(self._dequeue, [QUEUE_KEY], [correlation_id]))
        return int(attempt) if status == "ok" else None

    async def append(
        self, conversation_id: str, correlation_id: str, attempt: int | str, entries: Sequence[tuple[str, str]],
        *, flush: int = 0,
    ) -> str:
        """Append (kind, text) entries in one round trip; returns 'ok', 'sealed', 'replaced' or 'unknown'.

        `flush` numbers a writer's batches (1, 2, ...) within its attempt, so that a retry of a batch
        whose reply was lost is not applied twice; 0 for one-off writes.
        """
        args: list[Any] = [correlation_id, str(attempt), flush, *self._limits()]
        for kind, text in entries:
            args += [_KIND_CODES[kind], normalize_newlines(text)]
        status, entry_id = await self._shared_round_trip(self._append, self._keys(conversation_id), args)
        if self.observer is not None and status == "ok" and entry_id:  # no id: a retried flush, counted once
            ended = next((kind for kind, _ in entries if kind in TERMINAL_KINDS), None)
            if ended is not None:
                self.observer.run_ended(ended)
        return str(status)

    async def _shared_round_trip(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """Run a write script, pipelined with every other write waiting in this process.

        Each script call stays atomic and fenced on its own; they only share the round trip, so
        a process with hundreds of active runs sends one pipeline per round trip, not one call per
        run, and a burst of new runs does not queue for the pool's few connections.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((script, keys, args, future))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_queued(), name="run-log-appends",
                                               context=self._context.copy())
        return await future

    async def _send_queued(self) -> None:
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for script, keys, args, _ in batch:
                            pipe.evalsha(script.sha, len(keys), *keys, *args)
                        sent = time.perf_counter() if self.observer is not None else 0.0
                        replies = await pipe.execute(raise_on_error=False)
                        if self.observer is not None:
                            self.observer.round_trip(time.perf_counter() - sent, "write")
                except (RedisError, OSError) as error:
                    replies = [error] * len(batch)  # each writer retries its own entries
                for (script, keys, args, future), reply in zip(batch, replies, strict=True):
                    if isinstance(reply, NoScriptError):  # Redis restarted: this call loads it again
                        try:
                            reply = await script(keys, args)
                        except (RedisError, OSError) as error:
                            reply = error
                    if future.done():
                        continue  # its writer has gone
                    if isinstance(reply, BaseException):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        finally:
            self._sender = None

    async def cancel(self, conversation_id: str, correlation_id: str) -> str:
        """End a run with a `cancelled` entry unless it has ended; its writer stops at its next write."""
        status = await self.append(conversation_id, correlation_id, "*", [("cancelled", "cancelled by request")])
        if status == "ok":
            await self.dequeue(correlation_id)
        return status

    async def end_unstarted(self, conversation_id: str, correlation_id: str, reason: str) -> str:
        """End a run no worker will begin (it could not be handed over) with an `error` entry."""
        status = await self.append(conversation_id, correlation_id, "*", [("error", reason)])
        await self.dequeue(correlation_id)
        return status

    async def seal_if_stalled(self, conversation_id: str, correlation_id: str, liveness: Liveness) -> str:
        """End the run with an error if its worker shows no sign of life (or none began it in time)."""
        stall, start = liveness.stall_seconds, liveness.start_seconds
        args = [correlation_id, int(stall * 1000), int(start * 1000), *self._limits(),
                f"the run stalled: no sign of life from its worker for {stall:g} s",
                f"the run was not started: no worker picked it up within {start:g} s"]
        status = str(await self._seal_stalled(self._keys(conversation_id), args))
        if status == "stalled":
            if self.observer is not None:
                self.observer.run_ended("error")
            await self.dequeue(correlation_id)
        return status

    def writer(self, conversation_id: str, correlation_id: str, policy: WritePolicy) -> RunWriter:
        """A writer for a new attempt at the run (a redelivered run replaces the earlier attempt)."""
        return RunWriter(self, conversation_id, correlation_id, policy)

    # --- reading ---------------------------------------------------------

    async def latest_run(self, conversation_id: str) -> str | None:
        return await self.redis.hget(meta_key(conversation_id), "latest")

    async def resolve(
        self, conversation_id: str, *, cursor: str | None = None, correlation_id: str | None = None
    ) -> RunRef:
        """Find the run a reader asked for and the position to read after.

        With a cursor, the run is the cursor entry's run; otherwise the named
        run, or the conversation's latest.
        """
        meta = meta_key(conversation_id)
        if cursor is not None:
            if parse_entry_id(cursor) is None:
                raise InvalidCursor("cursor must be a stream entry id such as 1700000000000-0")
            return await self._resolve_cursor(conversation_id, cursor, correlation_id)
        if correlation_id is None:
            correlation_id = await self.redis.hget(meta, "latest")
            if correlation_id is None:
                raise ConversationNotFound(conversation_id)
        ordinal, start_id = await self.redis.hmget(meta, [f"run:{correlation_id}", f"at:{correlation_id}"])
        if ordinal is None:
            if not await self.redis.exists(meta):
                raise ConversationNotFound(conversation_id)
            raise RunNotFound(correlation_id)
        return RunRef(conversation_id, ordinal, correlation_id, previous_entry_id(start_id))

    async def _resolve_cursor(self, conversation_id: str, cursor: str, correlation_id: str | None) -> RunRef:
        key, meta = stream_key(conversation_id), meta_key(conversation_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xrange(key, cursor, cursor, count=1)
            pipe.xrange(key, "-", "+", count=1)
            pipe.hmget(meta, ["origin", f"run:{correlation_id}" if correlation_id else "runs"])
            at_cursor, first, (origin, named_run) = await pipe.execute()
        if origin is None:
            raise ConversationNotFound(conversation_id)
        if correlation_id is not None and named_run is None:
            raise RunNotFound(correlation_id)
        if at_cursor:
            ordinal = at_cursor[0][1]["r"]
            if correlation_id is not None and ordinal != named_run:
                raise InvalidCursor("cursor belongs to another run of this conversation")
            correlation_id = correlation_id or await self.redis.hget(meta, f"corr:{ordinal}")
            terminal = at_cursor[0][1].get("k") in _TERMINAL_CODES
            return RunRef(conversation_id, ordinal, correlation_id, cursor, past_the_end=terminal)
        parsed = parse_entry_id(cursor)
        if first and parse_entry_id(origin) <= parsed < parse_entry_id(first[0][0]):  # type: ignore[operator]
            raise CursorExpired("the events after this cursor have expired from the stream")
        raise InvalidCursor("cursor is not an event of this conversation")

    async def read_after(self, ref: RunRef, after: str, count: int = 1000) -> tuple[list[RunEvent], str, bool]:
        """One page of the run's events after `after`; returns (events, last id read, more may follow)."""
        sent = time.perf_counter() if self.observer is not None else 0.0
        entries = await self.redis.xrange(stream_key(ref.conversation_id), f"({after}", "+", count=count)
        if self.observer is not None:
            self.observer.round_trip(time.perf_counter() - sent, "read")
        events = events_of_run(entries, ref.ordinal)
        last = entries[-1][0] if entries else after
        return events, last, len(entries) == count


def events_of_run(entries: Sequence[tuple[str, dict[str, str]]], ordinal: str) -> list[RunEvent]:
    """The reader-visible events of one run among raw stream entries (other runs and starts dropped)."""
    events = []
    for entry_id, fields in entries:
        if fields.get("r") != ordinal:
            continue
        kind = _KIND_NAMES.get(fields.get("k", ""), "start")
        if kind != "start":
            events.append(RunEvent(entry_id, kind, fields.get("t", "")))
    return events


@dataclass(frozen=True)
class WritePolicy:
    coalesce_seconds: float = 0.0
    buffer_chunks: int = 20000
    outage_seconds: float = 20.0  # shorter than the stall time: a writer riding out an outage renews no lease
    liveness: Liveness = field(default_factory=Liveness)


class RunWriter:
    """Appends one attempt of one run to the log without ever blocking the model.

    `add()` only buffers; a background task flushes everything buffered in one
    round trip (consecutive chunks merged into one entry). While Redis is
    unreachable the task retries the same batch with backoff and keeps up to
    `buffer_chunks` chunks; past that or after `outage_seconds` the attempt is
    given up as interrupted and, once Redis answers again, the run is ended
    with an `error` entry saying so.
    """

    def __init__(self, log: RunLog, conversation_id: str, correlation_id: str, policy: WritePolicy):
        self._log = log
        self.conversation_id = conversation_id
        self.correlation_id = correlation_id
        self.attempt: int | None = None  # known once the attempt is registered in the log
        self._policy = policy
        self._pending: list[tuple[str, list[str]]] = []  # (kind, texts joined when flushed)
        self._pending_chunks = 0
        self._observer = log.observer
        self._added_at: list[float] = []  # with an observer: when each pending chunk was added
        self._inflight_added_at: list[float] = []
        self._inflight_chunks = 0
        self._ended_with_cr = False  # a CRLF split across two chunks is one line break
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()  # terminal entry written, or the attempt stopped
        self._closed = False
        self.interrupted: str | None = None
        self.fenced: str | None = None  # "sealed" or "replaced" once the log refused a write
        self.finished: str | None = None  # the terminal kind this attempt wrote (finish() returns once it is in)
        self._fence_signal: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.flushes = 0
        self._task = asyncio.create_task(self._run(), name=f"run-writer:{correlation_id}")

    @property
    def unwritten(self) -> int:
        """Chunks added but not yet acknowledged by Redis."""
        return self._pending_chunks + self._inflight_chunks

    @property
    def stopped(self) -> bool:
        """True once nothing more from this attempt will reach the log."""
        return self.fenced is not None or self.interrupted is not None

    @property
    def fence_signal(self) -> asyncio.Future[str]:
        """Done (with the reason) once the log refuses this attempt: the run was ended or replaced.

        The writer learns it at its next write or lease renewal; whoever produces the run's text can
        stop at once instead of at its next chunk (a model that has not started answering sends none).
        """
        return self._fence_signal

    def _fence(self, reason: str) -> None:
        self.fenced = reason
        if not self._fence_signal.done():
            self._fence_signal.set_result(reason)

    def add(self, text: str) -> None:
        if self._closed or self.stopped or not text:
            return
        if self._ended_with_cr and text.startswith("\n"):
            text = text[1:]
        self._ended_with_cr = text.endswith("\r")
        text = normalize_newlines(text)
        if not text:
            return
        if self._pending and self._pending[-1][0] == "message":
            self._pending[-1][1].append(text)  # merged with the chunks still waiting: one entry per flush
        else:
            self._pending.append(("message", [text]))
        self._pending_chunks += 1
        if self._observer is not None:
            self._added_at.append(time.monotonic())
        if self._pending_chunks + self._inflight_chunks > self._policy.buffer_chunks:
            self._give_up(f"the stream was interrupted: more than {self._policy.buffer_chunks} chunks waited for Redis")
        self._wake.set()

    def add_event(self, kind: str, text: str) -> None:
        """Buffer a `tool` or `usage` entry: its own entry, in order with the chunks around it, never merged."""
        assert kind in EVENT_KINDS, kind
        if self._closed or self.stopped:
            return
        self._pending.append((kind, [text]))
        self._pending_chunks += 1
        if self._observer is not None:
            self._added_at.append(time.monotonic())
        if self._pending_chunks + self._inflight_chunks > self._policy.buffer_chunks:
            self._give_up(f"the stream was interrupted: more than {self._policy.buffer_chunks} chunks waited for Redis")
        self._wake.set()

    def reset(self, reason: str) -> None:
        """Tell readers to discard what this run showed so far (what follows replaces it)."""
        self._ended_with_cr = False  # the replacement starts afresh
        if not self._closed and not self.stopped:
            self._pending.append(("reset", [reason]))
            self._wake.set()

    async def finish(self, kind: str, text: str = "") -> None:
        """Write the terminal entry; returns once it is in Redis or the attempt has stopped."""
        assert kind in TERMINAL_KINDS, kind
        if not self._closed:
            self._closed = True
            if not self.stopped:
                self.finished = kind
                self._pending.append((kind, [text if kind != "done" else ""]))
            self._wake.set()
        await self._settled.wait()

    def when_closed(self, callback: Callable[[], None]) -> None:
        """Call `callback` (on the writer's loop) once its background work is over."""
        self._task.add_done_callback(lambda _: callback())

    async def closed(self) -> None:
        """Wait until the writer's background work is over (including an interruption's error entry)."""
        await asyncio.shield(self._task)

    async def abandon(self) -> None:
        """Stop without a terminal entry (the process is going away)."""
        self._closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        try:
            await self._begin()
            while not self.stopped:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._policy.liveness.lease_seconds)
                self._wake.clear()
                if self._policy.coalesce_seconds and self._pending and not self._closed:
                    await asyncio.sleep(self._policy.coalesce_seconds)
                batch = [(kind, "".join(texts)) for kind, texts in self._pending]
                self._pending = []
                self._inflight_chunks, self._pending_chunks = self._pending_chunks, 0
                self._inflight_added_at, self._added_at = self._added_at, []
                # An empty batch still renews the lease: the run is alive (e.g. in a long tool call).
                await self._flush(batch)
                if self._closed and not self._pending and not self.stopped:
                    return
            if self.interrupted and self.fenced is None:
                self._settled.set()
                await self._write_interruption()
        except asyncio.CancelledError:
            raise
        except Exception:  # the log must never fail the agent run
            logger.exception("run writer for %s failed", self.correlation_id)
        finally:
            self._settled.set()

    async def _begin(self) -> None:
        attempt = await self._retrying(
            lambda: self._log.begin_attempt(self.conversation_id, self.correlation_id))
        if attempt is None and not self.interrupted:
            self._fence("sealed")  # the run already has its terminal entry: this attempt writes nothing
            self._pending.clear()
        self.attempt = attempt

    async def _flush(self, batch: list[tuple[str, str]]) -> None:
        number = self.flushes + 1  # the same number on every retry of this batch
        status = await self._retrying(lambda: self._log.append(
            self.conversation_id, self.correlation_id, self.attempt or 0, batch, flush=number))
        if self.interrupted:
            return
        self.flushes += 1
        self._inflight_chunks = 0
        if status != "ok":
            self._fence(status)
            self._pending.clear()
        elif self._observer is not None and self._inflight_added_at:
            acknowledged = time.monotonic()
            self._observer.written([acknowledged - added for added in self._inflight_added_at])
        self._inflight_added_at = []

    async def _retrying(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run a Redis call until it succeeds or the outage outlasts the policy (then give up)."""
        started = time.monotonic()
        delay = 0.05
        while not self.interrupted:
            try:
                return await call()
            except (RedisError, OSError) as error:
                waited = time.monotonic() - started
                if waited >= self._policy.outage_seconds:
                    self._give_up(f"the stream was interrupted: Redis was unreachable for {waited:.0f} s")
                    return None
                logger.warning("run log write failed (%s); retrying in %.2f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        return None

    def _give_up(self, reason: str) -> None:
        if self.interrupted is None:
            logger.error("run %s: %s", self.correlation_id, reason)
            self.interrupted = reason
            self._pending.clear()
            self._added_at.clear()
            self._wake.set()

    async def _write_interruption(self) -> None:
        """Once Redis is back, end the run with the interruption as its error (trying for one TTL)."""
        deadline = time.monotonic() + self._log.retention.ttl_seconds
        while time.monotonic() < deadline:
            try:
                await self._log.append(
                    self.conversation_id, self.correlation_id, self.attempt or "*", [("error", self.interrupted or "")]
                )
                return
            except (RedisError, OSError):
                await asyncio.sleep(1.0)

