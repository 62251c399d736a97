"""A loopback TCP proxy that cuts connections: each one dies after a random number of response bytes.

Used to drop streams mid-event (mid-line, mid-UTF-8 character, mid-headers) the way a flaky network
does, which a server-side close cannot: the server always closes between events.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading

from testing.hosts import free_port


class CuttingProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target_port`; every connection is cut after a random
    number of bytes from the server in [`min_bytes`, `max_bytes`], with a FIN or, at random, a RST.
    After `max_connections` connections the proxy stops listening: from then on connections are refused."""

    def __init__(self, target_port: int, *, min_bytes: int, max_bytes: int, seed: int | None = None,
                 max_connections: int | None = None) -> None:
        self.target_port = target_port
        self.max_connections = max_connections
        self.connections = 0
        self.port = free_port()
        self.cuts = 0
        self._budget = (min_bytes, max_bytes)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="cutting-proxy", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._listener.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                budget = self._random.randint(*self._budget)
                reset = self._random.random() < 0.5
                self.connections += 1
            threading.Thread(target=self._serve, args=(client, budget, reset), daemon=True).start()
            if self.connections == self.max_connections:
                self._listener.close()
                return

    def _serve(self, client: socket.socket, budget: int, reset: bool) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            client.close()
            return
        requests = threading.Thread(target=_pump, args=(client, upstream), daemon=True)
        requests.start()
        try:
            while budget > 0:
                data = upstream.recv(min(65536, budget))
                if not data:
                    break
                client.sendall(data)
                budget -= len(data)
        except OSError:
            pass
        if budget <= 0:
            with self._lock:
                self.cuts += 1
            if reset:  # an abortive close: the client sees "connection reset", not an end of stream
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # close() alone would not end a connection another thread is blocked reading: shut it down first.
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RD if reset else socket.SHUT_RDWR)
        requests.join(5)
        client.close()
        upstream.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
