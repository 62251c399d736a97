"""Security headers on every answer: no MIME sniffing, no referrer, a Content-Security-Policy, no framing.

The page carries its policy in a meta tag (the Functions host serves the file
as it is), but a meta policy cannot say `frame-ancestors`: browsers ignore it
there. So HTML answers get the page's own policy plus `frame-ancestors 'none'`
as a header, read from the page once at start-up so the two cannot drift;
every other answer (JSON, SSE, plain text) is never meant to be a document
and gets a policy that lets nothing run, load or frame it.
"""

from __future__ import annotations

import re
from pathlib import Path

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
COMMON: dict[str, str] = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
_META_POLICY = re.compile(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)"')


def page_policy(page: Path) -> str:
    """The page's meta-tag policy with `frame-ancestors 'none'` added."""
    match = _META_POLICY.search(page.read_text(encoding="utf-8"))
    if match is None:
        raise ValueError(f"{page} has no Content-Security-Policy meta tag")
    return f"{match.group(1).rstrip('; ')}; frame-ancestors 'none'"


def headers_for(content_type: str, page_csp: str) -> dict[str, str]:
    policy = page_csp if content_type.startswith("text/html") else API_POLICY
    return {**COMMON, "Content-Security-Policy": policy}


class SecurityHeaders:
    """ASGI middleware: adds the headers to every HTTP answer that does not set them itself."""

    def __init__(self, app: ASGIApp, *, page: Path) -> None:
        self.app = app
        self.page_csp = page_policy(page)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in headers_for(headers.get("content-type", ""), self.page_csp).items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
