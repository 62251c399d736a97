"""Processes the host starts do not outlive it.

On Linux a process can ask for a signal when its parent dies, even by
SIGKILL (PR_SET_PDEATHSIG), and keeps that wish across exec. The usual way to
ask for it, a Popen `preexec_fn`, runs Python between fork and exec, which can
deadlock in a process that has other threads (the supervisor has gRPC's).
So every child is started through this small launcher instead: it asks for
SIGTERM on its parent's death, checks the parent is still there, and execs
the real program in its place.

    python -m travelplanner.children PARENT_PID PROGRAM [ARG...]
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def command(*program: str) -> list[str]:
    """The command line that runs `program` as a child that stops with this process."""
    return [sys.executable, "-m", "travelplanner.children", str(os.getpid()), *program]


def main(argv: list[str]) -> None:
    parent, program = int(argv[0]), argv[1:]
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the wish was made
        sys.exit(1)
    os.execv(program[0], program)


if __name__ == "__main__":
    main(sys.argv[1:])
