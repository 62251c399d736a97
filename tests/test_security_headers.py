"""Security headers on every answer of the standalone host, and no third-party code for the API docs."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from testing import ROOT
from testing.hosts import StandaloneHost

PAGE_FILE = ROOT / "travelplanner" / "static" / "index.html"


@pytest.fixture(scope="module")
def host(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneHost]:
    env = {"STREAM_MAX_SECONDS": "1", "STREAM_HEARTBEAT_SECONDS": "0.5"}
    with StandaloneHost(redis_url, env, log_path=tmp_path_factory.mktemp("host") / "host.log") as running:
        yield running


@pytest.fixture(scope="module")
def client(host: StandaloneHost) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=host.base_url, timeout=10) as http:
        yield http


def directives(policy: str) -> dict[str, str]:
    return {name: value.strip() for name, _, value in (part.strip().partition(" ") for part in policy.split(";"))
            if name}


def page_meta_policy() -> dict[str, str]:
    match = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', PAGE_FILE.read_text("utf-8"))
    assert match
    return directives(match.group(1))


def answers(client: httpx.Client) -> dict[str, httpx.Response]:
    started = client.post("/api/agents/TravelPlanner/run", content="Plan 1 day in Oslo",
                          headers={"Content-Type": "text/plain"})
    assert started.status_code == 202, started.text
    return {
        "202 run": started,
        "SSE stream": client.get(started.json()["stream_url"]),
        "400": client.post("/api/agents/TravelPlanner/run", content=b"{", headers={"Content-Type": "application/json"}),
        "404 stream": client.get("/api/agent/stream/never-seen-before"),
        "404 route": client.get("/api/nothing-here"),
        "405": client.get("/api/agents/TravelPlanner/run"),
        "health": client.get("/api/health"),
        "openapi": client.get("/api/openapi.json"),
        "static": client.get("/static/index.html"),
    }


def test_every_answer_carries_the_security_headers(client: httpx.Client) -> None:
    for what, response in {**answers(client), "page": client.get("/")}.items():
        assert response.headers.get("x-content-type-options") == "nosniff", what
        assert response.headers.get("referrer-policy") == "no-referrer", what
        policy = directives(response.headers.get("content-security-policy", ""))
        assert policy.get("frame-ancestors") == "'none'", (what, policy)


def test_api_answers_forbid_everything_a_document_could_do(client: httpx.Client) -> None:
    """JSON and SSE are never documents: if a browser renders one anyway, nothing in it can run or load."""
    for what, response in answers(client).items():
        if what == "static":
            continue
        policy = directives(response.headers["content-security-policy"])
        assert policy == {"default-src": "'none'", "frame-ancestors": "'none'", "base-uri": "'none'",
                          "form-action": "'none'"}, (what, policy)


def test_the_page_is_served_with_its_own_policy_plus_frame_ancestors(client: httpx.Client) -> None:
    """The meta tag cannot say frame-ancestors (browsers ignore it there); the header says it as well."""
    response = client.get("/")
    assert response.status_code == 200
    sent = directives(response.headers["content-security-policy"])
    assert sent == {**page_meta_policy(), "frame-ancestors": "'none'"}


def test_no_api_ui_from_a_cdn_and_the_openapi_document_stays(client: httpx.Client) -> None:
    """No installed package ships Swagger UI, and loading it from a CDN needs the network and trusts a third
    party: the host serves the OpenAPI document only."""
    docs = client.get("/api/docs")
    assert docs.status_code == 404 and "openapi.json" in docs.json()["error"]
    document = client.get("/api/openapi.json")
    assert document.status_code == 200 and document.json()["openapi"].startswith("3.")
    for response in answers(client).values():
        assert "cdn." not in response.text and "<script src" not in response.text
