"""Figures 5 and 6 as pictures: growth against concurrent streams, and runs end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report import med

OURS, BASELINE = "#1f77b4", "#d62728"


def draw(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    delivery, write = results.get("delivery", {}), results.get("write", {})
    fig, (latency, throughput) = plt.subplots(1, 2, figsize=(12, 5.4))

    for design, colour in (("ours", OURS), ("baseline", BASELINE)):
        runs = delivery.get(design, {})
        levels = sorted(int(level) for level in runs)
        for key, style in (("p50_ms", "-o"), ("p99_ms", "--s")):
            values = [med(runs[str(level)], key) for level in levels]
            latency.plot(levels, values, style, color=colour, label=f"{design} {key[:3]}")
    latency.axhline(5, color="grey", linewidth=0.8, linestyle=":")
    latency.axhline(25, color="grey", linewidth=0.8, linestyle=":")
    latency.text(1, 5, " target p50 5 ms", va="bottom", fontsize=8, color="grey")
    latency.text(1, 25, " target p99 25 ms", va="bottom", fontsize=8, color="grey")
    latency.set(xscale="log", yscale="log", xlabel="concurrent streams (each 40 chunks/s)",
                ylabel="model → SSE client latency (ms)", title="Delivery latency")
    latency.legend(fontsize=8)
    latency.grid(True, which="both", alpha=0.25)

    for design, colour in (("ours", OURS), ("baseline", BASELINE)):
        runs = write.get(design, {})
        levels = sorted(int(level) for level in runs)
        throughput.plot(levels, [med(runs[str(level)], "chunks_per_s") for level in levels], "-o", color=colour,
                        label=f"{design}: write path, as fast as it can")
        runs = delivery.get(design, {})
        levels = sorted(int(level) for level in runs)
        throughput.plot(levels, [med(runs[str(level)], "delivered_per_s") for level in levels], "--s",
                        color=colour, label=f"{design}: delivered to SSE clients (offered 40/s/stream)")
    offered = sorted({int(level) for design in delivery.values() for level in design})
    if offered:
        throughput.plot(offered, [40 * level for level in offered], color="grey", linewidth=0.8,
                        label="offered to delivery (40 chunks/s per stream)")
    throughput.axhline(5000, color="grey", linewidth=0.8, linestyle=":")
    throughput.text(1, 5000, " target 5,000 chunks/s", va="bottom", fontsize=8, color="grey")
    throughput.set(xscale="log", yscale="log", xlabel="concurrent streams", ylabel="chunks per second",
                   title="Throughput, one process")
    throughput.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    throughput.grid(True, which="both", alpha=0.25)

    machine = results.get("machine", {})
    fig.suptitle(f"TravelPlanner streaming vs baseline — {machine.get('cores', '?')} cores, "
                 f"Redis {machine.get('redis', '?').split()[0]}, Python {machine.get('python', '?')}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_runs(results: dict[str, Any], path: Path) -> None:
    """Figure 6 as a picture: first message, delivery and runs completed against runs started at once."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results.get("runs", {})
    fig, (first, delivery, done) = plt.subplots(1, 3, figsize=(15, 5))
    for axis, keys, title, ylabel in (
            (first, ("first_p50_ms", "first_p99_ms"), "Time to first message", "POST → first message (ms)"),
            (delivery, ("delivery_p50_ms", "delivery_p99_ms"), "Delivery", "in Redis → SSE client (ms)")):
        for design, colour in (("ours", OURS), ("baseline", BASELINE)):
            measured = runs.get(design, {})
            levels = sorted(int(level) for level in measured)
            for key, style in zip(keys, ("-o", "--s"), strict=True):
                axis.plot(levels, [med(measured[str(level)], key) for level in levels], style, color=colour,
                          label=f"{design} {key.split('_')[1]}")
        axis.set(xscale="log", yscale="log", xlabel="runs started at once", ylabel=ylabel, title=title)
        axis.grid(True, which="both", alpha=0.25)
    for axis, limit, text in ((first, 250, "target p99 at 200 runs: 250 ms"), (first, 2000, "target p99 at 1,000: 2 s"),
                              (delivery, 50, "target p99 at 200 runs: 50 ms")):
        axis.axhline(limit, color="grey", linewidth=0.8, linestyle=":")
        axis.text(1, limit, f" {text}", va="bottom", fontsize=8, color="grey")
    for design, colour in (("ours", OURS), ("baseline", BASELINE)):
        measured = runs.get(design, {})
        levels = sorted(int(level) for level in measured)
        done.plot(levels, [med(measured[str(level)], "runs_per_s") for level in levels], "-o", color=colour,
                  label=f"{design}: runs completed /s")
    done.set(xscale="log", yscale="log", xlabel="runs started at once", ylabel="runs completed per second",
             title="Throughput (offline model, 40 chunks/s)")
    done.grid(True, which="both", alpha=0.25)
    for axis in (first, delivery, done):
        axis.legend(fontsize=8)
    machine = results.get("machine", {})
    fig.suptitle(f"TravelPlanner runs end to end, ours vs the host before the scale work "
                 f"({runs.get('baseline_commit')}) — {machine.get('cores', '?')} cores, "
                 f"Python {machine.get('python', '?')}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
