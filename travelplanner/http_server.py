"""How a web process of the standalone host serves HTTP: uvicorn with the guarded protocol and its limits.

The connection cap stays below the process's open-file limit, with room for
Redis, the durable backend and files: a process out of descriptors cannot
even accept a health check, while one at its cap still answers 503 at once.
"""

from __future__ import annotations

import logging
import sys

import uvicorn
from starlette.types import ASGIApp

from travelplanner.guarded_protocol import ConnectionLimits, guarded_protocol
from travelplanner.settings import Settings

logger = logging.getLogger(__name__)


def open_file_limit() -> int | None:
    """Raise this process's soft open-file limit to its hard limit (often 1,024 of far more); None: unknown."""
    if sys.platform == "win32":
        return None
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def connection_cap(configured: int, open_files: int | None) -> int:
    """HTTP_MAX_CONNECTIONS, lowered to leave a fifth of the open-file limit (at least 100) for everything else."""
    if open_files is None:
        return configured
    return max(1, min(configured, open_files - max(100, open_files // 5)))


def limits(settings: Settings) -> ConnectionLimits:
    open_files = open_file_limit()
    cap = connection_cap(settings.http_max_connections, open_files)
    if cap < settings.http_max_connections:
        logger.warning("HTTP_MAX_CONNECTIONS lowered to %d: this process may open %s files", cap, open_files)
    spare = (open_files - cap) // 2 if open_files is not None else 1_000
    return ConnectionLimits(header_seconds=settings.http_header_timeout_seconds,
                            body_seconds=settings.http_body_timeout_seconds,
                            send_seconds=settings.http_send_timeout_seconds, max_connections=cap,
                            refusal_budget=max(1, min(spare, 1_000)))


def server_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
        http=guarded_protocol(limits(settings)), ws="none",  # no WebSocket routes: no upgrade handling at all
        timeout_keep_alive=5, timeout_graceful_shutdown=5, lifespan="on", access_log=False)
