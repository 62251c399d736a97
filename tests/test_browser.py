"""travelplanner/static/index.html in a real browser against the real standalone host.

Debian's Chromium (`apt-get install chromium`), driven headless by Playwright for Python. The pip package
carries its own driver, so nothing is downloaded: `playwright install` is never run, and the browser is
launched from /usr/bin/chromium with the flags this machine needs.

The host is cut short on purpose: STREAM_MAX_SECONDS=1 makes the server end every stream response after a
second, so a run of a few seconds (OFFLINE_MODEL_CHUNKS_PER_SECOND=100) reaches the page over several
connections, and the browser's own EventSource reconnects with Last-Event-ID each time.

The page's CSP forbids eval, so every Playwright predicate here is a function ("() => ..."), never a string
expression (Playwright evaluates those with eval in the page, which the CSP blocks).
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import re
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from conftest import require_tool

from testing import ROOT
from testing.hosts import StandaloneHost

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, PlaywrightContextManager

PAGE_FILE = ROOT / "travelplanner" / "static" / "index.html"
# README's picture; the test refreshes it only when asked, so `make test` leaves the tree clean.
SCREENSHOT = ROOT / "docs" / "screenshot.png" if os.environ.get("UPDATE_SCREENSHOT") else None
VIEWPORT = {"width": 1000, "height": 800}
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP rebound.test 127.0.0.1",  # a DNS name rebound to loopback (DNS rebinding)
]
HOST_ENV = {
    "OFFLINE_MODEL_CHUNKS_PER_SECOND": "100",  # a 5-day itinerary takes about 5 s
    "STREAM_MAX_SECONDS": "1",  # the server ends each stream response after 1 s: the page must resume
    "STREAM_RETRY_MS": "250",  # and reconnects 250 ms later (the server's `retry:`)
    "STREAM_HEARTBEAT_SECONDS": "0.5",
}
RUN_TIMEOUT_MS = 60_000
TERMINAL = ("done", "error", "cancelled")
# What the plain-text rendering of a run writes for the page's events (streaming.framing.PLAIN_MARKERS).
PLAIN_RESET = "\n[Restarted: the text below replaces the text above]\n"
PLAIN_CANCELLED = "\n[Cancelled]\n"


def sync_playwright() -> PlaywrightContextManager:
    try:
        from playwright.sync_api import sync_playwright as start
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("playwright is required in CI; requirements-dev.txt installs it")
        pytest.skip("playwright is not installed (pip install -r requirements-dev.txt)")
    return start()


# --- Fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = require_tool("chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=os.path.realpath(chromium), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def host(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneHost]:
    with StandaloneHost(redis_url, HOST_ENV, log_path=tmp_path_factory.mktemp("host") / "host.log") as running:
        yield running
    assert "Traceback" not in running.log(), running.log()


class PageWatch:
    """What the page did that a person would not see: console errors, uncaught exceptions, requests."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.expected: list[str] = []  # substrings of errors a test provokes on purpose

    def attach(self, page: Page) -> None:
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("request", lambda request: self.requests.append(request.url))

    def expect_error(self, text: str) -> None:
        self.expected.append(text)

    def unexpected_errors(self) -> list[str]:
        return [error for error in self.errors if not any(text in error for text in self.expected)]


@pytest.fixture
def watch() -> PageWatch:
    return PageWatch()


@pytest.fixture
def page(browser: Browser, watch: PageWatch) -> Iterator[Page]:
    """A fresh browser context per test; the test fails if the page logged an error it did not expect."""
    context = browser.new_context(viewport=VIEWPORT)
    opened = context.new_page()
    watch.attach(opened)
    yield opened
    context.close()
    assert watch.unexpected_errors() == [], "the page logged errors (CSP violations show here too)"


# --- Helpers -------------------------------------------------------------------------------------


def turns(page: Page) -> list[dict[str, Any]]:
    return page.evaluate("() => window.travelPlanner.turns")


def wait_for_outcome(page: Page, count: int) -> dict[str, Any]:
    """Waits until the page has `count` turns and the last one has ended; returns that turn."""
    page.wait_for_function(
        "([count, terminal]) => window.travelPlanner.turns.length === count"
        " && terminal.includes(window.travelPlanner.state)",
        arg=[count, list(TERMINAL)], timeout=RUN_TIMEOUT_MS)
    return turns(page)[-1]


def final_answer(base_url: str, stream_url: str) -> str:
    """The run's text as the server has it: a plain-text GET of the stream URL, after the run."""
    response = httpx.get(base_url + stream_url, headers={"Accept": "text/plain"}, timeout=30)
    assert response.status_code == 200, response.text
    text = response.text.split(PLAIN_RESET)[-1]  # a reset: the text after it replaces the text before
    for marker in (PLAIN_CANCELLED, "\n"):  # the done / cancelled markers end the text
        if text.endswith(marker):
            return text[: -len(marker)]
    return text


def plan_run(base_url: str, message: str) -> dict[str, str]:
    """A run of the host's model, started over HTTP."""
    response = httpx.post(f"{base_url}/api/agents/TravelPlanner/run", content=message,
                          headers={"Content-Type": "text/plain"}, timeout=10)
    assert response.status_code == 202, response.text
    return dict(response.json())


def rendered_like(page: Page, answer_index: int, source: str) -> bool:
    """True when the turn's rendered answer is exactly what the renderer makes of `source`."""
    return page.evaluate(
        """([index, source]) => {
             const fresh = document.createElement("div");
             fresh.append(window.travelPlanner.renderMarkdown(source));
             return document.querySelectorAll(".answer")[index].innerHTML === fresh.innerHTML;
           }""", [answer_index, source])


def state_of(page: Page) -> tuple[str, str]:
    status = page.get_by_role("status")
    return status.get_attribute("data-state"), status.inner_text().strip()


# --- The page's own safety net -------------------------------------------------------------------


def inline_hash(html: str, tag: str) -> str:
    bodies = re.findall(rf"^<{tag}>(.*?)^</{tag}>", html, re.S | re.M)
    assert len(bodies) == 1, f"expected one inline <{tag}> starting a line"
    return "sha256-" + base64.b64encode(hashlib.sha256(bodies[0].encode()).digest()).decode()


def test_page_csp_lists_the_hashes_of_its_inline_code() -> None:
    html = PAGE_FILE.read_text(encoding="utf-8")
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', html)
    assert policy, "the page has lost its Content-Security-Policy"
    directives = dict(part.strip().split(" ", 1) for part in policy.group(1).split(";"))
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        expected = f"'{inline_hash(html, tag)}'"
        assert directives[directive] == expected, f"set {directive} {expected} in the page"
    assert directives["require-trusted-types-for"] == "'script'"
    assert not re.search(r'\b(?:src|href)="(?!data:)', html), "the page must stay self-contained (Functions)"


# --- A trip, streamed through server cuts, then continued ----------------------------------------


def test_itinerary_streams_through_server_cuts_and_the_conversation_continues(
    host: StandaloneHost, page: Page, watch: PageWatch
) -> None:
    page.goto(host.base_url + "/")
    assert state_of(page) == ("idle", "Ready")
    page.get_by_label("Your trip").fill("Plan a 5-day trip to Lisbon")
    page.get_by_role("button", name="Plan").click()

    # While the run calls its tools, the answer box says what it is doing: the README's screenshot.
    page.wait_for_function("() => (window.travelPlanner.turns[0] || {statusLog: []}).statusLog.length > 0",
                           timeout=RUN_TIMEOUT_MS, polling=10)
    shot = page.screenshot(path=SCREENSHOT)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"

    # Mid-stream, once the first day has begun.
    page.wait_for_function(
        "() => { const turn = window.travelPlanner.turns[0];"
        " return turn && turn.text.includes('**Morning') && !turn.outcome; }", timeout=RUN_TIMEOUT_MS)
    assert page.locator(".tool-status").first.is_hidden(), "the text replaces the status line"
    page.evaluate("() => { document.querySelector('.answer').firstChild.keptSinceMidStream = true; }")
    assert state_of(page)[0] in ("live", "reconnecting")
    assert page.get_by_role("button", name="Cancel").is_visible()

    first = wait_for_outcome(page, 1)
    assert first["outcome"] == "done", watch.errors
    assert state_of(page) == ("done", "Done")
    expected = final_answer(host.base_url, first["streamUrl"])
    assert "## Day 5" in expected
    assert first["text"] == expected  # resumed strictly after each Last-Event-ID: no gap, no repeat
    assert rendered_like(page, 0, expected)
    # Only what changed was rendered: the answer's first block is the node it was mid-stream, and each
    # character was rendered a few times, not once per frame (a whole re-render per frame is over 100 times).
    assert page.evaluate("() => document.querySelector('.answer').firstChild.keptSinceMidStream === true")
    assert first["renderedChars"] < 25 * len(first["text"]), (first["renderedChars"], len(first["text"]))
    assert page.locator(".answer").first.get_attribute("aria-busy") == "false"
    assert page.locator(".answer h3", has_text=re.compile(r"^Day 5 ")).count() == 1  # "## Day" under the page's own h1
    assert page.locator(".answer table th").count() == 4

    # Each tool call was shown as it was asked for and answered, until the text took the status line's place.
    assert first["tools"] == 20, first["statusLog"]  # 5 days: a forecast and the events for each, asked and answered
    assert re.fullmatch(r"Checking the weather in Lisbon on \w{3} \d{1,2} \w{3}…", first["statusLog"][0])
    assert first["statusLog"][-1].endswith(" — done") and first["status"] == ""

    # The server cut the stream several times and the browser came back each time by itself.
    assert first["reconnects"] >= 2, first
    assert first["opens"] == first["reconnects"] + 1
    log = page.evaluate("() => window.travelPlanner.stateLog")
    assert log[:3] == ["idle", "connecting", "live"] and log[-1] == "done"
    assert log.count("reconnecting") == first["reconnects"]
    assert page.get_by_role("button", name="Cancel").is_hidden()

    # Every prefix of the answer renders: what the page showed while the text was arriving.
    assert page.evaluate(
        """(text) => { for (let n = 0; n <= text.length; n += 3) window.travelPlanner.renderMarkdown(text.slice(0, n));
                       return true; }""", expected)

    # The next turn, in the same conversation.
    page.get_by_label("Continue the conversation").fill("What should I pack?")
    page.get_by_role("button", name="Continue").click()
    second = wait_for_outcome(page, 2)
    assert second["outcome"] == "done"
    assert second["conversationId"] == first["conversationId"]
    assert second["correlationId"] != first["correlationId"]
    assert second["text"] == final_answer(host.base_url, second["streamUrl"])
    assert rendered_like(page, 1, second["text"])
    assert rendered_like(page, 0, expected)  # the first answer is still there, unchanged
    assert state_of(page) == ("done", "Done")

    # A new trip starts a new conversation.
    page.get_by_role("button", name="New trip").click()
    assert page.locator(".turn").count() == 0
    assert page.get_by_role("button", name="Plan").is_enabled()
    assert page.evaluate("() => window.travelPlanner.conversationId") is None

    assert all(url.startswith(host.base_url + "/") for url in watch.requests), watch.requests


# --- Cancel, on the Functions page path ----------------------------------------------------------


def test_cancel_at_the_functions_path_with_a_key_and_an_html_message(
    host: StandaloneHost, page: Page, watch: PageWatch
) -> None:
    # The Functions app serves this same file at /api/app; every API path must work from there too, and a
    # function key given as ?code= must travel with every API request.
    page.route(f"{host.base_url}/api/app*",
               lambda route: route.fulfill(status=200, content_type="text/html; charset=utf-8",
                                           body=PAGE_FILE.read_text(encoding="utf-8")))
    page.goto(f"{host.base_url}/api/app?code=test-key")
    message = 'Plan a 4-day trip to Rome <img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script>'
    page.get_by_label("Your trip").fill(message)
    page.get_by_role("button", name="Plan").click()
    page.wait_for_function("() => (window.travelPlanner.turns[0] || {text: ''}).text.length > 200",
                           timeout=RUN_TIMEOUT_MS)
    page.get_by_role("button", name="Cancel").click()

    turn = wait_for_outcome(page, 1)
    assert turn["outcome"] == "cancelled"
    assert state_of(page) == ("cancelled", "Cancelled")
    assert turn["text"] == final_answer(host.base_url, turn["streamUrl"])
    assert page.get_by_text("Cancelled: the answer stops here.").is_visible()
    assert page.get_by_role("button", name="Continue").is_enabled()

    # The request is shown as the text it is.
    request = page.locator(".request")
    assert message in request.inner_text()
    assert request.locator("img, script").count() == 0
    assert page.evaluate("() => window.__pwned") is None

    api_calls = [url for url in watch.requests if "/api/" in url and "/api/app" not in url]
    assert any("/cancel?" in url for url in api_calls) and any("/api/agents/" in url for url in api_calls)
    assert all("code=test-key" in url for url in api_calls), api_calls


# --- Another site cannot use the user's browser against the host ----------------------------------


@pytest.fixture
def other_site() -> Iterator[tuple[str, list[bytes]]]:
    """A second web server on this machine (another origin, another site: localhost vs 127.0.0.1), serving
    whatever page a test puts in the list. Chromium blocks a public site's requests to loopback on its own
    (Private Network Access), but not a local one's, nor do all browsers."""
    pages: list[bytes] = []

    class Serve(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(pages[-1])

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Serve)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}", pages
    finally:
        server.shutdown()
        server.server_close()


def test_another_site_cannot_start_runs_through_the_users_browser(
    host: StandaloneHost, page: Page, watch: PageWatch, other_site: tuple[str, list[bytes]]
) -> None:
    """The two requests a browser sends anywhere without asking first: a no-cors fetch of text/plain, and a
    form the page submits itself. The host refuses both."""
    site, pages = other_site
    run_url = f"{host.base_url}/api/agents/TravelPlanner/run"
    pages.append((f'<!doctype html><form id="f" method="post" action="{run_url}" enctype="text/plain">'
                  '<input type="hidden" name="Plan a 3-day trip to Oslo" value="now"></form>'
                  f'<script>fetch("{run_url}", {{method: "POST", mode: "no-cors", '
                  'headers: {"Content-Type": "text/plain"}, body: "Plan a 3-day trip to Rome"});</script>').encode())
    watch.expect_error("403")
    posted = lambda response: response.url == run_url and response.request.method == "POST"  # noqa: E731
    with page.expect_response(posted) as fetched:
        page.goto(site + "/")
    assert fetched.value.status == 403
    with page.expect_response(posted) as submitted:
        page.evaluate("() => document.getElementById('f').submit()")
    assert submitted.value.status == 403
    assert "another origin" in submitted.value.json()["error"]


def test_a_rebound_dns_name_gets_nothing_from_the_host(host: StandaloneHost, page: Page, watch: PageWatch) -> None:
    """DNS rebinding: the browser resolves rebound.test to 127.0.0.1 (CHROMIUM_ARGS maps it), so a page of that
    name would be same-origin with the API. The host answers to its own names only."""
    watch.expect_error("421")
    response = page.goto(f"http://rebound.test:{host.port}/")
    assert response is not None and response.status == 421
    assert "Host" in response.json()["error"]


# --- The events a quick run of the offline model does not produce --------------------------------


def fake_api(page: Page, base_url: str, stream: dict[str, Any]) -> None:
    """Answers the page's run request, and then its stream request with `stream` (route.fulfill arguments)."""
    conversation, run = "conv-1", "run-1"
    accepted = {"status": "accepted", "conversation_id": conversation, "correlation_id": run,
                "stream_url": f"/api/agent/stream/{conversation}?run={run}"}
    page.route(f"{base_url}/api/agents/TravelPlanner/run",
               lambda route: route.fulfill(status=202, json=accepted))
    page.route(f"{base_url}/api/agent/stream/**", lambda route: route.fulfill(**stream))


def sse(*events: tuple[str, str, str]) -> dict[str, Any]:
    frames = ["retry: 100\n"] + [
        f"id: {event_id}\nevent: {kind}\n" + "".join(f"data: {line}\n" for line in data.split("\n"))
        for event_id, kind, data in events
    ]
    return {"status": 200, "content_type": "text/event-stream", "body": "\n".join(frames) + "\n"}


def start_fake_run(page: Page, base_url: str, stream: dict[str, Any]) -> dict[str, Any]:
    fake_api(page, base_url, stream)
    page.goto(base_url + "/")
    page.get_by_label("Your trip").fill("Plan a trip")
    page.get_by_label("Your trip").press("Control+Enter")  # the keyboard way to send
    return wait_for_outcome(page, 1)


def test_reset_discards_the_text_so_far_and_multiline_data_arrives_whole(host: StandaloneHost, page: Page) -> None:
    turn = start_fake_run(page, host.base_url, sse(
        ("1-0", "message", "# Old plan\n\nDay 1: "),
        ("2-0", "message", "museums"),
        ("3-0", "reset", "the streamed answer failed; the complete answer follows"),
        ("4-0", "message", "# New plan\n\n"),
        ("5-0", "message", "- Day 1: the *river*\n- Day 2: the hills\n"),
        ("6-0", "done", "[DONE]"),
    ))
    assert turn["outcome"] == "done" and turn["resets"] == 1
    assert turn["text"] == "# New plan\n\n- Day 1: the *river*\n- Day 2: the hills\n"
    assert page.locator(".answer").inner_text().count("Old plan") == 0
    assert page.locator(".answer li em").inner_text() == "river"
    assert page.get_by_text("The answer restarted (the streamed answer failed").is_visible()


def tool(call_id: str, status: str, label: str) -> str:
    return json.dumps({"call_id": call_id, "name": "get_weather_forecast", "status": status, "label": label,
                       "arguments": {"destination": "Oslo"}})


def test_a_tool_status_shows_until_text_replaces_it_and_a_reset_drops_it(host: StandaloneHost, page: Page) -> None:
    """Unknown event types are ignored; the status line is replaced by the text, and dropped by a reset."""
    fake_api(page, host.base_url, sse(
        ("1-0", "tool", tool("a", "started", "Checking the weather in Oslo")),
        ("2-0", "reset", "restarted"),
        ("3-0", "tool", tool("b", "started", "Checking the weather in Oslo on Mon 1 Jun")),
        ("4-0", "future-kind", '{"anything": true}'),
    ))  # no terminal event: the run is still calling its tools when the response ends
    page.goto(host.base_url + "/")
    page.get_by_label("Your trip").fill("Plan a trip")
    page.get_by_role("button", name="Plan").click()
    status = page.locator(".tool-status")
    status.filter(has_text="on Mon 1 Jun…").wait_for(timeout=RUN_TIMEOUT_MS)
    assert status.inner_text() == "Checking the weather in Oslo on Mon 1 Jun…"
    assert turns(page)[0]["statusLog"] == ["Checking the weather in Oslo…",
                                           "Checking the weather in Oslo on Mon 1 Jun…"]
    page.unroute(f"{host.base_url}/api/agent/stream/**")

    page.route(f"{host.base_url}/api/agent/stream/**", lambda route: route.fulfill(**sse(
        ("5-0", "tool", tool("b", "completed", "Checking the weather in Oslo on Mon 1 Jun")),
        ("6-0", "message", "# Oslo\n\nDay 1: the fjord"),
        ("7-0", "usage", '{"input_tokens":1096,"output_tokens":165,"total_tokens":1261}'),
        ("8-0", "done", "[DONE]"),
    )))
    turn = wait_for_outcome(page, 1)  # the browser resumed after 4-0 by itself
    assert turn["outcome"] == "done" and turn["text"] == "# Oslo\n\nDay 1: the fjord"
    assert turn["statusLog"][-1] == "Checking the weather in Oslo on Mon 1 Jun — done" and turn["status"] == ""
    assert status.is_hidden()
    assert page.get_by_text("1,261 tokens (1,096 in, 165 out)").is_visible()


def test_an_error_event_ends_the_run_with_its_message(host: StandaloneHost, page: Page) -> None:
    turn = start_fake_run(page, host.base_url, sse(
        ("1-0", "message", "Day 1: "),
        ("2-0", "error", "the model is unavailable"),
    ))
    assert turn["outcome"] == "error" and turn["text"] == "Day 1: "
    assert state_of(page) == ("error", "Error: the model is unavailable")


def test_a_refused_stream_shows_the_servers_reason(host: StandaloneHost, page: Page, watch: PageWatch) -> None:
    refused = {"status": 404, "json": {"error": "no such run (unknown, or expired): run-1"}}
    watch.expect_error("404 (Not Found)")
    turn = start_fake_run(page, host.base_url, refused)
    assert turn["outcome"] == "error"
    assert state_of(page) == ("error", "Error: no such run (unknown, or expired): run-1")


# --- Markdown from the model cannot become HTML --------------------------------------------------

HOSTILE_MARKDOWN = [
    'Hello <img src=x onerror="window.__pwned=\'img\'"> world',
    "<script>window.__pwned = 'script'</script>",
    "**<svg onload=\"window.__pwned='svg'\"></svg>**",
    "<a href=\"javascript:window.__pwned='a'\">click</a>",
    "[click](javascript:window.__pwned='link')",
    "[click](JaVaScRiPt:window.__pwned='link2')",
    "[data](data:text/html,<script>window.__pwned='data'</script>)",
    "<javascript:window.__pwned='autolink'>",
    "![x](javascript:window.__pwned='image')",
    "![tracking pixel](https://example.invalid/pixel.png)",
    "| a | b |\n| --- | --- |\n| <iframe src=\"javascript:window.__pwned='iframe'\"></iframe> | ok |",
    "```html\n<script>window.__pwned='fenced'</script>\n```",
    "`<img src=x onerror=window.__pwned='code'>`",
    "> <style>body{display:none}</style>\n> quoted",
    "- <details open ontoggle=\"window.__pwned='details'\">x</details>",
    "[a](https://example.org/\"onmouseover=\"window.__pwned='attr')",
    ">" * 5000 + " deep",
    "*" * 5000,
]
ALLOWED_TAGS = {"A", "BLOCKQUOTE", "BR", "CODE", "DEL", "DIV", "EM", "H2", "H3", "H4", "H5", "H6", "HR", "LI", "OL",
                "P", "PRE", "SPAN", "STRONG", "TABLE", "TBODY", "TD", "TH", "THEAD", "TR", "UL"}


def test_markdown_from_the_model_builds_no_html_and_runs_no_script(
    host: StandaloneHost, page: Page, watch: PageWatch
) -> None:
    page.goto(host.base_url + "/")
    found = page.evaluate(
        """async (sources) => {
             const box = document.createElement("div");
             document.body.append(box);  // attached, so anything that could load or fire would
             for (const source of sources) box.append(window.travelPlanner.renderMarkdown(source));
             await new Promise((resolve) => setTimeout(resolve, 300));
             const elements = [...box.querySelectorAll("*")];
             return {
               tags: [...new Set(elements.map((element) => element.tagName))],
               attributes: [...new Set(elements.flatMap((element) => element.getAttributeNames()))],
               hrefs: elements.filter((element) => element.hasAttribute("href")).map((element) => element.href),
               text: box.textContent,
               pwned: window.__pwned ?? null,
             };
           }""", HOSTILE_MARKDOWN)
    assert found["pwned"] is None
    assert set(found["tags"]) <= ALLOWED_TAGS, found["tags"]
    assert set(found["attributes"]) <= {"href", "rel", "target", "class", "scope", "tabindex", "role",
                                        "aria-label", "start"}, found["attributes"]
    assert found["hrefs"] and all(href.startswith("https://") for href in found["hrefs"]), found["hrefs"]
    for visible in ("<img src=x onerror=", "<script>window.__pwned", "<iframe src=", "javascript:window.__pwned"):
        assert visible in found["text"], f"{visible!r} should be shown as text"

    # Defence in depth: Trusted Types make every HTML-string sink throw on this page.
    watch.expect_error("requires 'TrustedHTML' assignment")
    refused = page.evaluate(
        """() => { try { document.body.insertAdjacentHTML("beforeend", "<img src=x onerror='window.__pwned=1'>");
                         return "allowed"; } catch (error) { return error.name; } }""")
    assert refused == "TypeError"


RENDERED = [
    ("# Title", "<h2>Title</h2>"),
    ("## Day 1 — Lisbon", "<h3>Day 1 — Lisbon</h3>"),
    ("**bold** and *em* and _em_ and ~~gone~~", "<p><strong>bold</strong> and <em>em</em> and <em>em</em> and "
                                                 "<del>gone</del></p>"),
    ("***both***", "<p><strong><em>both</em></strong></p>"),
    ("snake_case_name and 2 * 3 * 4", "<p>snake_case_name and 2 * 3 * 4</p>"),
    ("**Morning.** Walk\n- Also: a market", "<p><strong>Morning.</strong> Walk</p><ul><li>Also: a market</li></ul>"),
    ("- a\n  - b\n- c", "<ul><li>a<ul><li>b</li></ul></li><li>c</li></ul>"),
    ("1. one\n2. two", "<ol><li>one</li><li>two</li></ol>"),
    ("3. three", '<ol start="3"><li>three</li></ol>'),
    ("- a\n\n- b", "<ul><li><p>a</p></li><li><p>b</p></li></ul>"),
    ("line one  \nline two", "<p>line one<br>line two</p>"),
    ("`a *b*` \\*c\\*", "<p><code>a *b*</code> *c*</p>"),
    ("> quoted", "<blockquote><p>quoted</p></blockquote>"),
    ("```\ncode\n  block\n```", "<pre><code>code\n  block</code></pre>"),
    ("---", "<hr>"),
    ("| A | B |\n|:-:|--:|\n| 1 | 2 |",
     '<div class="table-wrap" tabindex="0" role="region" aria-label="Table"><table><thead><tr>'
     '<th class="align-center" scope="col">A</th><th class="align-right" scope="col">B</th></tr></thead><tbody>'
     '<tr><td class="align-center">1</td><td class="align-right">2</td></tr></tbody></table></div>'),
    ("[site](https://example.org/a_b)",
     '<p><a href="https://example.org/a_b" rel="noopener noreferrer nofollow" target="_blank">site</a></p>'),
    ("see https://example.org/x.",
     '<p>see <a href="https://example.org/x" rel="noopener noreferrer nofollow" target="_blank">'
     "https://example.org/x</a>.</p>"),
    ("**unclosed", "<p>**unclosed</p>"),
]


@pytest.mark.parametrize(("source", "html"), RENDERED, ids=[source[:24] for source, _ in RENDERED])
def test_markdown_renders(host: StandaloneHost, page: Page, source: str, html: str) -> None:
    page.goto(host.base_url + "/")
    rendered = page.evaluate(
        """(source) => { const box = document.createElement("div");
                         box.append(window.travelPlanner.renderMarkdown(source)); return box.innerHTML; }""",
        source)
    assert rendered == html


# --- Rendering cost: linear in the answer, and only what changed --------------------------------------

# Inputs on which the renderer used to rescan the rest of the text from every marker: "*a " repeated took 7.7 s.
PATHOLOGICAL = {
    "emphasis": "*a " * 20_000, "underscore": "_a " * 20_000, "strong": "**a " * 20_000, "both": "***a " * 20_000,
    "strike": "~~a " * 20_000, "unclosed links": "[a " * 20_000, "nested brackets": "[" * 20_000 + "]",
    "images": "![a" * 20_000, "code runs": "`` a`" * 20_000, "lines of markers": "*a\n" * 40_000,
    "quoted lines": "> a\n" * 40_000, "table-like lines": "|a|b|\n" * 40_000, "items": "- a\n" * 40_000,
    "urls": "http://a " * 20_000,
}


def test_rendering_takes_time_linear_in_the_answers_length(host: StandaloneHost, page: Page) -> None:
    page.goto(host.base_url + "/")
    took = page.evaluate(
        """(sources) => Object.fromEntries(Object.entries(sources).map(([name, source]) => {
             const started = performance.now();
             window.travelPlanner.renderMarkdown(source);
             return [name, performance.now() - started];
           }))""", PATHOLOGICAL)
    slow = {name: round(ms) for name, ms in took.items() if ms > 1500}  # linear: tens of ms on this machine
    assert not slow, f"rendering took over 1.5 s (ms): {slow}"


def test_incremental_rendering_is_the_full_rendering_at_every_step(host: StandaloneHost, page: Page) -> None:
    """The page renders a growing answer block by block; after every update its DOM must be exactly what rendering
    the whole text so far gives, whatever the chunking (here: sizes 1 to 40, each source several ways)."""
    answer = final_answer(host.base_url, plan_run(host.base_url, "Plan a 4-day trip to Kyoto")["stream_url"])
    page.goto(host.base_url + "/")
    sources = [answer, *[source for source, _ in RENDERED], *HOSTILE_MARKDOWN[:-2],
               "para\n| a | b |\n|---|---|\n| 1 | 2 |\n\nafter", "- a\n\n\n- b\n\nc", "```\nx\n\n\ny\n```\nz",
               "> q\n> r\n\n> s\n\n# H\ntext  \nmore", "1. a\n2. b\n\n3. c\n\n   d\n\ne"]
    mismatches = page.evaluate(
        """(sources) => {
             const rendered = (text) => {
               const box = document.createElement("div");
               box.append(window.travelPlanner.renderMarkdown(text));
               return box.innerHTML;
             };
             const mismatches = [];
             sources.forEach((source, index) => {
               for (let seed = 1; seed <= 3; seed += 1) {
                 const box = document.createElement("div");
                 const view = window.travelPlanner.markdownView(box);
                 let at = 0;
                 let random = seed * 7919 + index;
                 while (at < source.length) {
                   random = (random * 48271) % 2147483647;
                   at = Math.min(source.length, at + 1 + (random % 40));
                   view.update(source.slice(0, at));
                   if (box.innerHTML !== rendered(source.slice(0, at))) {
                     mismatches.push({ index, seed, at, text: source.slice(0, at).slice(-80) });
                     break;
                   }
                 }
               }
             });
             return mismatches;
           }""", sources)
    assert mismatches == []


def test_a_growing_answer_keeps_its_finished_blocks_and_renders_little_twice(host: StandaloneHost, page: Page) -> None:
    answer = final_answer(host.base_url, plan_run(host.base_url, "Plan a 5-day trip to Lisbon")["stream_url"])
    page.goto(host.base_url + "/")
    found = page.evaluate(
        """(answer) => {
             const box = document.createElement("div");
             const view = window.travelPlanner.markdownView(box);
             let first = null;
             for (let at = 10; at < answer.length + 10; at += 10) {  // 10 characters a frame
               view.update(answer.slice(0, at));
               if (at > answer.length / 2) first = first || box.firstChild;  // long since complete
             }
             return { same: box.firstChild === first, renderedChars: view.renderedChars, length: answer.length };
           }""", answer)
    assert found["same"], "the first block was rendered anew after it was complete"
    # A full re-render per frame renders about length² / 20 characters (here: over 150 times the answer).
    assert found["renderedChars"] < 25 * found["length"], found


def test_the_page_is_usable_on_a_narrow_screen(host: StandaloneHost, page: Page) -> None:
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(host.base_url + "/")
    overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0
    assert page.get_by_role("button", name="Plan").is_visible()
    assert page.get_by_role("status").is_visible()
