"""The benchmark suite's smoke run: `python -m bench --quick` reports every figure (no timing is judged here)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

EVERY_METRIC = (
    # 1 write path
    "chunks appended /s, 1 stream",
    "Redis round trips per chunk",
    "round trips per flushed batch",
    "in-process cost per append p50",
    "in-process cost per append p99",
    # 2 delivery
    "model → SSE client p50, 1 stream ",
    "model → SSE client p99, 10 streams ",
    "time to first byte of a new run",
    # 3 idle connections
    "open SSE connections held by one host process",
    "host RSS per connection",
    "host Redis connections with",
    # 4 footprint
    "Redis memory per 400-chunk run, one entry per chunk",
    "Redis memory per 400-chunk run, full speed",
    "keys without TTL after the runs",
    # 6 runs end to end
    "time to first message (POST → first message) p99, 1 concurrent run",
    "POST latency p99, 10 concurrent runs",
    "delivery (in Redis → SSE client) p99, 10 concurrent runs",
    "errors (refused, error events, unfinished, lost, doubled), 10 concurrent runs",
    "lost or doubled chunks, 10 concurrent runs",
    "service CPU per chunk end to end, 10 concurrent runs",
    "runs whose first message came after another run had ended",
)


@pytest.mark.timeout(600)
def test_quick_bench_reports_every_figure(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout
    for heading in ("## Machine", "## Figures 1–4", "## Figure 5, growth", "## Figure 6, runs end to end",
                    "### The host's processes"):
        assert heading in table
    for figure in ("| 1 write |", "| 2 delivery |", "| 3 idle |", "| 4 footprint |", "| 6 runs |"):
        assert figure in table, f"figure {figure} missing from:\n{table}"
    for metric in EVERY_METRIC:
        assert metric in table, f"{metric!r} missing from:\n{table}"
    assert "## Telemetry: cost per chunk" in table and "| CPU per chunk |" in table
    for machine_fact in ("| cores |", "| memory |", "| redis |", "| python |"):
        assert machine_fact in table
    results = json.loads((tmp_path / "latest.json").read_text())
    assert {"write", "delivery", "first_byte", "concurrency", "footprint", "telemetry", "runs",
            "machine"} <= results.keys()
    if importlib.util.find_spec("matplotlib"):  # the charts need it; the table does not
        assert (tmp_path / "bench-growth.png").stat().st_size > 0
        assert (tmp_path / "bench-runs.png").stat().st_size > 0
    # Every stream delivered every chunk: the figures measure complete runs, not partial ones.
    for design in ("ours", "baseline"):
        for runs in results["delivery"][design].values():
            assert all(run["lost"] == 0 for run in runs), runs
    # Every run of figure 6 was accepted, streamed and ended with `done`, its live read equal to a re-read,
    # on our host (its web and worker processes each used CPU) and on the baseline's.
    for design in ("ours", "baseline"):
        for level, runs in results["runs"][design].items():
            for run in runs:
                assert run["completed"] == run["runs"] == int(level) and run["error_count"] == 0, run["errors"]
                assert run["chunks"] >= run["runs"] * run["chunks_per_run_min"] > 0, run
    processes = results["runs"]["ours"]["10"][0]["processes"]
    assert {"supervisor", "web 1", "worker 1"} <= processes.keys(), processes
