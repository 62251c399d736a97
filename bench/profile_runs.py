"""Where the host's CPU goes during figure 6: py-spy samples its web and worker processes while N runs stream.

    python -m bench.profile_runs                 # 200 runs, 20 s of samples per process
    python -m bench.profile_runs --runs 500 --seconds 30 --out /tmp/profile

Needs py-spy (pip install py-spy) and permission to attach to one's own processes.
Writes one collapsed-stack file per process (`<role>-<pid>.txt`, flamegraph.pl
reads it) and prints each process's top frames by own time and by total time.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from bench import processes, redis_server, runs
from testing.procnet import process_tree


def top_frames(collapsed: Path, limit: int) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, frames by own samples, frames by total samples) of a py-spy raw (collapsed) file."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames, n = stack.split(";"), int(count)
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    return samples, own.most_common(limit), total.most_common(limit)


def _record(pid: int, seconds: float, out: Path, native: bool) -> subprocess.CompletedProcess[str]:
    command = ["py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100",
               "--nonblocking", "--format", "raw", "--output", str(out), *(["--native"] if native else [])]
    return subprocess.run(command, capture_output=True, text=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_runs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--native", action="store_true", help="include C frames (py-spy --native)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-profile"))
    args = parser.parse_args(argv)
    if not shutil.which("py-spy"):
        parser.error("py-spy is not installed: pip install py-spy")
    args.out.mkdir(parents=True, exist_ok=True)
    processes.raise_open_files()
    with redis_server.bench_redis(None) as url, runs.ours(url) as host:
        assert host.process is not None
        runs.warm_up(host.base_url)
        members = {pid: runs.role_of(pid, host.process.pid) for pid in process_tree(host.process.pid)}
        targets = {pid: role for pid, role in members.items() if role in ("web", "worker")}
        recorded: dict[int, subprocess.CompletedProcess[str]] = {}

        def record(pid: int) -> None:
            recorded[pid] = _record(pid, args.seconds, args.out / f"{targets[pid]}-{pid}.txt", args.native)

        threads = [threading.Thread(target=record, args=(pid,)) for pid in targets]
        for thread in threads:
            thread.start()
        result = runs.measure(host.base_url, args.runs, host.process.pid)
        for thread in threads:
            thread.join()
    print(f"{args.runs} runs: {result['completed']} done in {result['seconds']} s, errors {result['errors']}, "
          f"host CPU {result['host_cpu_seconds']} s: {result['processes']}")
    for pid, role in targets.items():
        path = args.out / f"{role}-{pid}.txt"
        if recorded[pid].returncode or not path.exists():
            print(f"\n{role} {pid}: py-spy failed: {recorded[pid].stderr.strip()[-500:]}", file=sys.stderr)
            continue
        samples, own, total = top_frames(path, args.top)
        print(f"\n## {role} (pid {pid}): {samples} samples, {path}")
        for title, frames in (("own", own), ("total", total)):
            print(f"\nby {title} time:")
            for frame, n in frames:
                print(f"  {100 * n / samples:5.1f} %  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
