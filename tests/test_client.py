"""client.py against the real standalone host: the CLI in a subprocess, and its event generator in-process.

The reference for "what the client must print" is always the server's own plain-text rendering of the
run (`Accept: text/plain`, read in one go after the run), compared byte for byte. Streams are broken on
purpose three ways: the server ends responses early (STREAM_MAX_SECONDS=1), a TCP proxy cuts connections
at random byte offsets (mid-event, mid-line, mid-character, mid-headers), and the host restarts.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

import client
from redis_stream_response_handler import RunLog
from testing import ROOT
from testing.hosts import StandaloneHost, free_port
from testing.tcp_proxy import CuttingProxy
from testing.waiting import until_sync

MESSAGE = "Plan a 3-day trip to Tokyo"
CLIENT_ENV_NAMES = ("TRAVELPLANNER_URL", "TRAVELPLANNER_API_KEY", "API_KEY")
RESTARTED = b"\n[Restarted: the text below replaces the text above]\n"


# --- hosts and helpers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host(redis_url: str) -> Iterator[StandaloneHost]:
    """Runs of about 1.5 s (200 chunks a second)."""
    with StandaloneHost(redis_url, {"OFFLINE_MODEL_CHUNKS_PER_SECOND": "200"}) as running:
        yield running


@pytest.fixture(scope="module")
def short_host(redis_url: str) -> Iterator[StandaloneHost]:
    """Ends every stream response after 1 s (the smallest STREAM_MAX_SECONDS) while runs last about 3.5 s."""
    env = {"OFFLINE_MODEL_CHUNKS_PER_SECOND": "80", "STREAM_MAX_SECONDS": "1", "STREAM_HEARTBEAT_SECONDS": "0.2"}
    with StandaloneHost(redis_url, env) as running:
        yield running


def run_client(*args: str, env: dict[str, str] | None = None,
               timeout: float = 40) -> subprocess.CompletedProcess[bytes]:
    clean = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV_NAMES}
    return subprocess.run([sys.executable, str(ROOT / "client.py"), *args], env={**clean, **(env or {})},
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def start_run(base_url: str, message: str = MESSAGE, **body: str) -> dict[str, str]:
    response = httpx.post(f"{base_url}/api/agents/TravelPlanner/run", json={"message": message, **body})
    assert response.status_code == 202, response.text
    return dict(response.json())


def plain_text(base_url: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    """The run's text as the server renders it, read in one uninterrupted response (waits for the end)."""
    response = httpx.get(base_url + path, headers={"Accept": "text/plain", **(headers or {})}, timeout=30)
    assert response.status_code == 200, response.text
    return response.content


def sse_events(base_url: str, path: str) -> list[client.StreamEvent]:
    with httpx.Client(base_url=base_url, timeout=30) as http, connect_sse(http, "GET", path) as source:
        return [client.StreamEvent(e.event, e.data, e.id) for e in source.iter_sse() if e.id and e.data]


def conversation_of(stderr: bytes) -> str:
    match = re.search(rb"--conversation (\S+)", stderr)
    assert match, stderr.decode()
    return match[1].decode()


async def write_run(log: RunLog, entries: list[tuple[str, str]]) -> tuple[str, str]:
    """A run written straight into the run log (as a worker would), for outcomes the demo model never has."""
    conversation, run = f"test-{uuid.uuid4().hex}", uuid.uuid4().hex
    await log.open_run(conversation, run)
    attempt = await log.begin_attempt(conversation, run)
    assert attempt is not None
    for entry in entries:
        assert await log.append(conversation, run, attempt, [entry]) == "ok"
    return conversation, run


# --- the command ----------------------------------------------------------------------------------


def test_plain_output_is_the_runs_text_byte_for_byte(host: StandaloneHost) -> None:
    result = run_client("--plain", "--url", host.base_url, MESSAGE)

    assert result.returncode == 0, result.stderr.decode()
    conversation = conversation_of(result.stderr)
    assert result.stdout == plain_text(host.base_url, f"/api/agent/stream/{conversation}")
    assert b"# 3-day itinerary for Tokyo" in result.stdout
    assert b"reconnecting" not in result.stderr


def test_not_a_terminal_means_plain_without_the_flag(host: StandaloneHost) -> None:
    result = run_client("--url", host.base_url, MESSAGE)

    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == plain_text(host.base_url, f"/api/agent/stream/{conversation_of(result.stderr)}")


def test_server_ending_responses_mid_run_loses_and_repeats_nothing(short_host: StandaloneHost) -> None:
    started = time.monotonic()
    result = run_client("--plain", "--url", short_host.base_url, MESSAGE)

    assert result.returncode == 0, result.stderr.decode()
    assert time.monotonic() - started > 2.5, "the run must outlast several 1 s responses"
    assert result.stdout == plain_text(short_host.base_url, f"/api/agent/stream/{conversation_of(result.stderr)}")
    assert result.stderr.count(b"reconnecting") >= 2, result.stderr.decode()


def test_connections_cut_at_random_bytes_lose_and_repeat_nothing(host: StandaloneHost) -> None:
    accepted = start_run(host.base_url)
    with CuttingProxy(host.port, min_bytes=50, max_bytes=1500, seed=7) as proxy:
        result = run_client("--plain", "--url", proxy.base_url, "--follow", accepted["conversation_id"],
                            "--run", accepted["correlation_id"])

    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == plain_text(host.base_url, accepted["stream_url"])
    assert proxy.cuts >= 5, f"only {proxy.cuts} cuts: the test did not break the stream"
    assert result.stderr.count(b"reconnecting") >= proxy.cuts - 1, result.stderr.decode()


def test_server_restart_mid_run_is_survived(redis_url: str, tmp_path: Path) -> None:
    """The host goes away mid-run (connections refused for seconds) and comes back on the same Redis.

    The host is killed (a graceful stop would let the run finish first). The embedded durable backend
    loses the run with the process, so the restarted host ends it as stalled: the client must
    reconnect, print every chunk once, then report the error (exit 1).
    """
    env = {"OFFLINE_MODEL_CHUNKS_PER_SECOND": "60", "STREAM_STALL_SECONDS": "2", "REDIS_OUTAGE_SECONDS": "1"}
    first = StandaloneHost(redis_url, env).start()
    second = StandaloneHost(redis_url, env, port=first.port)
    printed = tmp_path / "stdout"
    try:
        with printed.open("wb") as stdout_file:
            process = subprocess.Popen(
                [sys.executable, str(ROOT / "client.py"), "--plain", "--url", first.base_url, "--max-wait", "30",
                 MESSAGE], stdout=stdout_file, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                env={k: v for k, v in os.environ.items() if k not in CLIENT_ENV_NAMES})
        until_sync(lambda: printed.stat().st_size > 100, what="the client printing the run's first chunks")
        first.kill()
        second.start()
        _, stderr = process.communicate(timeout=30)
        stdout = printed.read_bytes()
        assert process.returncode == 1, stderr.decode()
        served = plain_text(second.base_url, f"/api/agent/stream/{conversation_of(stderr)}")
    finally:
        first.kill()
        second.stop()
    assert b"reconnecting" in stderr
    assert b"stalled" in stderr
    assert len(stdout) > 100, "the restart came before the run had streamed anything"
    assert served.startswith(stdout) and re.fullmatch(rb"\n\[Error: the run stalled[^\]]*\]\n", served[len(stdout):])


async def test_error_event_exits_1_with_the_message(host: StandaloneHost, run_log: RunLog) -> None:
    conversation, _ = await write_run(run_log, [("message", "Day 1: "), ("error", "the model quota ran out")])

    result = run_client("--plain", "--url", host.base_url, "--follow", conversation)

    assert result.returncode == 1
    assert result.stdout == b"Day 1: "
    assert b"error: the model quota ran out" in result.stderr


def test_cancelled_run_exits_3(host: StandaloneHost) -> None:
    accepted = start_run(host.base_url)
    cancel = httpx.post(f"{host.base_url}/api/agent/stream/{accepted['conversation_id']}/cancel",
                        params={"run": accepted["correlation_id"]})
    assert cancel.status_code == 200, cancel.text

    result = run_client("--plain", "--url", host.base_url, "--follow", accepted["conversation_id"])

    assert result.returncode == 3, result.stderr.decode()
    assert b"cancelled: cancelled by request" in result.stderr


async def test_reset_discards_the_text_so_far(host: StandaloneHost, run_log: RunLog) -> None:
    conversation, _ = await write_run(run_log, [
        ("message", "Old plan: "), ("reset", "the streamed answer failed; the complete answer follows"),
        ("message", "New plan."), ("done", "")])
    served = plain_text(host.base_url, f"/api/agent/stream/{conversation}")

    result = run_client("--plain", "--url", host.base_url, "--follow", conversation)

    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == served == b"Old plan: " + RESTARTED + b"New plan.\n"


def test_follow_a_finished_run_prints_the_same_text(host: StandaloneHost) -> None:
    accepted = start_run(host.base_url)
    served = plain_text(host.base_url, accepted["stream_url"])
    events = sse_events(host.base_url, accepted["stream_url"])
    middle = len(events) // 2

    whole = run_client("--plain", "--url", host.base_url, "--follow", accepted["conversation_id"])
    rest = run_client("--plain", "--url", host.base_url, "--follow", accepted["conversation_id"],
                      "--run", accepted["correlation_id"], "--cursor", events[middle].id)

    assert whole.returncode == 0 and whole.stdout == served
    assert rest.returncode == 0, rest.stderr.decode()
    assert rest.stdout == "".join(e.text for e in events[middle + 1:] if e.kind == "message").encode() + b"\n"


def test_conversation_continues(host: StandaloneHost) -> None:
    first = run_client("--plain", "--url", host.base_url, MESSAGE)
    conversation = conversation_of(first.stderr)

    second = run_client("--plain", "--url", host.base_url, "--conversation", conversation,
                        "Make day 2 a rainy-day plan")

    assert second.returncode == 0, second.stderr.decode()
    assert second.stdout == plain_text(host.base_url, f"/api/agent/stream/{conversation}")  # the latest run
    assert b"Tokyo" in second.stdout, "the second turn does not know the first"
    assert second.stdout != first.stdout


def test_unreachable_server_exits_2_with_a_message() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    started = run_client("--url", url, MESSAGE)
    followed = run_client("--url", url, "--follow", "some-conversation")

    for result in (started, followed):
        assert result.returncode == 2
        assert f"cannot reach the TravelPlanner server at {url}".encode() in result.stderr
        assert result.stdout == b""


def test_http_errors_print_the_servers_error(host: StandaloneHost) -> None:
    unknown = run_client("--url", host.base_url, "--follow", "no-such-conversation")
    bad_cursor = run_client("--url", host.base_url, "--follow", "no-such-conversation", "--cursor", "bogus")

    assert unknown.returncode == 1
    assert b"the server answered 404: no such conversation" in unknown.stderr
    assert bad_cursor.returncode == 1
    assert b"the server answered 400: cursor must be a stream entry id" in bad_cursor.stderr


def test_gives_up_after_max_wait_and_says_how_to_resume(host: StandaloneHost) -> None:
    accepted = start_run(host.base_url)
    plain_text(host.base_url, accepted["stream_url"])  # finished: everything after the cut is history
    with CuttingProxy(host.port, min_bytes=3000, max_bytes=3000, max_connections=1) as proxy:
        started = time.monotonic()
        result = run_client("--plain", "--url", proxy.base_url, "--max-wait", "1", "--follow",
                            accepted["conversation_id"], "--run", accepted["correlation_id"])

    assert result.returncode == 4, result.stderr.decode()
    assert 1 <= time.monotonic() - started < 10
    hint = re.search(rb"python client.py --follow (\S+) --run (\S+) --cursor (\S+)", result.stderr)
    assert hint, result.stderr.decode()
    resumed = run_client("--plain", "--url", host.base_url, "--follow", hint[1].decode(), "--run", hint[2].decode(),
                         "--cursor", hint[3].decode())
    assert result.stdout + resumed.stdout == plain_text(host.base_url, accepted["stream_url"])


def test_api_key(redis_url: str) -> None:
    with StandaloneHost(redis_url, {"OFFLINE_MODEL_CHUNKS_PER_SECOND": "0", "API_KEY": "s3cret"}) as keyed:
        refused = run_client("--url", keyed.base_url, MESSAGE)
        by_flag = run_client("--url", keyed.base_url, "--api-key", "s3cret", MESSAGE)
        by_env = run_client("--url", keyed.base_url, MESSAGE, env={"TRAVELPLANNER_API_KEY": "s3cret"})
        by_host_env = run_client(MESSAGE, env={"TRAVELPLANNER_URL": keyed.base_url, "API_KEY": "s3cret"})
        served = plain_text(keyed.base_url, f"/api/agent/stream/{conversation_of(by_flag.stderr)}",
                            {"x-api-key": "s3cret"})

    assert refused.returncode == 1
    assert b"the server answered 401: missing or wrong API key" in refused.stderr
    for result in (by_flag, by_env, by_host_env):
        assert result.returncode == 0, result.stderr.decode()
    assert by_flag.stdout == served


def test_terminal_gets_rendered_markdown(host: StandaloneHost) -> None:
    """On a terminal the answer is markdown rendered by rich: headings without their `#`."""
    screen = run_on_terminal(host)
    text = screen.decode(errors="replace")
    assert "3-day itinerary for Tokyo" in text
    assert "# 3-day itinerary" not in text and "## At a glance" not in text
    assert "\x1b[" in text  # styled


def test_terminal_shows_what_the_run_is_doing_until_its_text_replaces_it(host: StandaloneHost) -> None:
    screen = run_on_terminal(host)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace"))
    assert re.search(r"Checking the weather in Tokyo on \w{3} \d{1,2} \w{3}…", text), text[:2000]
    assert "Looking up events in Tokyo" in text
    final = text[text.rindex("Checking the weather"):]  # after the last status drawn: the answer, printed whole
    assert "3-day itinerary for Tokyo" in final


def test_status_lines_and_usage_notes_read_the_events_json() -> None:
    def tool(**step: object) -> client.StreamEvent:
        return client.StreamEvent("tool", json.dumps(step), "1-0")

    assert client.step_status(tool(label="Checking the weather in Oslo", status="started")) == \
        "Checking the weather in Oslo…"
    assert client.step_status(tool(label="Checking the weather in Oslo", status="completed")) == \
        "Checking the weather in Oslo — done"
    assert client.step_status(tool(name="lookup", status="failed")) == "Running lookup — failed"
    assert client.step_status(client.StreamEvent("tool", "not json", "1-0")) is None
    usage = client.StreamEvent("usage", '{"input_tokens":1096,"output_tokens":165,"total_tokens":1261}', "1-0")
    assert client.usage_note(usage) == "1,261 tokens (1,096 in, 165 out)"
    assert client.usage_note(client.StreamEvent("usage", "{}", "1-0")) is None


async def test_plain_output_skips_tool_activity_and_unknown_events(host: StandaloneHost, run_log: RunLog) -> None:
    conversation, _ = await write_run(run_log, [
        ("tool", '{"call_id":"c","name":"get_weather_forecast","status":"started","label":"Checking"}'),
        ("message", "Day 1."), ("usage", '{"input_tokens":5,"output_tokens":2,"total_tokens":7}'), ("done", "")])
    served = plain_text(host.base_url, f"/api/agent/stream/{conversation}")

    result = run_client("--plain", "--url", host.base_url, "--follow", conversation)

    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == served == b"Day 1.\n"
    assert b"used 7 tokens (5 in, 2 out)" in result.stderr


def run_on_terminal(host: StandaloneHost) -> bytes:
    """`client.py MESSAGE` with its stdout on a pseudo-terminal: what the terminal showed (it must exit 0)."""
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV_NAMES}
    process = subprocess.Popen([sys.executable, str(ROOT / "client.py"), "--url", host.base_url, MESSAGE],
                               stdout=terminal, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               env={**env, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"})
    os.close(terminal)
    screen = bytearray()
    reader = threading.Thread(target=_drain, args=(controller, screen), daemon=True)
    reader.start()
    _, stderr = process.communicate(timeout=30)
    reader.join(5)
    os.close(controller)
    assert process.returncode == 0, stderr.decode()
    return bytes(screen)


def _drain(fd: int, into: bytearray) -> None:
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            return
        if not data:
            return
        into += data


def test_usage_errors_exit_2() -> None:
    assert run_client().returncode == 2
    assert run_client("--follow", "c", "a message").returncode == 2
    assert run_client("--cursor", "1-0", "a message").returncode == 2
    assert run_client("--conversation", "c", "--follow", "c").returncode == 2


# --- the event generator, in-process --------------------------------------------------------------


def test_stream_events_yields_each_event_once_across_server_closes(short_host: StandaloneHost) -> None:
    accepted = start_run(short_host.base_url)
    notices: list[str] = []

    with httpx.Client(base_url=short_host.base_url, timeout=client.TIMEOUT) as http:
        events = list(client.stream_events(http, accepted["stream_url"], notify=notices.append))

    ids = [tuple(map(int, e.id.split("-"))) for e in events]
    assert ids == sorted(set(ids)), "an event came twice or out of order"
    kinds = [e.kind for e in events]
    first_text = kinds.index("message")
    assert set(kinds[:first_text]) == {"tool"} and set(kinds[first_text:-1]) == {"message"} and kinds[-1] == "done"
    text = "".join(e.text for e in events if e.kind == "message") + "\n"
    assert text.encode() == plain_text(short_host.base_url, accepted["stream_url"])
    assert len(notices) >= 2 and all(n.startswith("reconnecting") for n in notices)


def test_stream_events_resumes_strictly_after_the_cursor(host: StandaloneHost) -> None:
    accepted = start_run(host.base_url)
    plain_text(host.base_url, accepted["stream_url"])
    every = sse_events(host.base_url, accepted["stream_url"])

    with httpx.Client(base_url=host.base_url) as http:
        after = list(client.stream_events(http, accepted["stream_url"], last_event_id=every[10].id))

    assert after == every[11:]


async def test_stream_events_passes_a_reset_through(host: StandaloneHost, run_log: RunLog) -> None:
    conversation, _ = await write_run(run_log, [("message", "a"), ("reset", "again"), ("message", "b"), ("done", "")])

    with httpx.Client(base_url=host.base_url) as http:
        events = list(client.stream_events(http, client.stream_url(conversation)))

    assert [(e.kind, e.text) for e in events] == [("message", "a"), ("reset", "again"), ("message", "b"),
                                                  ("done", "[DONE]")]


def test_stream_events_refusals_carry_the_servers_error(host: StandaloneHost) -> None:
    with httpx.Client(base_url=host.base_url) as http:
        with pytest.raises(client.ServerRefused, match="404: no such conversation") as unknown:
            list(client.stream_events(http, client.stream_url("no-such-conversation")))
        with pytest.raises(client.ServerRefused, match="400: cursor must be a stream entry id"):
            list(client.stream_events(http, client.stream_url("no-such-conversation"), last_event_id="bogus"))
    assert unknown.value.status == 404


def test_stream_events_unreachable_fails_fast_or_gives_up() -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{free_port()}") as http:
        with pytest.raises(client.Unreachable):
            list(client.stream_events(http, client.stream_url("c"), fail_fast=True))
        started = time.monotonic()
        notices: list[str] = []
        with pytest.raises(client.StreamLost, match="gave up reconnecting") as lost:
            list(client.stream_events(http, client.stream_url("c"), last_event_id="1-0", max_wait=1.0,
                                      notify=notices.append))
    assert 1.0 <= time.monotonic() - started < 4
    assert lost.value.last_event_id == "1-0"
    assert len(notices) >= 2  # backing off: 0.25 s, 0.5 s, ...
