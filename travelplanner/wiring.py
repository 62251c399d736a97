"""What a process builds from its settings, the same way on both hosts.

`Wiring` makes the run log (one client pool per event loop), the live tail
(one per event loop that serves streams), the recorded agent and the
services the HTTP contract needs. The Functions app and the standalone host
each make one `Wiring` and take what they serve from it. With the process's
`Telemetry` (None when off) each piece gets its tracer or metrics observer.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from redis_stream_response_handler import Admission, Liveness, Retention, RunLog, WritePolicy
from streaming.http_api import RunDispatcher, Services
from streaming.live_tail import LiveTail
from streaming.reader import ReadPolicy
from streaming.redis_clients import TAIL_BLOCK_SECONDS, PerLoop, connect
from tools import describe_call
from travelplanner.agent import AGENT_NAME, build_agent, select_model
from travelplanner.model_budget import ModelPolicy
from travelplanner.recorder import RecordedAgent
from travelplanner.settings import Settings
from travelplanner.telemetry import Telemetry, untraced


class Wiring:
    def __init__(self, settings: Settings, redis_url: str, telemetry: Telemetry | None = None) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.telemetry = telemetry
        self.liveness = Liveness(stall_seconds=settings.stream_stall_seconds,
                                 start_seconds=settings.stream_start_seconds)
        self.retention = Retention(ttl_seconds=settings.stream_ttl_seconds, maxlen=settings.redis_stream_maxlen)
        self.write_policy = WritePolicy(coalesce_seconds=settings.write_coalesce_seconds,
                                        buffer_chunks=settings.redis_write_buffer_chunks,
                                        outage_seconds=settings.redis_outage_seconds, liveness=self.liveness)
        self.read_policy = ReadPolicy(max_seconds=settings.stream_max_seconds,
                                      heartbeat_seconds=settings.stream_heartbeat_seconds, liveness=self.liveness)
        self.model = select_model(settings)
        # Runs count as waiting until a worker begins them, for at most the start allowance.
        self.admission = Admission(max_queued_runs=settings.max_queued_runs,
                                   max_queued_per_conversation=settings.max_queued_turns_per_conversation,
                                   window_seconds=settings.stream_start_seconds)
        self.run_log = PerLoop(self._open_log)
        self.live_tail = PerLoop(self._start_tail)

    def _redis(self, *, blocking_reader: bool = False) -> aioredis.Redis:
        return connect(self.redis_url, entra=self.settings.redis_auth == "entra",
                       client_id=self.settings.azure_client_id, blocking_reader=blocking_reader)

    def _open_log(self) -> RunLog:
        metrics = self.telemetry.metrics if self.telemetry else None
        with untraced():  # the log's shared write pipeline runs in this context: no trace of its own per call
            return RunLog(self._redis(), self.retention, observer=metrics)

    def _start_tail(self) -> LiveTail:
        tail = LiveTail(self._redis(blocking_reader=True), self.run_log().redis, block_seconds=TAIL_BLOCK_SECONDS)
        with untraced():  # its blocking XREAD loop serves every reader: it belongs to no request's trace
            tail.start()
        return tail

    def agent(self) -> RecordedAgent:
        """TravelPlanner as the durable host runs it: every run recorded in the run log."""
        return RecordedAgent(build_agent(self.settings), self.run_log, self.write_policy,
                             ModelPolicy.from_settings(self.settings), tool_labels=describe_call,
                             tracer=self.telemetry.tracer if self.telemetry else None)

    def services(self, dispatcher: RunDispatcher | None) -> Services:
        """The HTTP contract's services on the calling event loop."""
        return Services(self.run_log(), self.live_tail(), dispatcher, (AGENT_NAME,), self.read_policy,
                        self.settings.stream_retry_ms, {"model": self.model.summary()}, admission=self.admission,
                        observer=self.telemetry.metrics if self.telemetry else None)

    async def close_current_loop(self) -> None:
        """Stop this loop's live tail and close its Redis pool (the process is shutting down)."""
        tail = self.live_tail.pop_current()
        if tail is not None:
            with untraced():
                await tail.stop()
        log = self.run_log.pop_current()
        if log is not None:
            await log.redis.aclose()

