"""The standalone host's HTTP limits against real sockets: slow and silent clients, floods, clients that stop
reading, and requests the HTTP parser refuses. Each answer is the contract's JSON error, and nothing hangs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from redis_stream_response_handler import Retention, RunLog
from streaming.redis_clients import connect
from testing import procnet
from testing.hosts import StandaloneHost
from testing.waiting import until

HEADER_SECONDS = 1.5
BODY_SECONDS = 2.0
SEND_SECONDS = 2.0
LIMITS = {"HTTP_HEADER_TIMEOUT_SECONDS": str(HEADER_SECONDS), "HTTP_BODY_TIMEOUT_SECONDS": str(BODY_SECONDS),
          "HTTP_SEND_TIMEOUT_SECONDS": str(SEND_SECONDS)}


@pytest.fixture(scope="module")
def host(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneHost]:
    env = {**LIMITS, "STREAM_MAX_SECONDS": "3", "STREAM_HEARTBEAT_SECONDS": "1"}
    with StandaloneHost(redis_url, env, log_path=tmp_path_factory.mktemp("host") / "host.log") as running:
        yield running
    assert "Traceback" not in running.log(), running.log()


class Answer:
    """What came back on a raw connection: the status, the headers, the body, and whether the server closed."""

    def __init__(self, raw: bytes, closed: bool) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1]) if lines[0].startswith("HTTP/1.1 ") else 0
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        self.closed = closed

    def error(self) -> str:
        assert self.headers.get("content-type", "").startswith("application/json"), self.headers
        return str(json.loads(self.body)["error"])


async def answer_to(reader: asyncio.StreamReader, within: float) -> Answer:
    """Read until the server closes the connection (or `within` passes: then `closed` is False)."""
    raw = b""
    try:
        async with asyncio.timeout(within):
            while chunk := await reader.read(65536):
                raw += chunk
        return Answer(raw, closed=True)
    except TimeoutError:
        return Answer(raw, closed=False)
    except ConnectionResetError:
        return Answer(raw, closed=True)


@contextlib.asynccontextmanager
async def connections(port: int, count: int) -> AsyncIterator[list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]:
    opened = []
    try:
        for _ in range(count):
            opened.append(await asyncio.open_connection("127.0.0.1", port))
        yield opened
    finally:
        for _, writer in opened:
            writer.close()


async def health(base_url: str, within: float) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url, timeout=within) as client:
        return await client.get("/api/health")


# --- Slow and silent clients ------------------------------------------------------------------------


async def test_a_slowloris_of_200_sockets_is_cut_after_the_header_timeout_and_health_answers_throughout(
    host: StandaloneHost,
) -> None:
    """200 sockets sending their headers a byte at a time: each is answered 408 once its headers are overdue,
    and /api/health answers promptly all along."""
    async with connections(host.port, 200) as opened:
        started = time.monotonic()

        async def drip(writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                writer.write(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                for _ in range(60):  # a header byte every 0.25 s: never done
                    writer.write(b"X")
                    await writer.drain()
                    await asyncio.sleep(0.25)

        drips = [asyncio.create_task(drip(writer)) for _, writer in opened]
        answers = asyncio.gather(*(answer_to(reader, within=HEADER_SECONDS + 10) for reader, _ in opened))
        for _ in range(3):
            asked = time.monotonic()
            assert (await health(host.base_url, within=5)).status_code == 200
            assert time.monotonic() - asked < 1.5, "health was slow while slow clients held connections"
        cut = await answers
        elapsed = time.monotonic() - started
        for task in drips:
            task.cancel()
    assert all(answer.closed for answer in cut), f"{sum(not a.closed for a in cut)} slow connections still open"
    assert {answer.status for answer in cut} == {408}
    assert "headers" in cut[0].error()
    assert elapsed < HEADER_SECONDS + 8
    await until(lambda: "did not send their request headers" in host.log(), within=5, what="a log line")


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(host: StandaloneHost) -> None:
    async with connections(host.port, 1) as [(reader, _)]:
        answer = await answer_to(reader, within=HEADER_SECONDS + 5)
    assert answer.closed and answer.status == 408


async def test_a_body_that_stops_arriving_is_cut_after_the_body_timeout(host: StandaloneHost) -> None:
    async with connections(host.port, 1) as [(reader, writer)]:
        writer.write(b"POST /api/agents/TravelPlanner/run HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: text/plain\r\nContent-Length: 100\r\n\r\nPlan a trip")  # 11 of 100 bytes
        await writer.drain()
        started = time.monotonic()
        answer = await answer_to(reader, within=BODY_SECONDS + 5)
    assert answer.closed and answer.status == 408, answer.body[:200]
    assert "body" in answer.error()
    assert BODY_SECONDS - 0.5 < time.monotonic() - started < BODY_SECONDS + 3


async def test_headers_larger_than_64_kib_are_431(host: StandaloneHost) -> None:
    async with connections(host.port, 1) as [(reader, writer)]:
        writer.write(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Filler: " + b"a" * 100_000 + b"\r\n")
        await writer.drain()
        answer = await answer_to(reader, within=5)
    assert answer.closed and answer.status == 431
    assert "headers" in answer.error()


# --- Too many connections ---------------------------------------------------------------------------


async def test_connections_over_the_cap_are_refused_at_once_with_retry_after(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = {**LIMITS, "HTTP_MAX_CONNECTIONS": "20"}
    with StandaloneHost(redis_url, env, log_path=tmp_path_factory.mktemp("host") / "host.log") as capped:
        async with connections(capped.port, 20) as held:  # silent: each holds a connection until its timeout
            await until(lambda: procnet.connections_on(capped.port) >= 20, what="20 connections accepted")
            asked = time.monotonic()
            refused = await health(capped.base_url, within=5)
            assert time.monotonic() - asked < 1.5
            assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
            assert "connections" in refused.json()["error"]
            await asyncio.gather(*(answer_to(reader, within=HEADER_SECONDS + 5) for reader, _ in held))
        assert (await health(capped.base_url, within=5)).status_code == 200  # the slow ones are gone
        assert "refused" in capped.log() and "HTTP_MAX_CONNECTIONS" in capped.log()


async def test_at_the_open_file_limit_health_answers_again_once_the_idle_sockets_are_cut(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Regression: with every file descriptor held by idle sockets, new connections were reset (the event loop
    accepts and drops them) for as long as the idle ones were held, /api/health included. Now the cap keeps
    descriptors to spare, so connections over it get a 503 (or, past the spare, a reset), and the idle sockets
    are cut after the header timeout while the client still holds them open."""
    header_seconds = 3.0
    env = {**LIMITS, "HTTP_HEADER_TIMEOUT_SECONDS": str(header_seconds)}
    log_path = tmp_path_factory.mktemp("host") / "host.log"
    with StandaloneHost(redis_url, env, log_path=log_path, open_files=256) as starved:
        async with connections(starved.port, 300):
            started = time.monotonic()
            statuses: list[int] = []
            await until(lambda: _health_status(starved.base_url, statuses) == 200, within=header_seconds + 10,
                        what="health 200 while the idle sockets are still held by their client")
            assert time.monotonic() - started < header_seconds + 5
            assert set(statuses) <= {0, 200, 503}, statuses  # 0: reset; never a hang, never another answer
        assert "HTTP_MAX_CONNECTIONS lowered" in starved.log()


def _health_status(base_url: str, statuses: list[int]) -> int:
    try:
        status = httpx.get(f"{base_url}/api/health", timeout=2).status_code
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        status = 0
    statuses.append(status)
    return status


# --- A client that stops reading --------------------------------------------------------------------


async def test_a_reader_that_stops_reading_is_cut_after_the_send_timeout(
    host: StandaloneHost, redis_url: str
) -> None:
    """16 MiB of a run no socket buffer holds: the client reads 1 KiB and stops. The server must give up on it
    (within the send timeout of its buffers filling), not hold the response and the connection for ever."""
    conversation = f"stuck-{uuid.uuid4().hex}"
    log = RunLog(connect(redis_url), Retention(ttl_seconds=120, maxlen=20000))
    try:
        await log.open_run(conversation, "run-1")
        await log.begin_attempt(conversation, "run-1")
        for i in range(256):
            await log.append(conversation, "run-1", 1, [("message", f"{i:04} " + "x" * 65536)])
    finally:
        await log.redis.aclose()
    before = procnet.connections_on(host.port)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", host.port))
    try:
        sock.sendall(f"GET /api/agent/stream/{conversation} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        assert sock.recv(1024).startswith(b"HTTP/1.1 200 ")
        await until(lambda: procnet.connections_on(host.port) > before, what="the stream's connection")
        started = time.monotonic()
        await until(lambda: procnet.connections_on(host.port) <= before, within=SEND_SECONDS + 15,
                    what="the server to drop the connection of a client that stopped reading")
        assert time.monotonic() - started < SEND_SECONDS + 10
    finally:
        sock.close()
    await until(lambda: "stopped reading" in host.log(), within=5, what="a log line")


# --- What the HTTP parser refuses ---------------------------------------------------------------------


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n",
    b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX: a\nY: b\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS handshake on the plain port
    b"GET /api/health HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n",
    b"POST /api/agents/TravelPlanner/run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n",
], ids=["no-colon", "bare-lf", "tls", "version", "length-and-chunked"])
async def test_a_request_the_parser_refuses_is_a_json_400(host: StandaloneHost, request_bytes: bytes) -> None:
    async with connections(host.port, 1) as [(reader, writer)]:
        writer.write(request_bytes)
        await writer.drain()
        answer = await answer_to(reader, within=5)
    assert answer.closed and answer.status == 400, answer.body[:200]
    assert "HTTP" in answer.error()
    assert answer.headers.get("x-content-type-options") == "nosniff"
