"""Hostile input against every route of the real standalone host: a clear 4xx JSON error, never a 500 or a hang.

Every request has a timeout; every refused id is checked not to have reached
Redis; every key the module created must be in the project's key space.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
import redis

from redis_stream_response_handler import KEY_PREFIX, Retention, RunLog, stream_key
from streaming.redis_clients import connect
from testing.hosts import StandaloneHost

AGENT = "TravelPlanner"
TIMEOUT = httpx.Timeout(10.0)
MAX_ERROR_BYTES = 1024  # an error names the problem; it does not echo a 10 KB input back

# Ids the contract refuses (1-128 of A-Z a-z 0-9 _ -), sent percent-encoded in paths and queries.
HOSTILE_IDS = [
    "a*b", "*", "a:b", ":", "{a}", "{", "}", "a b", " ", "été", "日本", "🗼", "a\nb", "a\rb", "a\x00b", "a\tb",
    "..", "a.b", "a%2Fb", "'; DROP", "<script>", "a" * 129, "a" * 10_000, "x" * 4096 + ":" + "y",
]
# Sent as raw strings of JSON, so the ids survive exactly.
HOSTILE_JSON_IDS = [*HOSTILE_IDS, "", 123, 1.5, True, ["a"], {"a": 1}]
REFUSED_MARKERS = ["a*b", "a:b", "{a}", "a b", "été", "日本", "'; DROP", "<script>", "x" * 4096]

MALFORMED_CURSORS = [
    "abc", "1-", "-1", "1-2-3", "1.5-0", " 1-0", "1-0 ", "0x1-0", "+", "-", "$", ">", "*", "1-0\t", "١-٠",
    "99999999999999999999999-0", "18446744073709551616-0", "1-18446744073709551616", "1" * 10_000,
]


@pytest.fixture(scope="module")
def keys_before(redis_url: str) -> set[str]:
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        return set(client.scan_iter(count=1000))


@pytest.fixture(scope="module")
def host(redis_url: str, keys_before: set[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneHost]:
    env = {"STREAM_MAX_SECONDS": "3", "STREAM_HEARTBEAT_SECONDS": "1", "STREAM_STALL_SECONDS": "30"}
    with StandaloneHost(redis_url, env, log_path=tmp_path_factory.mktemp("host") / "host.log") as running:
        yield running
    assert "Traceback" not in running.log(), running.log()


@pytest.fixture(scope="module")
def client(host: StandaloneHost) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=host.base_url, timeout=TIMEOUT) as http:
        yield http


@pytest.fixture(scope="module")
def finished(client: httpx.Client) -> dict[str, str]:
    """A run that has ended, with the ids of its events."""
    started = client.post(f"/api/agents/{AGENT}/run", content="Plan 2 days in Lisbon",
                          headers={"Content-Type": "text/plain"})
    assert started.status_code == 202, started.text
    body = started.json()
    events = read_all(client, body["stream_url"])
    assert events[-1]["event"] == "done"
    return {**body, "first_event": events[0]["id"], "last_event": events[-1]["id"]}


def encoded(value: str) -> str:
    """Percent-encoded for a path segment, dots included (a client would resolve a bare '..')."""
    return quote(value, safe="").replace(".", "%2E")


def read_all(client: httpx.Client, url: str, deadline: float = 20.0) -> list[dict[str, str]]:
    """An SSE read to the run's terminal event (a response window may close first: resume)."""
    from testing.sse import SSEStream

    events: list[dict[str, str]] = []
    cursor: str | None = None
    until = time.monotonic() + deadline
    while time.monotonic() < until:
        headers = {"Last-Event-ID": cursor} if cursor else {}
        parsed = SSEStream()
        with client.stream("GET", url, headers=headers) as response:
            assert response.status_code == 200, response.read()
            for chunk in response.iter_raw():
                parsed.feed(chunk)
        events += [{"id": e.id, "event": e.kind, "data": e.data} for e in parsed.events]
        cursor = parsed.last_id or cursor
        if parsed.events and parsed.events[-1].terminal:
            return events
    raise AssertionError(f"no terminal event within {deadline} s")


def assert_error(response: httpx.Response, *statuses: int) -> str:
    """A clear client error: the expected 4xx, JSON {"error": "<a sentence>"}, short."""
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert len(response.content) <= MAX_ERROR_BYTES, f"{len(response.content)} bytes: {response.text[:200]}..."
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert isinstance(body["error"], str) and len(body["error"]) > 10, body
    assert "Traceback" not in body["error"]
    return body["error"]


def raw_request(host: StandaloneHost, request: bytes, *, then: bytes = b"", timeout: float = 5.0) -> tuple[int, bytes]:
    """Send bytes as they are (headers httpx refuses to send); returns (status, body head)."""
    with socket.create_connection(("127.0.0.1", host.port), timeout=timeout) as sock:
        sock.sendall(request)
        if then:
            try:
                sock.sendall(then)
            except OSError:
                pass  # the server answered and closed before taking it all: fine
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            head, found, body = received.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)
            if found and (length is None or len(body) >= length):
                break
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), f"no HTTP answer within {timeout} s: {received[:200]!r}"
    return int(head.split(b" ")[1]), body


# --- POST /api/agents/{agent}/run ---------------------------------------------


@pytest.mark.parametrize("size", [32 * 1024 + 1, 200 * 1024])
@pytest.mark.parametrize("as_json", [False, True])
def test_a_message_over_32_kib_is_413(client: httpx.Client, size: int, as_json: bool) -> None:
    message = "é" * (size // 2 + 1)  # counted in UTF-8 bytes, not characters
    if as_json:
        response = client.post(f"/api/agents/{AGENT}/run", json={"message": message})
    else:
        response = client.post(f"/api/agents/{AGENT}/run", content=message.encode(),
                               headers={"Content-Type": "text/plain; charset=utf-8"})
    assert "32 KiB" in assert_error(response, 413)


def test_a_message_of_exactly_32_kib_is_accepted(client: httpx.Client) -> None:
    response = client.post(f"/api/agents/{AGENT}/run", content=b"a" * 32 * 1024,
                           headers={"Content-Type": "text/plain"})
    assert response.status_code == 202, response.text


def test_a_multi_megabyte_body_is_refused_before_it_is_read(host: StandaloneHost) -> None:
    head = (f"POST /api/agents/{AGENT}/run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {50 * 1024 * 1024}\r\n\r\n").encode()
    started = time.monotonic()
    status, body = raw_request(host, head, then=b"a" * 64 * 1024)  # 64 KiB of the announced 50 MiB
    assert status == 413 and b"error" in body
    assert time.monotonic() - started < 2


def test_a_multi_megabyte_chunked_body_is_cut_off_at_the_limit(host: StandaloneHost) -> None:
    head = (f"POST /api/agents/{AGENT}/run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    chunk = b"%x\r\n" % (100 * 1024) + b"a" * 100 * 1024 + b"\r\n"
    started = time.monotonic()
    status, body = raw_request(host, head, then=chunk * 3)  # 300 KiB sent, no end: the server must not wait
    assert status == 413 and b"error" in body
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("content_type", [
    "image/png", "application/xml", "text/html", "multipart/form-data; boundary=x", "application/octet-stream",
    "text/event-stream", "application/jsonx", "json", "*/*",
])
def test_a_wrong_content_type_is_415(client: httpx.Client, content_type: str) -> None:
    response = client.post(f"/api/agents/{AGENT}/run", content=b'{"message": "hi"}',
                           headers={"Content-Type": content_type})
    assert_error(response, 415)


@pytest.mark.parametrize("body", [
    b"{", b'{"message": }', b"{'message': 'hi'}", b'{"message": "hi",}', b"", b"   ", b"\x00",
    b'{"message": "hi"} trailing', b"\xef\xbb\xbf{\"message\": \"BOM\"}",
])
def test_invalid_json_is_400(client: httpx.Client, body: bytes) -> None:
    response = client.post(f"/api/agents/{AGENT}/run", content=body, headers={"Content-Type": "application/json"})
    assert_error(response, 400)


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
@pytest.mark.parametrize("body", [b"\xff\xfe\xfd", b'{"message": "caf\xe9"}', b"\xed\xa0\x80", b"\xc0\xaf",
                                  "{\"message\": \"hi\"}".encode("utf-16")])
def test_a_body_that_is_not_utf8_is_400(client: httpx.Client, content_type: str, body: bytes) -> None:
    response = client.post(f"/api/agents/{AGENT}/run", content=body, headers={"Content-Type": content_type})
    assert "UTF-8" in assert_error(response, 400)


@pytest.mark.parametrize("body", ["[]", '["message"]', '"message"', "1", "null", "true", "NaN", "-Infinity"])
def test_json_that_is_not_an_object_is_400(client: httpx.Client, body: str) -> None:
    response = client.post(f"/api/agents/{AGENT}/run", content=body, headers={"Content-Type": "application/json"})
    assert_error(response, 400)


@pytest.mark.parametrize("body", [b'{"message": "\\ud800"}', b'{"message": "Plan \\udfff a trip"}',
                                  b'{"message": "hi", "conversation_id": "\\ud800\\ud800\\ud800\\ud800"}'])
def test_a_json_string_with_a_lone_surrogate_is_400(client: httpx.Client, body: bytes) -> None:
    """Regression: the message's size check encoded it as UTF-8 and failed with a 500 (UnicodeEncodeError)."""
    response = client.post(f"/api/agents/{AGENT}/run", content=body, headers={"Content-Type": "application/json"})
    assert_error(response, 400)


@pytest.mark.parametrize("depth", [5_000, 100_000])
def test_json_nested_thousands_deep_is_400(client: httpx.Client, depth: int) -> None:
    """Regression: the JSON parser's RecursionError became a plain-text 500."""
    body = b'{"message": "hi", "x": ' + b"[" * depth + b"]" * depth + b"}"
    response = client.post(f"/api/agents/{AGENT}/run", content=body, headers={"Content-Type": "application/json"})
    assert "nested" in assert_error(response, 400)


@pytest.mark.parametrize("short", ["a", "abc", "a" * 15])
def test_a_conversation_id_shorter_than_16_characters_is_400(client: httpx.Client, short: str) -> None:
    """Conversation ids are bearer secrets: a client-chosen one must be long enough not to be guessed."""
    body = {"message": "Plan a trip to Rome", "conversation_id": short}
    response = client.post(f"/api/agents/{AGENT}/run", json=body)
    assert "16" in assert_error(response, 400)
    assert "16" in assert_error(client.get(f"/api/agent/stream/{short}"), 400)
    assert "16" in assert_error(client.post(f"/api/agent/stream/{short}/cancel"), 400)


def test_a_conversation_id_of_16_characters_is_accepted(client: httpx.Client) -> None:
    response = client.post(f"/api/agents/{AGENT}/run",
                           json={"message": "Plan a trip to Rome", "conversation_id": f"c{time.time_ns()}"[:16]})
    assert response.status_code == 202, response.text


@pytest.mark.parametrize("message", [None, 1, 1.5, True, ["hi"], {"text": "hi"}, "", "   \n\t", "MISSING"])
def test_a_message_that_is_not_a_non_empty_string_is_400(client: httpx.Client, message: object) -> None:
    body = {} if message == "MISSING" else {"message": message}
    response = client.post(f"/api/agents/{AGENT}/run", json=body)
    assert_error(response, 400)


@pytest.mark.parametrize("field", ["conversation_id", "session_id", "thread_id"])
@pytest.mark.parametrize("bad_id", HOSTILE_JSON_IDS, ids=lambda v: repr(v)[:20])
def test_a_hostile_conversation_id_in_the_body_is_400(client: httpx.Client, field: str, bad_id: object) -> None:
    response = client.post(f"/api/agents/{AGENT}/run", json={"message": "Plan a trip to Rome", field: bad_id})
    assert_error(response, 400)


@pytest.mark.parametrize("agent", ["*", "a:b", "{TravelPlanner}", "Travel Planner", "trävelplanner", "a" * 10_000,
                                   "travelplanner", "TravelPlanner\x00"], ids=lambda v: repr(v)[:20])
def test_an_unknown_agent_is_404(client: httpx.Client, agent: str) -> None:
    response = client.post(f"/api/agents/{encoded(agent)}/run", content=b"hi",
                           headers={"Content-Type": "text/plain"})
    assert_error(response, 404)


# --- GET /api/agent/stream/{conversation_id} ------------------------------------


@pytest.mark.parametrize("bad_id", HOSTILE_IDS, ids=lambda v: repr(v)[:20])
@pytest.mark.parametrize("route", ["stream", "cancel"])
def test_a_hostile_conversation_id_in_the_path_is_400(client: httpx.Client, bad_id: str, route: str) -> None:
    path = f"/api/agent/stream/{encoded(bad_id)}"
    response = client.get(path) if route == "stream" else client.post(f"{path}/cancel")
    assert_error(response, 400)


@pytest.mark.parametrize("bad_run", HOSTILE_IDS, ids=lambda v: repr(v)[:20])
@pytest.mark.parametrize("route", ["stream", "cancel"])
def test_a_hostile_run_id_is_400(client: httpx.Client, finished: dict[str, str], bad_run: str, route: str) -> None:
    path = f"/api/agent/stream/{finished['conversation_id']}"
    if route == "cancel":
        path += "/cancel"
    response = client.request("GET" if route == "stream" else "POST", path, params={"run": bad_run})
    assert_error(response, 400)


@pytest.mark.parametrize("how", ["query", "header"])
@pytest.mark.parametrize("cursor", MALFORMED_CURSORS, ids=lambda v: repr(v)[:20])
def test_a_malformed_cursor_is_400(client: httpx.Client, finished: dict[str, str], how: str, cursor: str) -> None:
    if how == "header" and cursor != cursor.strip():
        pytest.skip("HTTP strips the spaces around a header value")
    url = f"/api/agent/stream/{finished['conversation_id']}"
    if how == "query":
        response = client.get(url, params={"cursor": cursor})
    else:
        response = client.get(url, headers={"Last-Event-ID": cursor.encode()})
    assert "cursor" in assert_error(response, 400)


def test_a_cursor_from_another_conversation_is_400(client: httpx.Client, finished: dict[str, str]) -> None:
    other = client.post(f"/api/agents/{AGENT}/run", content="Plan 1 day in Oslo",
                        headers={"Content-Type": "text/plain"}).json()
    read_all(client, other["stream_url"])
    for cursor in (finished["first_event"], finished["last_event"]):
        response = client.get(f"/api/agent/stream/{other['conversation_id']}", params={"cursor": cursor})
        assert_error(response, 400)
        response = client.get(f"/api/agent/stream/{other['conversation_id']}", headers={"Last-Event-ID": cursor})
        assert_error(response, 400)


def test_a_cursor_of_another_run_of_the_same_conversation_is_400(
    client: httpx.Client, finished: dict[str, str]
) -> None:
    second = client.post(f"/api/agents/{AGENT}/run",
                         json={"message": "Make day 2 more relaxed", "conversation_id": finished["conversation_id"]})
    assert second.status_code == 202, second.text
    read_all(client, second.json()["stream_url"])
    params = {"run": second.json()["correlation_id"], "cursor": finished["last_event"]}
    response = client.get(f"/api/agent/stream/{finished['conversation_id']}", params=params)
    assert "another run" in assert_error(response, 400)


@pytest.mark.parametrize("how", ["query", "header"])
def test_a_resume_from_the_terminal_event_ends_at_once(
    client: httpx.Client, finished: dict[str, str], how: str
) -> None:
    """Regression: it used to wait with heartbeats for STREAM_MAX_SECONDS, then say "resume" (an endless loop)."""
    cursor = finished["last_event"]
    started = time.monotonic()
    if how == "query":
        response = client.get(f"/api/agent/stream/{finished['conversation_id']}", params={"cursor": cursor})
    else:
        response = client.get(finished["stream_url"], headers={"Last-Event-ID": cursor})
    assert time.monotonic() - started < 1.5, "a resume after the run's terminal event hung"
    assert response.status_code == 204, "204 is what tells an EventSource to stop reconnecting"
    assert response.content == b""


@pytest.mark.parametrize("cursor", ["99999999999999-0", "18446744073709551615-18446744073709551615", "0-0", "1-0"])
def test_a_cursor_from_the_future_or_the_past_is_400(
    client: httpx.Client, finished: dict[str, str], cursor: str
) -> None:
    response = client.get(f"/api/agent/stream/{finished['conversation_id']}", params={"cursor": cursor})
    assert_error(response, 400)


def test_a_cursor_on_an_unknown_conversation_is_404(client: httpx.Client, finished: dict[str, str]) -> None:
    response = client.get("/api/agent/stream/never-seen-before", params={"cursor": finished["last_event"]})
    assert_error(response, 404)


def test_a_trimmed_cursor_is_410_not_a_partial_replay(client: httpx.Client, redis_url: str) -> None:
    conversation = f"hostile-trimmed-{time.time_ns()}"

    async def write_a_long_run() -> str:
        log = RunLog(connect(redis_url), Retention(ttl_seconds=120, maxlen=100))
        try:
            await log.open_run(conversation, "run-1")
            await log.begin_attempt(conversation, "run-1")
            for i in range(400):  # one entry per append: the cap trims the oldest
                await log.append(conversation, "run-1", 1, [("message", f"{i} ")])
            first_chunk = (await log.redis.xrange(stream_key(conversation), count=2))[1][0]
            for i in range(400):
                await log.append(conversation, "run-1", 1, [("message", f"{i} ")])
            await log.append(conversation, "run-1", 1, [("done", "")])
            return str(first_chunk)
        finally:
            await log.redis.aclose()

    trimmed = asyncio.run(write_a_long_run())
    response = client.get(f"/api/agent/stream/{conversation}", params={"cursor": trimmed})
    assert "expired" in assert_error(response, 410)
    response = client.get(f"/api/agent/stream/{conversation}", headers={"Last-Event-ID": trimmed})
    assert_error(response, 410)


@pytest.mark.parametrize("value", [b"1-0\x00", b"\x00", b"1-0\x00; 2-0", b"\x01\x02", b"1-0\rX", b"\xff\xfe"])
def test_a_last_event_id_with_control_bytes_is_400(
    host: StandaloneHost, finished: dict[str, str], value: bytes
) -> None:
    """Sent raw (httpx refuses them). uvicorn may refuse the request before the app sees it: still a 400."""
    request = (f"GET /api/agent/stream/{finished['conversation_id']} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
               + b"Last-Event-ID: " + value + b"\r\nConnection: close\r\n\r\n")
    status, _ = raw_request(host, request)
    assert status == 400


def test_a_last_event_id_broken_by_a_bare_newline_is_400(host: StandaloneHost, finished: dict[str, str]) -> None:
    request = (f"GET /api/agent/stream/{finished['conversation_id']} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Last-Event-ID: {finished['last_event']}\nX-Injected: yes\r\nConnection: close\r\n\r\n").encode()
    status, _ = raw_request(host, request)
    assert status == 400  # the parser refuses a bare LF in the header block: nothing can be smuggled in behind it
    request = (f"GET /api/agent/stream/{finished['conversation_id']} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               "Last-Event-ID: 1-0\nX-Injected: yes\r\nConnection: close\r\n\r\n").encode()
    status, _ = raw_request(host, request)
    assert status == 400


@pytest.mark.parametrize(("accept", "expected"), [
    ("text/plain;q=abc", {"text/event-stream"}),
    ("text/plain;q=nan", {"text/event-stream"}),
    ("text/plain;q=inf, text/event-stream;q=-1", {"text/plain"}),
    ("text/plain;q=1e400", {"text/plain"}),
    ("text/plain;q=-0", {"text/event-stream"}),
    ("text/plain;q=0.5, text/event-stream;q=0.5", {"text/event-stream"}),
    ("text/event-stream;q=0, text/plain;q=0.001", {"text/plain"}),
    ("*/*;q=0", {"text/event-stream"}),  # nothing acceptable: the tie goes to SSE
    ("application/json", {"text/event-stream"}),
    (";;;,,,;q=", {"text/event-stream"}),
    ("text/*;q=0.5, text/event-stream;q=0.4", {"text/plain"}),
    ("TEXT/PLAIN", {"text/plain"}),
    ("text/plain;" + "q=1;" * 500, {"text/plain"}),
    (", ".join(["text/html;q=0.1"] * 300), {"text/event-stream"}),
    ("\u00e9/\u00e8;q=\u0661", {"text/event-stream"}),  # read as Latin-1: an unreadable q, ignored
])
def test_odd_accept_headers_get_a_sane_choice(
    client: httpx.Client, finished: dict[str, str], accept: str, expected: set[str]
) -> None:
    response = client.get(finished["stream_url"], headers={"Accept": accept.encode()})
    assert response.status_code == 200, response.text[:300]
    media = response.headers["content-type"].split(";")[0]
    assert media in expected
    assert response.text.startswith("retry:") == (media == "text/event-stream")


# --- POST /api/agent/stream/{conversation_id}/cancel ---------------------------


def test_cancel_of_unknown_things_is_404_and_of_an_ended_run_409(
    client: httpx.Client, finished: dict[str, str]
) -> None:
    assert_error(client.post("/api/agent/stream/never-seen-before/cancel"), 404)
    assert_error(client.post(f"/api/agent/stream/{finished['conversation_id']}/cancel", params={"run": "nope"}), 404)
    assert_error(client.post(f"/api/agent/stream/{finished['conversation_id']}/cancel",
                             params={"run": finished["correlation_id"]}), 409)


def test_cancel_ignores_a_huge_body(host: StandaloneHost) -> None:
    head = ("POST /api/agent/stream/never-seen-before/cancel HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {20 * 1024 * 1024}\r\n\r\n").encode()
    status, body = raw_request(host, head, then=b"{" * 64 * 1024)
    assert status == 404 and b"error" in body


# --- Routing: every /api answer is the contract's JSON error --------------------


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", f"/api/agents/{AGENT}/run", 405),
    ("PUT", f"/api/agents/{AGENT}/run", 405),
    ("DELETE", "/api/agent/stream/abc", 405),
    ("POST", "/api/agent/stream/abc", 405),
    ("GET", "/api/agent/stream/abc/cancel", 405),
    ("GET", "/api/agent/stream/", 404),
    ("GET", "/api/agent/stream/a%2Fb", 404),
    ("POST", "/api/agents//run", 404),
    ("GET", "/api/nothing-here", 404),
])
def test_a_wrong_route_or_method_is_a_json_error(client: httpx.Client, method: str, path: str, status: int) -> None:
    response = client.request(method, path)
    assert_error(response, status)


def test_head_on_health_answers_like_get_without_a_body(client: httpx.Client) -> None:
    """Regression: HEAD /api/health was 405, so HEAD-based uptime checks saw the service as broken."""
    response = client.head("/api/health")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.content == b""


# --- Redis: hostile input never leaves the key space ---------------------------


def test_zz_every_key_is_in_the_project_key_space_and_no_refused_id_reached_redis(
    redis_url: str, keys_before: set[str], client: httpx.Client, finished: dict[str, str]
) -> None:
    """Runs last in this module (name order within the module is definition order; kept last on purpose)."""
    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        created = set(r.scan_iter(count=1000)) - keys_before
        assert created, "the module created no key at all: the scan is looking at the wrong Redis"
        outside = sorted(key for key in created if not key.startswith(KEY_PREFIX))
        assert outside == []
        for key in created:
            inner = key[len(KEY_PREFIX):]
            for marker in REFUSED_MARKERS:
                assert marker not in inner, (marker, key[:100])
        for key in created:
            assert r.ttl(key) > 0, f"{key} has no expiry"
            if r.type(key) == "stream" and not key.startswith(f"{KEY_PREFIX}~wake:"):
                for _, fields in r.xrange(key, count=5):
                    assert set(fields) == {"r", "n", "k", "t"}, fields
    assert json.loads(client.get("/api/health").text)["status"] == "ok"
