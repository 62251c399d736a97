"""The table: medians over repeats, ours beside the baseline, ratios, targets and whether they hold."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bench.stats import median, ratio

KB = 1000  # targets in KB are read as 1,000 bytes: the stricter reading


@dataclass(frozen=True)
class Row:
    figure: str
    metric: str
    ours: float
    baseline: float
    unit: str
    target: str = ""
    holds: bool | None = None
    digits: int = 1


def _fmt(value: float, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        digits = min(digits, 1)
    return f"{value:,.{digits}f}"


def _ratio(ours: float, baseline: float) -> str:
    r = ratio(ours, baseline)
    if math.isnan(r) or r == 0:
        return "—"
    if r >= 100:
        return f"{r:,.0f}×"
    if r < 0.1:
        return f"1/{1 / r:,.0f}"  # e.g. 1/2,400: the baseline takes 2,400 times as long
    return f"{r:.2f}×" if r < 10 else f"{r:.1f}×"


def _holds(holds: bool | None) -> str:
    return "" if holds is None else ("**yes**" if holds else "**no**")


def med(runs: list[dict[str, Any]], key: str) -> float:
    return median([run[key] for run in runs if key in run])


def _levels(section: dict[str, dict[str, list[dict[str, Any]]]]) -> list[int]:
    return sorted({int(level) for design in section.values() for level in design})


def rows(results: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    write = results.get("write", {})
    if write:
        levels = _levels(write)
        ours, base = write["ours"], write["baseline"]
        small, large = levels[0], (100 if 100 in levels else levels[-1])

        def both(level: int, key: str) -> tuple[float, float]:
            return med(ours[str(level)], key), med(base[str(level)], key)

        for level in (small, large):
            o, b = both(level, "chunks_per_s")
            out.append(Row("1 write", f"chunks appended /s, {level} stream{'s' if level > 1 else ''}", o, b,
                           "chunks/s", "≥ 5,000", o >= 5000, 0))
        o, b = both(small, "flushes_per_s")
        out.append(Row("1 write", f"flushed batches (Redis writes) /s, {small} stream: the unmerged capacity", o, b,
                       "/s", digits=0))
        o, b = both(small, "round_trips_per_chunk")
        out.append(Row("1 write", f"Redis round trips per chunk, {small} stream", o, b, "", digits=3))
        o, b = both(large, "round_trips_per_flush")
        out.append(Row("1 write", f"round trips per flushed batch (baseline: per write), {large} streams", o, b, "",
                       "≤ 1", o <= 1.0 + 1e-9, 3))
        o, b = both(large, "chunks_per_flush")
        out.append(Row("1 write", f"chunks per flushed batch, {large} streams", o, b, "", digits=1))
        o, b = both(large, "server_commands_per_chunk")
        out.append(Row("1 write", f"Redis commands per chunk (server-side, incl. inside Lua), {large} streams", o, b,
                       "", digits=3))
        for q in ("p50", "p99"):
            o, b = both(large, f"append_{q}_ms")
            target, holds = ("≤ 0.5 ms", o <= 0.5) if q == "p99" else ("", None)
            out.append(Row("1 write", f"in-process cost per append {q}, {large} streams", o, b, "ms", target, holds, 4))
    delivery = results.get("delivery", {})
    if delivery:
        levels = _levels(delivery)
        top = 500 if 500 in levels else levels[-1]
        for level in levels:
            for q, limit in (("p50", 5.0), ("p99", 25.0)):
                o = med(delivery["ours"].get(str(level), []), f"{q}_ms")
                b = med(delivery.get("baseline", {}).get(str(level), []), f"{q}_ms")
                target, holds = (f"≤ {limit:g} ms", o <= limit) if level == top else ("", None)
                streams = f"{level:,} stream{'s' if level > 1 else ''}"
                out.append(Row("2 delivery", f"model → SSE client {q}, {streams} × 40 chunks/s", o, b, "ms",
                               target, holds, 1))
        o = med(delivery["ours"].get(str(top), []), "write_stage_p50_ms")
        o99 = med(delivery["ours"].get(str(top), []), "write_stage_p99_ms")
        out.append(Row("2 delivery", f"of which model → in Redis (writer) p50, {top} streams", o, math.nan, "ms"))
        out.append(Row("2 delivery", f"of which model → in Redis (writer) p99, {top} streams", o99, math.nan, "ms"))
        o = med(delivery["ours"].get(str(top), []), "delivered_per_s")
        b = med(delivery.get("baseline", {}).get(str(top), []), "delivered_per_s")
        out.append(Row("2 delivery", f"chunks delivered /s, {top} streams (offered {top * 40:,})", o, b, "chunks/s",
                       digits=0))
    first = results.get("first_byte", {})
    if first:
        o, b = first["ours"]["first_byte_ms"], first["baseline"]["first_byte_ms"]
        out.append(Row("2 delivery", "time to first byte of a new run (POST → first message)", o, b, "ms", digits=0))
        o, b = first["ours"]["whole_answer_ms"], first["baseline"]["whole_answer_ms"]
        out.append(Row("2 delivery", "time to the whole answer (POST → done)", o, b, "ms", digits=0))
    idle = results.get("concurrency", {})
    if idle:
        o, b = idle["ours"], idle.get("baseline", {})
        n = o["connections"]
        out.append(Row("3 idle", "open SSE connections held by one host process", o["alive_after_hold"],
                       b.get("alive_after_hold", math.nan), "", "≥ 5,000", o["alive_after_hold"] >= 5000, 0))
        per_conn_kb = o["rss_per_connection_kib"] * 1024 / KB
        out.append(Row("3 idle", f"host RSS per connection, {n:,} connections", per_conn_kb,
                       b.get("rss_per_connection_kib", math.nan) * 1024 / KB, "kB", "≤ 64 kB", per_conn_kb <= 64))
        out.append(Row("3 idle", f"host Redis connections with {n:,} readers", o["redis_connections_held"],
                       b.get("redis_connections_held", math.nan), "", "≤ 4", o["redis_connections_held"] <= 4, 0))
        out.append(Row("3 idle", f"host CPU while idle, {n:,} connections", o["host_cpu_percent_idle"],
                       b.get("host_cpu_percent_idle", math.nan), "% of a core", digits=1))
    foot = results.get("footprint", {})
    if foot:
        base = foot["baseline"]
        chunks = base["chunks"]
        for pace in ("one entry per chunk", "four chunks per entry", "full speed"):
            run = foot[f"ours, {pace}"]
            kb = run["bytes"] / KB
            target, holds = ("≤ 100 kB", kb <= 100) if pace != "four chunks per entry" else ("", None)
            out.append(Row("4 footprint", f"Redis memory per {chunks:,}-chunk run, {pace} ({run['entries']:,} entries)",
                           kb, base["bytes"] / KB, "kB", target, holds))
        keys = sum(foot[k]["keys_without_ttl"] for k in foot if k.startswith("ours"))
        out.append(Row("4 footprint", "keys without TTL after the runs", keys, base["keys_without_ttl"], "", "0",
                       keys == 0, 0))
    out += _run_rows(results.get("runs", {}))
    return out


def _run_rows(runs: dict[str, Any]) -> list[Row]:
    """Figure 6: the targets at 200 and 1,000 concurrent runs, and ours beside the baseline where both ran."""
    ours, base = runs.get("ours", {}), runs.get("baseline", {})
    if not ours:
        return []
    levels = sorted(int(level) for level in ours)
    common = sorted(set(levels) & {int(level) for level in base})
    mid, top = (200 if 200 in levels else levels[-1]), (1000 if 1000 in levels else levels[-1])
    out: list[Row] = []

    def value(design: dict[str, Any], level: int, key: str) -> float:
        return med(design.get(str(level), []), key)

    def add(level: int, metric: str, key: str, unit: str, limit: float | None = None, digits: int = 1) -> None:
        o = value(ours, level, key)
        if limit is None:
            target, holds = "", None
        else:
            target, holds = ("0" if limit == 0 else f"≤ {limit:,g}{' ' + unit if unit else ''}"), o <= limit
        metric = f"{metric}, {level:,} concurrent run{'s' if level > 1 else ''}"
        out.append(Row("6 runs", metric, o, value(base, level, key), unit, target, holds, digits))

    if common:
        both = common[-1]
        add(both, "time to first event (POST → first tool status or text) p99", "first_event_p99_ms", "ms", digits=0)
        add(both, "time to first message (POST → first message) p99", "first_p99_ms", "ms", digits=0)
        add(both, "runs completed /s", "runs_per_s", "/s", digits=2)
        add(both, "service CPU per chunk end to end", "cpu_per_chunk_ms", "ms", digits=3)
    add(mid, "POST latency p99", "post_p99_ms", "ms", 100)
    add(mid, "time to first event (POST → first tool status or text) p99", "first_event_p99_ms", "ms", digits=0)
    add(mid, "time to first message (POST → first message) p99", "first_p99_ms", "ms", 250, 0)
    add(mid, "delivery (in Redis → SSE client) p99", "delivery_p99_ms", "ms", 50)
    add(mid, "errors (refused, error events, unfinished, lost, doubled)", "error_count", "", 0, 0)
    add(mid, "service CPU per chunk end to end", "cpu_per_chunk_ms", "ms", 0.2, 3)
    add(mid, "service CPU per run end to end", "cpu_per_run_ms", "ms", digits=0)
    add(top, "errors (refused, error events, unfinished, lost, doubled)", "error_count", "", 0, 0)
    add(top, "lost or doubled chunks", "lost_or_doubled", "", 0, 0)
    add(top, "time to first message (POST → first message) p99", "first_p99_ms", "ms", 2000, 0)
    add(top, "runs completed /s", "runs_per_s", "/s", digits=1)
    judged = [level for level in levels if level <= runs.get("max_concurrent_runs", 256)]
    waited = sum(value(ours, level, "waited") for level in judged)
    out.append(Row("6 runs", f"runs whose first message came after another run had ended, at "
                             f"{', '.join(f'{level:,}' for level in judged)} runs",
                   waited, sum(value(base, level, "waited") for level in judged if str(level) in base) if base
                   else math.nan, "", "0", waited == 0, 0))
    return out


def table(results: dict[str, Any]) -> str:
    quick = results.get("plan", {}).get("quick", False)
    lines = ["| Figure | Metric | Ours | Baseline | Ours / baseline | Target | Holds |",
             "|---|---|---:|---:|---:|---|---|"]
    for row in rows(results):
        if quick and row.holds is not None:
            row = Row(row.figure, row.metric, row.ours, row.baseline, row.unit,
                      f"{row.target} (not judged: --quick sizes)", None, row.digits)
        ours = _fmt(row.ours, row.digits) + (f" {row.unit}" if row.unit and not math.isnan(row.ours) else "")
        base = _fmt(row.baseline, row.digits) + (f" {row.unit}" if row.unit and not math.isnan(row.baseline) else "")
        lines.append(f"| {row.figure} | {row.metric} | {ours} | {base} | {_ratio(row.ours, row.baseline)} "
                     f"| {row.target} | {_holds(row.holds)} |")
    return "\n".join(lines)


def growth_table(results: dict[str, Any]) -> str:
    """Figure 5 in numbers: each figure against the number of concurrent streams."""
    delivery, write = results.get("delivery", {}), results.get("write", {})
    levels = sorted(set(_levels(delivery)) | set(_levels(write)))
    lines = ["| Streams | Ours p50 / p99 (ms) | Baseline p50 / p99 (ms) | Ours delivered /s | Baseline delivered /s "
             "| Ours write chunks/s | Baseline write chunks/s | Other load, ours runs (core·s) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def cell(section: dict[str, Any], design: str, level: int, *keys: str, digits: int = 1) -> str:
        runs = section.get(design, {}).get(str(level), [])
        return " / ".join(_fmt(med(runs, k), digits) for k in keys) if runs else "—"

    for level in levels:
        lines.append(
            f"| {level:,} | {cell(delivery, 'ours', level, 'p50_ms', 'p99_ms')} "
            f"| {cell(delivery, 'baseline', level, 'p50_ms', 'p99_ms', digits=0)} "
            f"| {cell(delivery, 'ours', level, 'delivered_per_s', digits=0)} "
            f"| {cell(delivery, 'baseline', level, 'delivered_per_s', digits=0)} "
            f"| {cell(write, 'ours', level, 'chunks_per_s', digits=0)} "
            f"| {cell(write, 'baseline', level, 'chunks_per_s', digits=0)} "
            f"| {_others(delivery.get('ours', {}).get(str(level), []))} |")
    return "\n".join(lines)


def runs_table(runs: dict[str, Any]) -> str:
    """Figure 6 per level: medians over repeats, ours and the baseline on rows of their own."""
    lines = ["| Runs | Host | POST p50 / p99 (ms) | First event p50 / p99 (ms) | First message p50 / p99 (ms) "
             "| Delivery p50 / p99 (ms) | Runs /s | Errors | Waited | Host CPU (s) | CPU per chunk / run (ms) "
             "| Repeats |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    levels = sorted({int(level) for design in ("ours", "baseline") for level in runs.get(design, {})})
    for level in levels:
        for design in ("ours", "baseline"):
            done = runs.get(design, {}).get(str(level), [])
            if not done:
                continue

            def pair(a: str, b: str, digits: int = 1, done: list[dict[str, Any]] = done) -> str:
                return f"{_fmt(med(done, a), digits)} / {_fmt(med(done, b), digits)}"

            lines.append(f"| {level:,} | {design} | {pair('post_p50_ms', 'post_p99_ms')} "
                         f"| {pair('first_event_p50_ms', 'first_event_p99_ms', 0)} "
                         f"| {pair('first_p50_ms', 'first_p99_ms', 0)} | {pair('delivery_p50_ms', 'delivery_p99_ms')} "
                         f"| {_fmt(med(done, 'runs_per_s'), 2)} | {_fmt(med(done, 'error_count'), 0)} "
                         f"| {_fmt(med(done, 'waited'), 0)} | {_fmt(med(done, 'host_cpu_seconds'), 1)} "
                         f"| {pair('cpu_per_chunk_ms', 'cpu_per_run_ms', 3)} | {len(done)} |")
    return "\n".join(lines)


def process_table(runs: dict[str, Any]) -> str:
    """CPU seconds and peak RSS of each of the host's processes, per level (the first repeat)."""
    lines = ["| Runs | Host | CPU seconds (peak RSS MiB) per process | Load generators CPU (s) | Redis CPU (s) "
             "| Other load (core·s) |", "|---:|---|---|---:|---:|---:|"]
    for design in ("ours", "baseline"):
        for level, done in sorted(runs.get(design, {}).items(), key=lambda item: int(item[0])):
            first = done[0]
            shown = ", ".join(f"{name} {p['cpu_seconds']:.1f} ({p['peak_rss_mib']:.0f})"
                              for name, p in first["processes"].items())
            lines.append(f"| {int(level):,} | {design} | {shown} | {first['generators_cpu_seconds']:.1f} "
                         f"| {_fmt(first['redis_cpu_seconds'], 1)} | {_fmt(first['others_cpu_seconds'], 1)} |")
    return "\n".join(lines)


def _others(runs: list[dict[str, Any]]) -> str:
    """CPU the rest of the (shared) machine used during each repeat: a sign of how noisy it was."""
    return ", ".join(f"{run['cpu_seconds'].get('others', math.nan):.1f}" for run in runs) or "—"


def machine_table(machine: dict[str, str]) -> str:
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in machine.items())])


def summary(results: dict[str, Any], charts: list[str]) -> str:
    repeats = results["plan"]["repeat"]
    parts = ["## Machine", machine_table(results["machine"]), "",
             f"## Figures 1–4 and 6 (1, 2 and 6: medians over {repeats} repeat{'s' if repeats > 1 else ''}; "
             "3–4: measured once)",
             table(results)]
    if "write" in results or "delivery" in results:
        parts += ["", "## Figure 5, growth", growth_table(results)]
    if "runs" in results:
        parts += ["", "## Figure 6, runs end to end", runs_table(results["runs"]), "",
                  "### The host's processes", process_table(results["runs"])]
    parts += [f"\nChart: {chart}" for chart in charts]
    return "\n".join(parts)
