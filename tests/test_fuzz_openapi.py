"""schemathesis against the standalone host's own OpenAPI document: no 500s, no hangs, errors in the contract's shape.

Bounded: a few dozen examples per operation, every call with a timeout, and a
host whose stream responses end after STREAM_MAX_SECONDS=1 (a fuzzed stream
read of an unfinished run cannot hold the fuzzer).
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode, checks

from testing.hosts import StandaloneHost

CALL_TIMEOUT = 5.0


def _import_all(package: str) -> None:
    """schemathesis is a pytest plugin, so pytest rewrites (re-parses) each of its modules on first import; done
    lazily deep in a test's stack, that parse can hit a CPython 3.11.7 bug ("AST constructor recursion depth
    mismatch"). Importing every module now, at collection, keeps the stack shallow."""
    for module in pkgutil.walk_packages(importlib.import_module(package).__path__, f"{package}."):
        with contextlib.suppress(ImportError):
            importlib.import_module(module.name)


_import_all("schemathesis")
_import_all("hypothesis.strategies")


def _describe_lambdas_now() -> None:
    """hypothesis describes a strategy's lambdas by parsing their source (ast.parse), which inside a running
    hypothesis test (it changes the recursion limit) can hit the same bug; describe them now, they are cached."""
    from schemathesis.specs.openapi import formats, headers

    formats.get_default_format_strategies()
    for mode in GenerationMode:
        headers.get_header_format_strategies(mode)
    formats.header_values().map(str)


_describe_lambdas_now()



@pytest.fixture(scope="module")
def fuzzed_host(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneHost]:
    env = {"STREAM_MAX_SECONDS": "1", "STREAM_HEARTBEAT_SECONDS": "0.5", "STREAM_STALL_SECONDS": "30"}
    with StandaloneHost(redis_url, env, log_path=tmp_path_factory.mktemp("host") / "host.log") as running:
        yield running
    assert "Traceback" not in running.log(), running.log()


def with_the_readme_contract(document: dict[str, Any], known: dict[str, list[str]] | None) -> dict[str, Any]:
    """The served document plus what README's API reference promises and FastAPI cannot infer from the handlers
    (they take a raw Request): the run body in both media types, `run`, `cursor`, `Last-Event-ID` and `Accept`.
    With `known`, the ids are drawn from those that exist (the agent's name, a finished run's conversation,
    run and event ids), so the fuzzer gets past the 404s to the cursors, the bodies and the Accept header."""
    paths = document["paths"]
    text = {"type": "string", "maxLength": 40000}
    paths["/api/agents/{agent_name}/run"]["post"].setdefault("requestBody", {"content": {
        "text/plain": {"schema": text},
        "application/json": {"schema": {"type": "object", "properties": {
            "message": text, "conversation_id": {"type": "string"}, "session_id": {"type": "string"}}}},
    }})
    stream = paths["/api/agent/stream/{conversation_id}"]["get"]
    cancel = paths["/api/agent/stream/{conversation_id}/cancel"]["post"]
    declared = {p["name"] for p in stream["parameters"]}
    for name, where in [("run", "query"), ("cursor", "query"), ("Last-Event-ID", "header"), ("Accept", "header")]:
        if name not in declared:
            stream["parameters"].append({"name": name, "in": where, "required": False, "schema": {"type": "string"}})
    if "run" not in {p["name"] for p in cancel["parameters"]}:
        cancel["parameters"].append({"name": "run", "in": "query", "required": False, "schema": {"type": "string"}})
    for operation in (paths["/api/agents/{agent_name}/run"]["post"], stream, cancel):
        for parameter in operation["parameters"]:
            name = {"Last-Event-ID": "cursor"}.get(parameter["name"], parameter["name"])
            if known and name in known:
                parameter["schema"] = {"type": "string", "enum": known[name]}
    return document


@pytest.fixture(scope="module")
def known_ids(fuzzed_host: StandaloneHost) -> dict[str, list[str]]:
    from testing.sse import parse

    base = fuzzed_host.base_url
    started = httpx.post(f"{base}/api/agents/TravelPlanner/run", content="Plan 2 days in Kyoto", timeout=5).json()
    events: list[str] = []
    for _ in range(20):  # each response window is 1 s: resume until the terminal event
        headers = {"Last-Event-ID": events[-1]} if events else {}
        parsed = parse(httpx.get(base + started["stream_url"], headers=headers, timeout=5).content)
        events += [e.id for e in parsed.events]
        if parsed.events and parsed.events[-1].terminal:
            break
    return {"agent_name": ["TravelPlanner"], "conversation_id": [started["conversation_id"]],
            "run": [started["correlation_id"]], "cursor": events}


def api_schema(host: StandaloneHost, known: dict[str, list[str]] | None) -> Any:
    document = httpx.get(f"{host.base_url}/api/openapi.json", timeout=5).json()
    schema = schemathesis.openapi.from_dict(with_the_readme_contract(document, known))
    schema.config.update(base_url=host.base_url)
    return schema


@schemathesis.check
def errors_are_the_contract_json(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx is JSON {"error": "<a sentence>"} (README: API reference), short, and no stack trace anywhere."""
    if "Traceback" in response.text:
        raise AssertionError("a stack trace in the response")
    if 400 <= response.status_code < 500:
        content_type = response.headers.get("content-type", [""])[0]
        if not content_type.startswith("application/json"):
            raise AssertionError(f"{response.status_code} with content type {content_type!r}")
        body = response.json()
        if not (isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]):
            raise AssertionError(f'{response.status_code} without {{"error": ...}}: {response.text[:200]}')
        if len(response.content) > 1024:
            raise AssertionError(f"a {len(response.content)}-byte error: the input is echoed back")
    return None


@schemathesis.check
def answers_in_bounded_time(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.elapsed > 3.0:
        raise AssertionError(f"the answer took {response.elapsed:.1f} s")
    return None


@pytest.mark.parametrize("ids", ["any-ids", "known-ids"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_server_errors_and_errors_in_the_contract_shape(
    fuzzed_host: StandaloneHost, known_ids: dict[str, list[str]], mode: GenerationMode, ids: str
) -> None:
    """Positive: anything the document allows. Negative: wrong types and shapes (a JSON body that is not an object)."""
    # schemathesis's own pytest loader (from_fixture) does not run under pytest 9, so: its strategy, our @given.
    seen: dict[str, int] = {}

    def fuzz_all() -> None:
        schema = api_schema(fuzzed_host, known_ids if ids == "known-ids" else None)

        @given(case=schema.as_strategy(mode))
        # Generate only: schemathesis's negative strategies do not replay consistently for shrinking.
        @settings(max_examples=50, deadline=None, derandomize=True, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def fuzz(case: Any) -> None:
            response = case.call_and_validate(
                timeout=CALL_TIMEOUT,
                checks=[checks.not_a_server_error, errors_are_the_contract_json, answers_in_bounded_time],
            )
            seen[str(response.status_code)] = seen.get(str(response.status_code), 0) + 1

        fuzz()

    # On a thread of its own, with a shallow stack: hypothesis parses the source of lambdas (ast.parse) when it
    # describes a strategy, and deep in pytest's stack that can hit the same CPython 3.11.7 bug.
    for attempt in range(3):
        try:
            with ThreadPoolExecutor(1) as worker:
                worker.submit(fuzz_all).result()
            break
        except Exception as error:  # the CPython 3.11.7 bug above, where nothing warmed up covers it
            if "AST constructor recursion depth mismatch" not in "".join(traceback.format_exception(error)) \
                    or attempt == 2:
                raise
    print(mode.value, seen)
    assert sum(seen.values()) >= 20, seen


def test_the_document_describes_the_contract(fuzzed_host: StandaloneHost) -> None:
    """The fuzzer can only check what the document says: the bodies, the 4xx answers, and the stream's media types."""
    document = httpx.get(f"{fuzzed_host.base_url}/api/openapi.json", timeout=5).json()
    run = document["paths"]["/api/agents/{agent_name}/run"]["post"]
    assert {"text/plain", "application/json"} <= set(run["requestBody"]["content"])
    assert {"202", "400", "404", "413", "415", "429", "503"} <= set(run["responses"])
    stream = document["paths"]["/api/agent/stream/{conversation_id}"]["get"]
    assert {"text/event-stream", "text/plain"} <= set(stream["responses"]["200"]["content"])
    assert {"400", "404", "410", "503"} <= set(stream["responses"])
    assert {p["name"] for p in stream["parameters"]} >= {"conversation_id", "run", "cursor", "Last-Event-ID"}
