"""python -m bench: run every figure, ours beside the baseline, print the table, save results and chart.

    python -m bench                 # the full run (about 12 minutes on 2 cores, 7 of them runs end to end)
    python -m bench --quick         # the smoke version: every figure, small sizes (about 2 minutes)
    python -m bench --repeat 5      # more repeats (figures are medians over repeats)
    python -m bench --only write,footprint
    python -m bench --only telemetry     # what tracing and metrics cost per chunk, on and off
    python -m bench --only runs          # runs end to end through the real host, 1 to 2,000 started at once
    python -m bench --render bench/results/latest.json     # re-print the table, redraw the chart
    python -m bench --redis-url redis://127.0.0.1:6379/0   # another Redis instead of an embedded one
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench import (
    ROOT,
    chart,
    concurrency,
    delivery,
    first_byte,
    footprint,
    machine,
    processes,
    redis_server,
    report,
    runs,
    telemetry_cost,
    write_path,
)

FIGURES = ("write", "footprint", "concurrency", "delivery", "telemetry", "runs")


@dataclass(frozen=True)
class Plan:
    quick: bool = False
    repeat: int = 3
    write_levels: tuple[int, ...] = (1, 10, 100, 1000)
    write_seconds: float = 1.5
    delivery_levels: tuple[int, ...] = (1, 10, 100, 500, 1000)
    delivery_seconds: float = 3.0
    first_byte_runs: int = 3
    connections: int = 5000
    footprint_chunks: int = 4000
    telemetry_runs: int = 30
    runs_levels: tuple[int, ...] = (1, 10, 100, 200, 250, 500, 1000, 2000)
    runs_baseline_levels: tuple[int, ...] = (1, 10, 100)  # it begins six runs at a time: 100 take about 2 minutes
    runs_once_from: int = 500  # levels this large are measured once, whatever the repeat count
    runs_baseline_once_from: int = 100


QUICK = Plan(quick=True, repeat=1, write_levels=(1, 10), write_seconds=0.3, delivery_levels=(1, 10),
             delivery_seconds=1.0, first_byte_runs=1, connections=50, footprint_chunks=400, telemetry_runs=3,
             runs_levels=(1, 10), runs_baseline_levels=(1,))


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _clean(value: Any) -> Any:
    """JSON-safe: NaN becomes null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def run_write(plan: Plan, url: str) -> dict[str, Any]:
    out: dict[str, Any] = {"ours": {}, "baseline": {}}
    for attempt in range(plan.repeat):
        for level in plan.write_levels:
            for design in ("ours", "baseline"):
                result = write_path.measure(design, url, level, plan.write_seconds)
                out[design].setdefault(str(level), []).append(result)
                _log(f"write  {design:8} {level:5} streams  run {attempt + 1}: {result['chunks_per_s']:,.0f} chunks/s, "
                     f"append p99 {result['append_p99_ms']:.4f} ms, {result['round_trips_per_chunk']:.3f} RTT/chunk")
    return out


def run_delivery(plan: Plan, url: str, redis_pid: int) -> tuple[dict[str, Any], dict[str, Any]]:
    out: dict[str, Any] = {"ours": {}, "baseline": {}}
    first: dict[str, Any] = {}
    hosts: dict[str, Callable[[], Any]] = {"ours": lambda: processes.our_host(url),
                                           "baseline": lambda: processes.BaselineHost(url)}
    for design, make in hosts.items():
        with make() as host:
            first[design] = first_byte.measure(host.base_url, plan.first_byte_runs, sse=design == "ours")
            _log(f"first byte {design:8}: {first[design]['first_byte_ms']:.0f} ms "
                 f"(whole answer {first[design]['whole_answer_ms']:.0f} ms)")
            pids = {"host": host.process.pid, "redis": redis_pid}
            for attempt in range(plan.repeat):
                for level in plan.delivery_levels:
                    result = delivery.measure(design, url, host.base_url, level, plan.delivery_seconds, pids)
                    out[design].setdefault(str(level), []).append(result)
                    _log(f"delivery {design:8} {level:5} streams run {attempt + 1}: p50 {result['p50_ms']:.1f} ms, "
                         f"p99 {result['p99_ms']:.1f} ms, {result['received']:,}/{result['sent']:,} chunks, "
                         f"cpu {result['cpu_seconds']}")
    return out, first


def run_concurrency(plan: Plan, url: str) -> dict[str, Any]:
    out = {}
    for design in ("ours", "baseline"):
        out[design] = concurrency.measure(design, url, plan.connections)
        _log(f"idle     {design:8}: {out[design]['alive_after_hold']:,} held, "
             f"{out[design]['rss_per_connection_kib']:.1f} KiB each, "
             f"{out[design]['redis_connections_held']} Redis connections")
    return out


def run_runs(plan: Plan, url: str, redis_pid: int) -> dict[str, Any]:
    out: dict[str, Any] = {"ours": {}, "baseline": {}, "max_concurrent_runs": runs.MAX_CONCURRENT_RUNS,
                           "baseline_commit": runs.BASELINE_COMMIT}
    designs = (("ours", runs.ours, plan.runs_levels, plan.runs_once_from),
               ("baseline", runs.baseline, plan.runs_baseline_levels, plan.runs_baseline_once_from))
    for design, host_of, levels, once_from in designs:
        if design == "baseline" and not runs.baseline_available():
            _log(f"runs: no baseline: commit {runs.BASELINE_COMMIT} is not in this clone (a shallow clone? "
                 "`git fetch --unshallow` brings it)")
            continue
        with host_of(url) as host:
            assert host.process is not None
            runs.warm_up(host.base_url)
            for attempt in range(plan.repeat):
                for level in levels:
                    if attempt and level >= once_from:
                        continue
                    result = runs.measure(host.base_url, level, host.process.pid, redis_pid=redis_pid)
                    out[design].setdefault(str(level), []).append(result)
                    _log(f"runs {design:8} {level:5} at once, run {attempt + 1}: {result['completed']:,} done in "
                         f"{result['seconds']} s, POST p99 {result['post_p99_ms']:.0f} ms, first message p99 "
                         f"{result['first_p99_ms']:.0f} ms, delivery p99 {result['delivery_p99_ms']:.1f} ms, "
                         f"errors {result['errors']}, host CPU {result['host_cpu_seconds']} s")
        runs.per_model_chunk(out[design])
    return out


def _draw(draw: Callable[[dict[str, Any], Path], None], results: dict[str, Any], path: Path) -> str | None:
    """The chart's path as the table names it, or None when matplotlib is not installed (the table still prints)."""
    try:
        draw(results, path)
    except ModuleNotFoundError as missing:
        _log(f"no chart: {missing.name} is not installed (pip install matplotlib)")
        return None
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def _charts(results: dict[str, Any], growth: Path) -> list[str]:
    drawn = []
    if "write" in results or "delivery" in results:
        drawn.append(_draw(chart.draw, results, growth))
    if "runs" in results:
        drawn.append(_draw(chart.draw_runs, results, growth.with_name("bench-runs.png")))
    return [path for path in drawn if path]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat: the smoke version")
    parser.add_argument("--repeat", type=int, help="repeats per figure (default 3, quick 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results",
                        help="folder for latest.json (default bench/results)")
    parser.add_argument("--chart", type=Path,
                        help="where to save the growth chart (default docs/bench-growth.png; quick: in --out); "
                             "the runs chart goes beside it as bench-runs.png")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL"),
                        help="a Redis on loopback to use instead of starting an embedded redis-server")
    parser.add_argument("--connections", type=int, help="idle SSE connections for figure 3 (default 5000)")
    parser.add_argument("--render", type=Path, metavar="RESULTS_JSON",
                        help="measure nothing: print the table and redraw the chart from a saved latest.json")
    parser.add_argument("--only", default=",".join(FIGURES),
                        help=f"comma-separated subset of {', '.join(FIGURES)} (growth comes from write + delivery)")
    args = parser.parse_args(argv)

    plan = QUICK if args.quick else Plan()
    if args.repeat:
        plan = replace(plan, repeat=max(1, args.repeat))
    if args.connections:
        plan = replace(plan, connections=args.connections)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = only - set(FIGURES)
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(sorted(unknown))}; choose from {', '.join(FIGURES)}")
    chart_path = args.chart or (args.out / "bench-growth.png" if args.quick else ROOT / "docs" / "bench-growth.png")
    if args.redis_url and not args.redis_url.startswith(("redis://127.", "redis://localhost")):
        parser.error("the bench only sends traffic to loopback: --redis-url must be redis://127.x or localhost")

    if args.render:
        saved = json.loads(args.render.read_text())
        print(report.summary(saved, _charts(saved, chart_path)))
        if "telemetry" in saved:
            print("\n" + telemetry_cost.table(saved["telemetry"]))
        return 0

    processes.raise_open_files()
    started = time.monotonic()
    results: dict[str, Any] = {"plan": asdict(plan), "started": datetime.datetime.now().isoformat(timespec="seconds")}
    with redis_server.bench_redis(args.redis_url) as url:
        results["machine"] = machine.describe(url)
        redis_pid = int(redis_server.client(url).info("server")["process_id"])
        _log(f"Redis at {url}; plan {asdict(plan)}")
        if "write" in only:
            results["write"] = run_write(plan, url)
        if "footprint" in only:
            results["footprint"] = footprint.measure(url, plan.footprint_chunks, embedded=not args.redis_url)
            sizes = {k: v["bytes"] for k, v in results["footprint"].items() if isinstance(v, dict)}
            _log(f"footprint (bytes): {json.dumps(sizes)}")
        if "concurrency" in only:
            results["concurrency"] = run_concurrency(plan, url)
        if "delivery" in only:
            results["delivery"], results["first_byte"] = run_delivery(plan, url, redis_pid)
        if "telemetry" in only:
            results["telemetry"] = telemetry_cost.measure(url, plan.telemetry_runs, plan.repeat)
            _log("telemetry: " + telemetry_cost.table(results["telemetry"]).splitlines()[4])
        if "runs" in only:
            results["runs"] = run_runs(plan, url, redis_pid)
    results["machine"]["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results["duration_seconds"] = round(time.monotonic() - started, 1)

    charts = _charts(results, chart_path)
    results["table"] = report.table(results)
    results["growth_table"] = report.growth_table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(_clean(results), indent=1))
    print(report.summary(results, charts))
    if "telemetry" in results:
        print("\n" + telemetry_cost.table(results["telemetry"]))
    print(f"\n(total {results['duration_seconds']} s; results in {args.out / 'latest.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
