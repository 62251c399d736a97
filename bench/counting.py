"""Counting Redis round trips on the client side: a connection class that tallies what it sends.

A round trip is one request the client sends and then waits for (a command,
a pipeline, a script call), plus, per new connection, the TCP handshake and
each exchange of the client's start-up (redis-py 8: HELLO 3, CLIENT
MAINT_NOTIFICATIONS, then both CLIENT SETINFO in one go).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis


@dataclass
class Tally:
    requests: int = 0
    connects: int = 0
    handshake_round_trips: int = 0

    @property
    def round_trips(self) -> int:
        return self.requests + self.connects + self.handshake_round_trips

    def reset(self) -> None:
        self.requests = self.connects = self.handshake_round_trips = 0


TALLY = Tally()  # one per process: the bench runs one measurement at a time


class CountingConnection(aioredis.Connection):
    _in_handshake = False
    _sent_in_handshake = False

    async def _connect(self) -> None:
        TALLY.connects += 1
        await super()._connect()

    async def on_connect_check_health(self, check_health: bool = True) -> None:
        self._in_handshake = True
        try:
            await super().on_connect_check_health(check_health)
        finally:
            self._in_handshake = False

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self._in_handshake:
            self._sent_in_handshake = True
        else:
            TALLY.requests += 1
        await super().send_packed_command(command, check_health)

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        if self._in_handshake and self._sent_in_handshake:
            TALLY.handshake_round_trips += 1  # the first reply after a burst of start-up commands
            self._sent_in_handshake = False
        return await super().read_response(*args, **kwargs)


def counted(client: aioredis.Redis) -> aioredis.Redis:
    """The same client, its pool now making counting connections (call before its first command)."""
    client.connection_pool.connection_class = CountingConnection
    return client
