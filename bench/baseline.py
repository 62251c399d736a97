"""The baseline design, re-implemented for side-by-side runs (public durable-agent streaming sample).

What makes it the baseline, kept faithfully:

- writing: per chunk a NEW Redis client (new connection), XADD of
  {text, sequence, timestamp} to `agent-stream:<conversation>`, then a separate
  EXPIRE; the end of the answer is one more entry with done=true;
- reading: a new client per reader, non-blocking XREAD COUNT 100 from the
  cursor, and a 1 s sleep whenever it comes back empty;
- serving: the HTTP stream response is returned only once the run has ended
  (the whole answer, buffered).

`python -m bench.baseline --port P --redis-url U` serves it on loopback with
the same routes as our host (POST /api/agents/TravelPlanner/run runs the
offline model in-process, the most favourable set-up for the baseline: no
durable dispatch at all).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

POLL_SECONDS = 1.0
READ_COUNT = 100
MAX_EMPTY_READS = 300  # as the design: give up on a stream that never shows data
TTL_SECONDS = 600


def stream_key(conversation_id: str) -> str:
    return f"agent-stream:{conversation_id}"


class BaselineWriter:
    """One client per chunk: connect, XADD, EXPIRE, close."""

    def __init__(self, url: str, ttl_seconds: int = TTL_SECONDS, **client_options: Any) -> None:
        self._url = url
        self._ttl = ttl_seconds
        self._options = client_options

    async def _add(self, conversation_id: str, fields: dict[str, str]) -> None:
        client = aioredis.from_url(self._url, decode_responses=False, **self._options)
        try:
            key = stream_key(conversation_id)
            await client.xadd(key, fields)  # type: ignore[arg-type]
            await client.expire(key, self._ttl)
        finally:
            await client.aclose()

    async def write_chunk(self, conversation_id: str, text: str, sequence: int) -> None:
        fields = {"text": text, "sequence": str(sequence), "timestamp": str(int(time.time() * 1000))}
        await self._add(conversation_id, fields)

    async def write_completion(self, conversation_id: str, sequence: int) -> None:
        fields = {"text": "", "sequence": str(sequence), "timestamp": str(int(time.time() * 1000)), "done": "true"}
        await self._add(conversation_id, fields)


@dataclass(frozen=True)
class Chunk:
    entry_id: str
    text: str | None = None
    done: bool = False
    error: str | None = None


async def read_stream(redis: aioredis.Redis, conversation_id: str, cursor: str = "0-0") -> AsyncIterator[Chunk]:
    """Poll: XREAD COUNT 100 without blocking; sleep 1 s whenever nothing new came."""
    key = stream_key(conversation_id)
    empty_reads = 0
    seen_data = False
    while True:
        reply = await redis.xread({key: cursor}, count=READ_COUNT)
        if not reply:
            if not seen_data:
                empty_reads += 1
                if empty_reads >= MAX_EMPTY_READS:
                    yield Chunk(cursor, error="stream not found or timed out")
                    return
            await asyncio.sleep(POLL_SECONDS)
            continue
        seen_data = True
        for _key, entries in reply:
            for raw_id, fields in entries:
                cursor = raw_id.decode()
                if b"error" in fields:
                    yield Chunk(cursor, error=fields[b"error"].decode())
                    return
                if fields.get(b"done") == b"true":
                    yield Chunk(cursor, done=True)
                    return
                text = fields.get(b"text", b"").decode()
                if text:
                    yield Chunk(cursor, text=text)


def create_app(redis_url: str) -> Any:
    """The baseline host: same routes as ours, buffered stream responses."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    writer = BaselineWriter(redis_url)
    runs: set[asyncio.Task[None]] = set()

    async def stream(request: Request) -> Response:
        conversation_id = request.path_params["conversation_id"]
        client = aioredis.from_url(redis_url, decode_responses=False)  # a new client per reader
        parts: list[str] = []
        try:
            async for chunk in read_stream(client, conversation_id, request.query_params.get("cursor", "0-0")):
                if chunk.error:
                    return JSONResponse({"error": chunk.error}, status_code=500)
                if chunk.done:
                    break
                parts.append(chunk.text or "")
        finally:
            await client.aclose()
        return PlainTextResponse("".join(parts))

    async def start_run(request: Request) -> Response:
        message = (await request.body()).decode()
        conversation_id = uuid.uuid4().hex
        task = asyncio.create_task(_run_agent(writer, conversation_id, message))
        runs.add(task)
        task.add_done_callback(runs.discard)
        return JSONResponse({"conversation_id": conversation_id,
                             "stream_url": f"/api/agent/stream/{conversation_id}"}, status_code=202)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[
        Route("/api/agent/stream/{conversation_id}", stream),
        Route("/api/agents/{agent_name}/run", start_run, methods=["POST"]),
        Route("/api/health", health),
    ])


async def _run_agent(writer: BaselineWriter, conversation_id: str, message: str) -> None:
    """The offline model at full speed, each chunk written as the design writes it."""
    from travelplanner.agent import build_agent
    from travelplanner.settings import Settings

    agent = build_agent(Settings.from_env({"OFFLINE_MODEL_CHUNKS_PER_SECOND": "0"}))
    sequence = 0
    async for update in agent.run(message, stream=True):
        if update.text:
            await writer.write_chunk(conversation_id, update.text, sequence)
            sequence += 1
    await writer.write_completion(conversation_id, sequence)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(args.redis_url), host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False, lifespan="off")


if __name__ == "__main__":  # python -m bench.baseline: the bench package has put the product on sys.path
    main()
