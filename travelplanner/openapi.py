"""The OpenAPI document of the HTTP contract, served by the standalone host at /api/openapi.json.

The handlers read raw requests (one contract for both hosts), so FastAPI cannot infer their bodies and
answers; these describe them. tests/test_fuzz_openapi.py fuzzes the host against this document.
"""

from __future__ import annotations

from typing import Any

from streaming import http_api

ERROR = {"content": {"application/json": {"schema": {
    "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}}}
ID_PATTERN = f"^{http_api.CONVERSATION_ID_PATTERN}$"
RUN_ID_PATTERN = f"^{http_api.RUN_ID_PATTERN}$"
RUN_DOC: dict[str, Any] = {
    "requestBody": {"required": True, "content": {
        "text/plain": {"schema": {"type": "string", "minLength": 1, "maxLength": 32768}},
        "application/json": {"schema": {"type": "object", "required": ["message"], "properties": {
            "message": {"type": "string", "minLength": 1},
            "conversation_id": {"type": "string", "pattern": ID_PATTERN},
            "session_id": {"type": "string", "pattern": ID_PATTERN},
            "thread_id": {"type": "string", "pattern": ID_PATTERN}}}}}},
}
RUN_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": "Accepted", "content": {"application/json": {"schema": {
        "type": "object", "required": ["status", "conversation_id", "correlation_id", "stream_url"],
        "properties": {name: {"type": "string"} for name in
                       ("status", "conversation_id", "correlation_id", "stream_url")}}}}},
    **{code: {"description": text, **ERROR} for code, text in (
        (400, "Bad input"), (404, "Unknown agent"), (413, "Message too large"),
        (415, "Unsupported content type"),
        (429, "Too many turns of this conversation wait to start (Retry-After)"),
        (503, "Redis or the durable backend unreachable, the server busy, or too many runs waiting to start "
              "(Retry-After)"))},
}
STREAM_DOC: dict[str, Any] = {"parameters": [
    {"name": "run", "in": "query", "required": False, "schema": {"type": "string", "pattern": RUN_ID_PATTERN}},
    {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}},
    {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},
]}
STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The run's events", "content": {"text/event-stream": {"schema": {"type": "string"}},
                                                          "text/plain": {"schema": {"type": "string"}}}},
    **{code: {"description": text, **ERROR} for code, text in (
        (400, "Malformed cursor or id"), (404, "Unknown or expired conversation or run"),
        (410, "Cursor older than the retained stream"), (503, "Redis unreachable"))},
}
CANCEL_RESPONSES: dict[int | str, dict[str, Any]] = {
    **{code: {"description": text, **ERROR} for code, text in (
        (400, "Malformed id"), (404, "Unknown conversation or run"), (409, "The run has already ended"),
        (503, "Redis unreachable"))},
}


