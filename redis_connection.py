"""Redis clients for the run log: one pool per event loop, explicit timeouts, optional Entra ID.

Each process keeps at most a handful of connections whatever the number of
readers: a small blocking pool for reads and writes, plus the one connection
the live tail keeps in XREAD BLOCK.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError

from redis_stream_response_handler import Retention, RunLog

POOL_CONNECTIONS = 3
SOCKET_TIMEOUT_SECONDS = 5.0
TAIL_BLOCK_SECONDS = 5.0
_ENTRA_SCOPE = "https://redis.azure.com/.default"


def _credential_provider(client_id: str | None) -> Any:
    # Imported here: only Azure Managed Redis deployments need redis-entraid and azure-identity.
    from redis_entraid.cred_provider import create_from_default_azure_credential

    app_kwargs = {"managed_identity_client_id": client_id} if client_id else {}
    return create_from_default_azure_credential((_ENTRA_SCOPE,), app_kwargs=app_kwargs)


def connect(
    url: str, *, entra: bool = False, client_id: str | None = None, blocking_reader: bool = False
) -> aioredis.Redis:
    """A client for `url`. `blocking_reader`: a single connection whose socket outlives XREAD BLOCK."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": SOCKET_TIMEOUT_SECONDS,
        "socket_timeout": TAIL_BLOCK_SECONDS + SOCKET_TIMEOUT_SECONDS if blocking_reader else SOCKET_TIMEOUT_SECONDS,
        "health_check_interval": 30,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        "retry_on_error": [ConnectionError, TimeoutError],
    }
    if entra:
        options["credential_provider"] = _credential_provider(client_id)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=1 if blocking_reader else POOL_CONNECTIONS, timeout=SOCKET_TIMEOUT_SECONDS, **options
    )
    return aioredis.Redis(connection_pool=pool)


class RunLogPerLoop:
    """The run log bound to whichever event loop asks (redis-py's asyncio pools belong to one loop).

    The Durable Task agent host runs agents on its own loop thread, the web
    server on another: each gets its own pool, created on first use.
    """

    def __init__(self, factory: Callable[[], RunLog]) -> None:
        self._factory = factory
        self._logs: dict[asyncio.AbstractEventLoop, RunLog] = {}

    def __call__(self) -> RunLog:
        loop = asyncio.get_running_loop()
        log = self._logs.get(loop)
        if log is None:
            self._logs[loop] = log = self._factory()
        return log

    async def close_current(self) -> None:
        log = self._logs.pop(asyncio.get_running_loop(), None)
        if log is not None:
            await log.redis.aclose()


def run_log_factory(
    url: str, retention: Retention, *, entra: bool = False, client_id: str | None = None
) -> RunLogPerLoop:
    return RunLogPerLoop(lambda: RunLog(connect(url, entra=entra, client_id=client_id), retention))
