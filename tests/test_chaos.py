"""A small seeded chaos run (`python -m chaos`): every failure column of its summary line must be 0.

Its own persistent Redis and its own host, in subprocesses; a few hundred
sessions with every kind of fault, in well under two minutes on 2 cores.
The large run is `make chaos` (README "Chaos suite").
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from chaos.suite import FAILURE_COLUMNS

ROOT = Path(__file__).resolve().parent.parent


def test_a_small_seeded_chaos_run_loses_doubles_and_leaks_nothing(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "chaos", "--sessions", "300", "--seed", "7", "--data-dir", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=150)
    summary = next((line for line in done.stdout.splitlines() if line.startswith("chaos seed=")), None)
    assert summary is not None, f"no summary line:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    counts = {name: int(value) for name, value in re.findall(r"([a-z_]+)=(\d+)", summary)}
    failures = {name: counts[name] for name in FAILURE_COLUMNS}
    assert failures == dict.fromkeys(FAILURE_COLUMNS, 0), f"{summary}\n{done.stdout[-4000:]}"
    assert done.returncode == 0, done.stdout[-3000:]
    # The run did what it claims: every fault happened, and readers really hung up mid-event and resumed.
    assert counts["sessions"] == 300
    assert counts["redis_freezes"] == 1 and counts["redis_restarts"] == 2 and counts["host_kills"] == 1
    for name in ("redeliveries", "model_failures", "fallbacks", "cancels", "resumes", "mid_event", "plain"):
        assert counts[name] > 0, f"{name}=0 in {summary}"


def test_a_failed_run_shows_the_hosts_tracebacks_in_its_output() -> None:
    """CI keeps only the output: each kind of traceback the host logged is in it, most frequent first."""
    from chaos.suite import distinct_tracebacks

    one = "Traceback (most recent call last):\n  File \"a.py\", line 1, in f\n    g()\nKeyError: 'x'\n"
    other = "Traceback (most recent call last):\n  File \"b.py\", line 2, in h\nRuntimeError: boom\n"
    log = f"INFO start\n{one}WARNING later\n{other}{one}ERROR done\n"
    found = distinct_tracebacks(log)
    kinds = [(text.splitlines()[-1], times) for text, times in found]
    assert kinds == [("KeyError: 'x'", 2), ("RuntimeError: boom", 1)]
    assert found[0][0] == one.rstrip("\n")
