"""What another site can make a browser send to the standalone host: refused. Non-browser clients: unchanged.

With no API key (the default on loopback) any web page the user visits could
otherwise start runs (a no-cors fetch, an auto-submitted form) or, after
rebinding its own DNS name to 127.0.0.1, read the API as if it were its own.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import httpx
import pytest

from testing.hosts import StandaloneHost

RUN = "/api/agents/TravelPlanner/run"
ATTACKER = "http://attacker.example"
FRIEND = "https://planner.example.org"


@pytest.fixture(scope="module")
def host(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneHost]:
    env = {"ALLOWED_ORIGINS": f"{FRIEND}, http://localhost:3000", "STREAM_MAX_SECONDS": "2"}
    with StandaloneHost(redis_url, env, log_path=tmp_path_factory.mktemp("host") / "host.log") as running:
        yield running


@pytest.fixture(scope="module")
def client(host: StandaloneHost) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=host.base_url, timeout=10) as http:
        yield http


def refused(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    return str(response.json()["error"])


def started_nothing(client: httpx.Client, conversation_id: str) -> bool:
    return client.get(f"/api/agent/stream/{conversation_id}").status_code == 404


# --- Origin: cross-site request forgery --------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_a_post_from_another_origin_is_403_and_starts_nothing(client: httpx.Client, content_type: str) -> None:
    """What a no-cors fetch or an auto-submitted form from another site sends: the Origin header says whose."""
    response = client.post(RUN, content="Plan a trip", headers={"Content-Type": content_type, "Origin": ATTACKER})
    assert "origin" in refused(response, 403)


def test_a_json_post_from_another_origin_starts_nothing(client: httpx.Client) -> None:
    conversation_id = f"csrf-{uuid.uuid4().hex}"
    response = client.post(RUN, json={"message": "Plan a trip", "conversation_id": conversation_id},
                           headers={"Origin": ATTACKER})
    refused(response, 403)
    assert started_nothing(client, conversation_id)


@pytest.mark.parametrize("origin", ["null", "http://127.0.0.1.attacker.example", "http://localhost:3001",
                                    "https://127.0.0.1"])
def test_lookalike_and_opaque_origins_are_refused(client: httpx.Client, host: StandaloneHost, origin: str) -> None:
    refused(client.post(RUN, content="Plan a trip", headers={"Origin": origin}), 403)
    refused(client.get("/api/agent/stream/never-seen-before", headers={"Origin": origin}), 403)


def test_a_cross_site_post_without_an_origin_header_is_403(client: httpx.Client) -> None:
    response = client.post(RUN, content="Plan a trip", headers={"Sec-Fetch-Site": "cross-site"})
    refused(response, 403)


def test_the_services_own_pages_and_non_browser_clients_are_served(client: httpx.Client, host: StandaloneHost) -> None:
    own = {"Origin": host.base_url, "Sec-Fetch-Site": "same-origin"}
    assert client.post(RUN, content="Plan a trip", headers=own).status_code == 202
    same_site = {"Sec-Fetch-Site": "same-site"}  # e.g. another port of this machine, but no Origin: not a browser
    assert client.post(RUN, content="Plan a trip", headers=same_site).status_code == 202
    assert client.post(RUN, content="Plan a trip").status_code == 202  # curl and friends send neither
    assert client.get("/api/health", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200  # a read


@pytest.mark.parametrize("origin", [FRIEND, "http://localhost:3000"])
def test_a_listed_origin_may_call_the_api_with_cors(client: httpx.Client, origin: str) -> None:
    preflight = client.options(RUN, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                             "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == origin
    response = client.post(RUN, json={"message": "Plan a trip"}, headers={"Origin": origin,
                                                                          "Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 202, response.text
    assert response.headers["access-control-allow-origin"] == origin
    assert "location" in response.headers["access-control-expose-headers"].lower()


def test_an_unlisted_origin_gets_no_cors_preflight(client: httpx.Client) -> None:
    preflight = client.options(RUN, headers={"Origin": ATTACKER, "Access-Control-Request-Method": "POST"})
    refused(preflight, 403)
    assert "access-control-allow-origin" not in preflight.headers


# --- Host: DNS rebinding ---------------------------------------------------------------------------


@pytest.mark.parametrize("host_header", ["attacker.example", "attacker.example:7071", "127.0.0.1.nip.io",
                                         "localhost.attacker.example", "10.0.0.1"])
def test_a_host_header_that_is_not_ours_is_refused(client: httpx.Client, host_header: str) -> None:
    """After DNS rebinding, the attacker's page reaches 127.0.0.1 under its own name, and is same-origin with it."""
    for response in (client.get("/api/health", headers={"Host": host_header}),
                     client.post(RUN, content="Plan a trip", headers={"Host": host_header}),
                     client.get("/", headers={"Host": host_header})):
        assert "Host" in refused(response, 421)


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost", "LOCALHOST", "[::1]"])
def test_the_loopback_names_are_ours(client: httpx.Client, host: StandaloneHost, name: str) -> None:
    for host_header in (name, f"{name}:{host.port}"):
        assert client.get("/api/health", headers={"Host": host_header}).status_code == 200, host_header


def test_a_request_refused_for_its_host_says_so_in_the_contracts_shape(host: StandaloneHost) -> None:
    with socket.create_connection(("127.0.0.1", host.port), timeout=5) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 421 ") and b"application/json" in head and b'"error"' in body
