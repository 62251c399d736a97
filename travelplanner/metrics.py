"""The app's metrics, defined once: what the run log and the stream responses report, as OpenTelemetry instruments.

`Metrics` is the run log's `LogObserver` and the streaming core's `StreamObserver`. It exists only when
telemetry is on (`travelplanner.telemetry`); with telemetry off nothing is given an observer, so nothing is
measured or even timed. Attributes are few and fixed (no ids: a conversation id is a secret, and ids would
make every series unique).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from opentelemetry.metrics import Meter

from redis_stream_response_handler import parse_entry_id
from streaming.observer import Resumed

RUNS_STARTED = "travelplanner.runs.started"
RUNS_FINISHED = "travelplanner.runs.finished"
STREAMS_OPEN = "travelplanner.streams.open"
CHUNKS_WRITTEN = "travelplanner.chunks.written"
MODEL_TO_REDIS = "travelplanner.delivery.model_to_redis"
REDIS_TO_CLIENT = "travelplanner.delivery.redis_to_client"
REDIS_ROUND_TRIP = "travelplanner.redis.round_trip"
READER_RESUMES = "travelplanner.reader.resumes"

_FORMATS = {False: {"format": "sse"}, True: {"format": "plain"}}


class Metrics:
    def __init__(self, meter: Meter) -> None:
        self._started = meter.create_counter(
            RUNS_STARTED, unit="{run}", description="Runs accepted (POST …/run answered 202).")
        self._finished = meter.create_counter(
            RUNS_FINISHED, unit="{run}", description="Runs that reached their terminal entry, by outcome "
                                                     "(done, error, cancelled).")
        self._open = meter.create_up_down_counter(
            STREAMS_OPEN, unit="{stream}", description="Stream responses being served, by format (sse, plain).")
        self._chunks = meter.create_counter(
            CHUNKS_WRITTEN, unit="{chunk}", description="Chunks (text, tool and usage events) written to the "
                                                        "run log and acknowledged by Redis.")
        self._model_to_redis = meter.create_histogram(
            MODEL_TO_REDIS, unit="ms", description="From a chunk leaving the model (RunWriter.add) to Redis "
                                                   "acknowledging the flush that wrote it.")
        self._redis_to_client = meter.create_histogram(
            REDIS_TO_CLIENT, unit="ms", description="From Redis storing an event (its entry id's time) to its frame "
                                                    "being handed to the HTTP server.")
        self._round_trip = meter.create_histogram(
            REDIS_ROUND_TRIP, unit="ms", description="One round trip to Redis, by operation: write (the writers' "
                                                     "shared pipeline), read (a reader's page of the log).")
        self._resumes = meter.create_counter(
            READER_RESUMES, unit="{request}", description="Stream requests that resume after an event, by how "
                                                          "(last-event-id, cursor).")
        self._outcomes = {outcome: {"outcome": outcome} for outcome in ("done", "error", "cancelled")}
        self._operations = {operation: {"operation": operation} for operation in ("write", "read")}

    # --- the run log (LogObserver)

    def run_opened(self) -> None:
        self._started.add(1)

    def run_ended(self, outcome: str) -> None:
        self._finished.add(1, self._outcomes.get(outcome) or {"outcome": outcome})

    def written(self, waited: Sequence[float]) -> None:
        self._chunks.add(len(waited))
        for seconds in waited:
            self._model_to_redis.record(seconds * 1000)

    def round_trip(self, seconds: float, operation: str) -> None:
        self._round_trip.record(seconds * 1000, self._operations.get(operation) or {"operation": operation})

    # --- stream responses (StreamObserver)

    def opened(self, *, plain: bool, resumed: Resumed) -> None:
        self._open.add(1, _FORMATS[plain])
        if resumed is not None:
            self._resumes.add(1, {"via": resumed})

    def closed(self, *, plain: bool) -> None:
        self._open.add(-1, _FORMATS[plain])

    def delivered(self, entry_id: str) -> None:
        stored = parse_entry_id(entry_id)
        if stored is not None:
            # Redis's clock against this host's: the same machine, or NTP-synchronised ones.
            self._redis_to_client.record(max(0.0, time.time() * 1000 - stored[0]))
