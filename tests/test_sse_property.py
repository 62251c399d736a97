"""Any text survives the SSE framing and a real SSE parser, equal to normalize_newlines(text).

The framing is the product's (`streaming.framing`, on sse-starlette's
`ServerSentEvent`); the parser is httpx-sse's field rules (`testing.sse`),
fed the bytes in arbitrary splits, mid-UTF-8 sequences and
between a CR and its LF included. The last tests take the whole stack once:
`RunWriter` into Redis, the standalone host over HTTP.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redis_stream_response_handler import Liveness, Retention, RunEvent, RunLog, WritePolicy, normalize_newlines
from streaming.framing import plain_text_body, sse_body
from streaming.reader import HEARTBEAT, Closing, ReadItem
from streaming.redis_clients import connect
from testing.hosts import StandaloneHost
from testing.sse import SSEStream, reassemble
from testing.waiting import until

# Everything JSON and UTF-8 can carry (no lone surrogates), weighted towards the characters that break framing.
TRICKY = ["\r", "\n", "\r\n", "\n\r", "\x00", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\ufeff", ":",
          " ", "data: ", "id: ", "event: x", ": comment", "\r\n\r\n", "é", "🗼", "\U0010ffff"]
text_pieces = st.one_of(st.sampled_from(TRICKY), st.text(st.characters(exclude_categories=["Cs"]), max_size=30))
texts = st.lists(text_pieces, max_size=20).map("".join)
chunked_texts = st.lists(st.lists(text_pieces, min_size=1, max_size=4).map("".join), min_size=1, max_size=12)



async def items(events: list[RunEvent]) -> AsyncIterator[ReadItem]:
    for event in events:
        yield event
        yield HEARTBEAT  # a heartbeat between events: must not disturb the framing


async def framed(events: list[RunEvent], *, plain: bool = False) -> bytes:
    body = plain_text_body(items(events)) if plain else sse_body(items(events), 1000)
    return b"".join([frame async for frame in body])


def split(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    """The bytes in pieces at the given offsets (anywhere: inside a UTF-8 sequence, between CR and LF)."""
    start = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        yield data[start:cut]
        start = cut
    yield data[start:]


@settings(max_examples=400, deadline=None)
@given(text=texts, cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_one_message_comes_back_with_newlines_normalised(text: str, cuts: list[int]) -> None:
    event = RunEvent("1700000000000-0", "message", text)
    data = asyncio.run(framed([event, RunEvent("1700000000000-1", "done", "")]))
    parsed = SSEStream()
    for piece in split(data, cuts):
        parsed.feed(piece)
    assert [(e.id, e.kind) for e in parsed.events] == [("1700000000000-0", "message"), ("1700000000000-1", "done")]
    assert parsed.events[0].data == normalize_newlines(text)
    assert parsed.events[1].data == "[DONE]"
    assert parsed.retry == 1000


@settings(max_examples=200, deadline=None)
@given(chunks=chunked_texts, reset_at=st.integers(min_value=0, max_value=12),
       terminal=st.sampled_from([("done", ""), ("error", "the agent failed (E): x\r\ny"), ("cancelled", "by request")]))
def test_a_run_of_many_events_reassembles_to_its_text(
    chunks: list[str], reset_at: int, terminal: tuple[str, str]
) -> None:
    events = [RunEvent(f"1700000000000-{i}", "message", normalize_newlines(chunk)) for i, chunk in enumerate(chunks)]
    if reset_at < len(events):
        events.insert(reset_at, RunEvent("1700000000000-99", "reset", "restarted"))
    events.append(RunEvent("1700000000001-0", terminal[0], terminal[1]))
    parsed = SSEStream()
    parsed.feed(asyncio.run(framed(events)))
    assert [(e.id, e.kind) for e in parsed.events] == [(e.id, e.kind) for e in events]
    kept = chunks[reset_at:] if reset_at < len(chunks) else chunks
    assert reassemble(parsed.events) == "".join(normalize_newlines(chunk) for chunk in kept)
    if terminal[0] != "done":
        assert parsed.events[-1].data == normalize_newlines(terminal[1])


@settings(max_examples=200, deadline=None)
@given(text=texts)
def test_plain_text_carries_the_normalised_text_byte_for_byte(text: str) -> None:
    stored = normalize_newlines(text)  # what RunWriter stores
    body = asyncio.run(framed([RunEvent("1-0", "message", stored), RunEvent("1-1", "done", "")], plain=True))
    assert body.decode("utf-8") == stored + "\n"


@given(comment=texts)
@settings(max_examples=100, deadline=None)
def test_a_closing_comment_never_turns_into_an_event(comment: str) -> None:
    async def closing() -> AsyncIterator[ReadItem]:
        yield RunEvent("1-0", "message", "before")
        yield Closing(f"the run log is unreachable {comment}")

    data = b"".join(asyncio.run(_collect(sse_body(closing(), 1000))))
    parsed = SSEStream()
    parsed.feed(data)
    assert [(e.id, e.data) for e in parsed.events] == [("1-0", "before")]
    assert parsed.closing is not None


async def _collect(frames: AsyncIterator[bytes]) -> list[bytes]:
    return [frame async for frame in frames]


def test_normalisation_is_the_documented_one() -> None:
    assert normalize_newlines("a\r\nb\rc\nd\r\r\n\n") == "a\nb\nc\nd\n\n\n"
    assert normalize_newlines("\u2028\x85\x0b\x0c") == "\u2028\x85\x0b\x0c"  # only CR and CRLF change


# --- The whole stack: RunWriter -> Redis -> the standalone host -> HTTP -> a real parser ---------


@pytest.fixture(scope="module")
def host(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneHost]:
    env = {"STREAM_MAX_SECONDS": "10", "STREAM_STALL_SECONDS": "30"}
    with StandaloneHost(redis_url, env, log_path=tmp_path_factory.mktemp("host") / "host.log") as running:
        yield running


def write_run(redis_url: str, chunks: list[str], *, pause: bool) -> tuple[str, str]:
    """One run written through RunWriter, chunk by chunk (with `pause`, one flush per chunk)."""
    conversation, run = f"sse-{uuid.uuid4().hex}", uuid.uuid4().hex

    async def write() -> None:
        log = RunLog(connect(redis_url), Retention(ttl_seconds=120, maxlen=20000))
        try:
            await log.open_run(conversation, run)
            writer = log.writer(conversation, run, WritePolicy(outage_seconds=5, liveness=Liveness(stall_seconds=3)))
            for chunk in chunks:
                writer.add(chunk)
                if pause:
                    await until(lambda: writer.unwritten == 0, what="the chunk in the log")
            await writer.finish("done")
        finally:
            await log.redis.aclose()

    asyncio.run(write())
    return conversation, run


def read_sse(host: StandaloneHost, conversation: str, run: str) -> SSEStream:
    parsed = SSEStream()
    with httpx.stream("GET", f"{host.base_url}/api/agent/stream/{conversation}", params={"run": run},
                      timeout=10) as response:
        assert response.status_code == 200
        for piece in response.iter_raw():
            parsed.feed(piece)
    assert parsed.events and parsed.events[-1].kind == "done", parsed.comments
    return parsed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=chunked_texts, pause=st.booleans())
def test_the_whole_stack_returns_the_normalised_text(
    host: StandaloneHost, redis_url: str, chunks: list[str], pause: bool
) -> None:
    conversation, run = write_run(redis_url, chunks, pause=pause)
    expected = normalize_newlines("".join(chunks))
    assert reassemble(read_sse(host, conversation, run).events) == expected
    plain = httpx.get(f"{host.base_url}/api/agent/stream/{conversation}", params={"run": run},
                      headers={"Accept": "text/plain"}, timeout=10)
    assert plain.content.decode("utf-8") == expected + "\n"


@pytest.mark.parametrize("pause", [False, True], ids=["merged", "flushed-apart"])
def test_a_crlf_split_across_two_chunks_is_one_newline(host: StandaloneHost, redis_url: str, pause: bool) -> None:
    """Regression: RunWriter normalised each chunk alone, so "a\\r" + "\\nb" became "a\\n\\nb"."""
    conversation, run = write_run(redis_url, ["line one\r", "\nline two\r", "\r\n", "end"], pause=pause)
    assert reassemble(read_sse(host, conversation, run).events) == "line one\nline two\n\nend"
