"""latency.png: one panel each for metrics 1 (scheduling latency), 2 (API latency under CPU load)
and 3 (task throughput)."""

import statistics
from pathlib import Path
from typing import Any

from report_cells import TIMES

COLORS = {"stock": "#7f7f7f", "python": "#1f77b4", "rust": "#d62728"}
LABELS = {"stock": "stock BackgroundTasks", "python": "template, Python runner", "rust": "template, Rust runner"}
SYSTEMS = ("stock", "python", "rust")


def write_plot(path: Path, samples: dict[str, Any], results: dict[str, Any], sizes: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    scheduling_latency_panel(axes[0], samples, sizes)
    api_latency_under_cpu_load_panel(axes[1], samples, sizes)
    task_throughput_panel(axes[2], results, sizes)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def scheduling_latency_panel(axis: Any, samples: dict[str, Any], sizes: Any) -> None:
    for key in SYSTEMS:
        entry = samples.get("m1", {}).get(key, {})
        ecdf(axis, entry.get("noop", []), color=COLORS[key], label=f"{LABELS[key]}: one no-op task")
        ecdf(axis, entry.get("nothing", []), color=COLORS[key], linestyle=":", label=f"{LABELS[key]}: no task")
    runs = f"{sizes.requests} {TIMES} {sizes.runs} runs each"
    axis.set_title(f"1. request latency, endpoint with / without one task\n({runs})")
    finish(axis, "latency (ms, log scale)")


def api_latency_under_cpu_load_panel(axis: Any, samples: dict[str, Any], sizes: Any) -> None:
    for key in SYSTEMS:
        ecdf(axis, samples.get("m2", {}).get(key, []), color=COLORS[key], label=f"{LABELS[key]}: under load")
        ecdf(
            axis,
            samples.get("m2_idle", {}).get(key, []),
            color=COLORS[key],
            linestyle=":",
            label=f"{LABELS[key]}: idle",
        )
    axis.set_title(f"2. GET /health while {sizes.documents} document analyses run\n(all probes of {sizes.runs} runs)")
    finish(axis, "latency (ms, log scale)")


def task_throughput_panel(axis: Any, results: dict[str, Any], sizes: Any) -> None:
    names, values, spreads, bar_colors = [], [], [], []
    for key in SYSTEMS:
        runs = [r.get("seconds") for r in results.get("m3", {}).get(key, []) if r.get("seconds")]
        if runs:
            names.append(LABELS[key].replace("template, ", ""))
            values.append(statistics.median(runs))
            spreads.append(runs)
            bar_colors.append(COLORS[key])
    celery = results.get("celery") or {}
    if celery.get("drain_seconds"):
        names.append(f"Celery, 1 worker\n(drain, {celery.get('tasks', '?')} tasks)")
        values.append(celery["drain_seconds"])
        spreads.append([celery["drain_seconds"]])
        bar_colors.append("#2ca02c")
    if values:
        axis.bar(range(len(values)), values, color=bar_colors)
        for index, runs in enumerate(spreads):
            axis.scatter([index] * len(runs), runs, color="black", s=10, zorder=3)
        axis.set_xticks(range(len(values)), names, fontsize=8)
    axis.set_ylabel("seconds until every task is final")
    axis.set_title(f"3. {sizes.tasks:,} tasks over HTTP (median bar, runs as dots)")
    axis.grid(axis="y", alpha=0.3)


def ecdf(axis: Any, values: list[float], **style: Any) -> None:
    if not values:
        return
    ordered = sorted(v * 1000 for v in values)
    n = len(ordered)
    axis.step(ordered, [(i + 1) / n for i in range(n)], where="post", **style)


def finish(axis: Any, xlabel: str) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if axis.lines:
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.legend(fontsize=7, loc="lower right")
    axis.set_xlabel(xlabel)
    axis.set_ylabel("fraction of requests")
    axis.grid(alpha=0.3, which="both")
