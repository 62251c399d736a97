"""Redis clients for the run log: explicit timeouts, optional Entra ID, one pool per event loop.

Each process keeps at most a handful of connections whatever the number of
readers: a small blocking pool for reads and writes, plus the one connection
the live tail keeps in XREAD BLOCK.
"""

from __future__ import annotations

import asyncio
import time
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


class PoolExhausted(ConnectionError):
    """No pooled connection came free within the pool's wait: this process has more Redis work than its
    connections carry. Redis itself may be fine; `answered_within` tells."""


class RunLogPool(aioredis.BlockingConnectionPool):
    """redis-py's blocking pool, plus: when Redis last answered on it, and exhaustion as its own error.

    A request that could not get its Redis work done in time must say why: Redis not answering (an outage) or
    this process queueing more work than its few connections carry (overload, worth a retry in a moment).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_answer = float("-inf")  # time.monotonic() of the last command that got a reply

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)
        except ConnectionError as error:
            if isinstance(error.__cause__, asyncio.TimeoutError):  # the pool's own wait, not a connect failure
                raise PoolExhausted("no pooled Redis connection came free in time") from error
            raise

    async def release(self, connection: Any) -> None:
        if connection.is_connected:  # a command that failed (timeout, reset) disconnects before its release
            self.last_answer = time.monotonic()
        await super().release(connection)


def answered_within(client: aioredis.Redis, seconds: float) -> bool:
    """Whether Redis answered a command on this client's pool in the last `seconds`."""
    pool = client.connection_pool
    return isinstance(pool, RunLogPool) and time.monotonic() - pool.last_answer <= seconds


def connect(
    url: str, *, entra: bool = False, client_id: str | None = None, blocking_reader: bool = False,
    connections: int = POOL_CONNECTIONS,
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
    pool = RunLogPool.from_url(
        url, max_connections=1 if blocking_reader else connections, timeout=SOCKET_TIMEOUT_SECONDS, **options
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
