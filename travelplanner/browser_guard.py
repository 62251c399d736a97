"""Refuse what a browser sends on another site's behalf; clients that are not browsers pass unchanged.

With no API key (the default on loopback), any page the user visits could
start runs here: a no-cors `fetch` of `text/plain`, or a form it submits
itself, needs no CORS permission. And a page whose own DNS name its owner
re-points at 127.0.0.1 (DNS rebinding) is same-origin with this service in
the browser's eyes, so it could read the API too. Browsers say where a
request comes from, so both can be refused:

- `Host` must be one of this service's names (ALLOWED_HOSTS, plus the
  loopback names when bound to loopback): 421 otherwise.
- `Origin`, when present, must be this service's own or one of
  ALLOWED_ORIGINS: 403 otherwise. Modern browsers send it on every
  cross-origin request and on every POST, no-cors and forms included.
- `Sec-Fetch-Site: cross-site` on a request that changes something, without
  an Origin, is refused too (403).

curl, client.py and servers send no Origin and their own Host, so they are
not affected. On Azure Functions the platform's front end and function keys
stand in for this.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from streaming.http_api import error_response

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def hostname(host: str) -> str:
    """The name part of a Host header, lower case, without port or trailing dot ('[::1]' for IPv6)."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    return host.rsplit(":", 1)[0].rstrip(".")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(bound: str, configured: tuple[str, ...]) -> frozenset[str] | None:
    """The Host names to answer to; None: any (ALLOWED_HOSTS '*', or bound publicly with none configured)."""
    if "*" in configured:
        return None
    names = {hostname(name) for name in configured}
    if is_loopback(bound):
        names |= LOOPBACK_NAMES | {f"[{bound}]" if ":" in bound else bound.lower()}
    return frozenset(names) if names else None


def normalized_origin(origin: str) -> str:
    """An origin as browsers send it: scheme://host[:port], lower case, no default port, no path."""
    parts = urlsplit(origin.strip().lower())
    port = f":{parts.port}" if parts.port is not None and str(parts.port) != _DEFAULT_PORTS.get(parts.scheme) else ""
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}{port}"


def _same_origin(origin: str, host: str) -> bool:
    """The Origin names this very Host (any scheme: a TLS proxy in front may hide it from us)."""
    scheme, _, netloc = origin.partition("://")
    default = f":{_DEFAULT_PORTS.get(scheme, '')}"
    host = host.strip().lower()
    return bool(netloc) and netloc == (host.removesuffix(default) if host.endswith(default) else host)


class BrowserGuard:
    """ASGI middleware for the checks above."""

    def __init__(self, app: ASGIApp, *, hosts: frozenset[str] | None, origins: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host")
        origin = headers.get("origin")
        if host is not None and self.hosts is not None and hostname(host) not in self.hosts:
            response = error_response(421, f"this server does not answer to the Host {host[:64]!r}; "
                                           "use its own address, or list the name in ALLOWED_HOSTS on the server")
        elif origin is not None and origin not in self.origins and not _same_origin(origin, host or ""):
            response = error_response(403, f"refused a request from another origin ({origin[:64]!r}); a site may "
                                           "call this API only if the server lists it in ALLOWED_ORIGINS")
        elif origin is None and headers.get("sec-fetch-site") == "cross-site" and scope["method"] not in SAFE_METHODS:
            response = error_response(403, "refused a request another site made this browser send")
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)
