"""Redis clients for the run log: explicit timeouts, optional Entra ID, one pool per event loop.

Each process keeps at most a handful of connections whatever the number of
readers: a small blocking pool for reads and writes, plus the one connection
the live tail keeps in XREAD BLOCK.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError

POOL_CONNECTIONS = 3
SOCKET_TIMEOUT_SECONDS = 5.0
TAIL_BLOCK_SECONDS = 5.0
_ENTRA_SCOPE = "https://redis.azure.com/.default"

T = TypeVar("T")


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


class PerLoop(Generic[T]):
    """One object per event loop, made on first use there (redis-py's asyncio pools belong to one loop).

    A host runs the web server on one loop and the durable agent host's runs on
    another thread's loop: each gets its own. Objects of loops that have closed are dropped.
    """

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._objects: dict[asyncio.AbstractEventLoop, T] = {}

    def __call__(self) -> T:
        loop = asyncio.get_running_loop()
        made = self._objects.get(loop)
        if made is None:
            for closed in [other for other in self._objects if other.is_closed()]:
                del self._objects[closed]
            self._objects[loop] = made = self._factory()
        return made

    def pop_current(self) -> T | None:
        """Forget this loop's object and return it, for the caller to close."""
        return self._objects.pop(asyncio.get_running_loop(), None)
