"""Who holds which TCP connection, from /proc (Linux): the leak checks count a process's sockets from outside."""

from __future__ import annotations

import os
from pathlib import Path

_ESTABLISHED = "01"


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _tcp_table() -> list[tuple[int, int, str, str]]:
    """(local port, remote port, state, inode) of every IPv4/IPv6 TCP socket."""
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            rows.append((int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16), state, inode))
    return rows


def ports_connected_to(pid: int, remote_port: int) -> list[int]:
    """The local ports of the established connections process `pid` holds to `remote_port`."""
    mine = _socket_inodes(pid)
    return [local for local, remote, state, inode in _tcp_table()
            if remote == remote_port and state == _ESTABLISHED and inode in mine]


def connections_to(pid: int, remote_port: int) -> int:
    """Established connections that process `pid` holds to `remote_port` (e.g. its Redis connections)."""
    return len(ports_connected_to(pid, remote_port))


def process_tree(pid: int) -> list[int]:
    """`pid` and every process it started, and theirs (a host of the `all` role is a group of processes)."""
    tree, index = [pid], 0
    while index < len(tree):
        try:
            with open(f"/proc/{tree[index]}/task/{tree[index]}/children") as children:
                tree += [int(child) for child in children.read().split()]
        except OSError:
            pass
        index += 1
    return tree


def connections_on(local_port: int) -> int:
    """Established connections accepted on `local_port` (e.g. the HTTP clients a server still holds)."""
    return sum(1 for local, _, state, _ in _tcp_table() if local == local_port and state == _ESTABLISHED)
