"""BENCHMARKS.md and latency.png from the numbers of one run."""

import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

RUNNERS = {"python": "Python runner", "rust": "Rust runner, native analysis"}
STOCK = "stock"
TIMES = "\u00d7"  # the multiplication sign


def median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(kept) if kept else None


def ms(value: float | None) -> str:
    if value is None:
        return "?"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def seconds(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:.1f} s" if value >= 10 else f"{value:.2f} s"


def ratio(template: float | None, stock: float | None) -> str:
    if template is None or stock is None or stock <= 0 or template < 0:
        return "—"
    value = template / stock
    return f"{value:.2f}{TIMES}" if value < 10 else f"{value:.0f}{TIMES}"


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, metric: str, stock: str, template: str, ratio_text: str) -> None:
        self.rows.append((metric, stock, template, ratio_text))

    def markdown(self) -> str:
        lines = [
            "| metric | stock baseline | this template | ratio (template ÷ stock) |",
            "| --- | ---: | ---: | ---: |",
        ]
        lines += [f"| {m} | {s} | {t} | {r} |" for m, s, t, r in self.rows]
        return "\n".join(lines)


def not_measured(reason: str) -> str:
    """The cell of a row without a number: "failed: ..." (something broke) or "not measured: ..."."""
    if reason.startswith(("failed:", "not measured:")):
        return cell_text(reason)
    return f"not measured: {cell_text(reason)}"


def cell_text(text: str, limit: int = 140) -> str:
    """One line, no table-breaking pipes, short (the full reasons are listed under the table)."""
    flat = " ".join(text.split()).replace("|", "/")
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def unavailable_reason(results: dict[str, Any], key: str, metric: int) -> str | None:
    skipped = results.get("skipped", {}).get(str(metric))
    if skipped:
        return skipped
    reason = results.get("unavailable", {}).get(key)
    if reason:
        return reason
    runs = results.get(f"m{metric}", {}).get(key)
    if not runs:
        return "no run completed"
    if all("error" in run for run in runs):
        return f"failed: {runs[0]['error']}"
    return None


def good_runs(results: dict[str, Any], metric: int, key: str) -> list[dict[str, Any]]:
    return [run for run in results.get(f"m{metric}", {}).get(key, []) if "error" not in run]


# -- metric 1 ---------------------------------------------------------------------------------


def m1_stats(results: dict[str, Any], key: str) -> dict[str, float | None]:
    runs = good_runs(results, 1, key)
    out: dict[str, float | None] = {}
    for name in ("noop", "nothing"):
        out[f"{name}_p50"] = median([r[name].get("p50_ms") for r in runs])
        out[f"{name}_p99"] = median([r[name].get("p99_ms") for r in runs])
    out["cost_p50"] = median([r["noop"]["p50_ms"] - r["nothing"]["p50_ms"] for r in runs if r["noop"].get("n")])
    out["cost_p99"] = median([r["noop"]["p99_ms"] - r["nothing"]["p99_ms"] for r in runs if r["noop"].get("n")])
    return out


def pair(stats: dict[str, float | None], name: str) -> str:
    return f"{ms(stats[name + '_p50'])} / {ms(stats[name + '_p99'])} ms"


def pair_ratio(t: dict[str, float | None], s: dict[str, float | None], name: str) -> str:
    return f"{ratio(t[name + '_p50'], s[name + '_p50'])} / {ratio(t[name + '_p99'], s[name + '_p99'])}"


def signed_pair(stats: dict[str, float | None], name: str) -> str:
    def fmt(value: float | None) -> str:
        return "?" if value is None else f"{value:+.2f}"

    return f"{fmt(stats[name + '_p50'])} / {fmt(stats[name + '_p99'])} ms"


def metric1(table: Table, results: dict[str, Any], sizes: Any) -> None:
    stock_reason = unavailable_reason(results, STOCK, 1)
    stock = m1_stats(results, STOCK) if stock_reason is None else None
    for key, runner in RUNNERS.items():
        runner = runner.split(",")[0]
        reason = unavailable_reason(results, key, 1)
        template = m1_stats(results, key) if reason is None else None
        rows = [
            (f"1. POST endpoint that schedules one no-op task: latency p50 / p99 ({runner})", "noop", pair),
            (f"1. the same endpoint scheduling nothing: p50 / p99 ({runner})", "nothing", pair),
            (f"1. **cost of scheduling one task** (difference): p50 / p99 ({runner})", "cost", signed_pair),
        ]
        for label, name, fmt in rows:
            stock_cell = fmt(stock, name) if stock else not_measured(stock_reason or "")
            template_cell = fmt(template, name) if template else not_measured(reason or "")
            ratio_cell = pair_ratio(template, stock, name) if (template and stock and name != "cost") else "—"
            if name == "cost" and template and stock:
                ratio_cell = "— (differences)"
            table.add(label, stock_cell, template_cell, ratio_cell)


# -- metric 2 ---------------------------------------------------------------------------------


def m2_stats(results: dict[str, Any], key: str) -> dict[str, float | None]:
    runs = good_runs(results, 2, key)
    return {
        "load_p50": median([r["health"].get("p50_ms") for r in runs]),
        "load_p99": median([r["health"].get("p99_ms") for r in runs]),
        "load_max": median([r["health"].get("max_ms") for r in runs]),
        "idle_p50": median([r["idle"].get("p50_ms") for r in runs]),
        "idle_p99": median([r["idle"].get("p99_ms") for r in runs]),
        "work": median([r.get("work_seconds") for r in runs]),
        "probes": median([r["health"].get("n") for r in runs]),
        "failed": max([r.get("tasks_failed") or 0 for r in runs], default=0),
    }


def metric2(table: Table, results: dict[str, Any], sizes: Any) -> None:
    stock_reason = unavailable_reason(results, STOCK, 2)
    stock = m2_stats(results, STOCK) if stock_reason is None else None
    n = sizes.documents
    for key, runner in RUNNERS.items():
        reason = unavailable_reason(results, key, 2)
        template = m2_stats(results, key) if reason is None else None

        def cell(stats: dict[str, float | None] | None, why: str | None, name: str) -> str:
            if stats is None:
                return not_measured(why or "")
            return f"{ms(stats[name + '_p50'])} / {ms(stats[name + '_p99'])} ms"

        def both(name: str, template: dict[str, float | None] | None = template) -> str:
            if not (stock and template):
                return "—"
            p50 = ratio(template[name + "_p50"], stock[name + "_p50"])
            return f"{p50} / {ratio(template[name + '_p99'], stock[name + '_p99'])}"

        table.add(
            f"2. **GET /health p50 / p99 while {n} document analyses run** ({runner})",
            cell(stock, stock_reason, "load"),
            cell(template, reason, "load"),
            both("load"),
        )
        table.add(
            f"2. GET /health p50 / p99, idle, same probe ({runner.split(',')[0]})",
            cell(stock, stock_reason, "idle"),
            cell(template, reason, "idle"),
            both("idle"),
        )
        table.add(
            f"2. time from first upload until all {n} analyses are final ({runner.split(',')[0]})",
            seconds(stock["work"]) if stock else not_measured(stock_reason or ""),
            (seconds(template["work"]) + (f", {template['failed']:.0f} tasks failed" if template["failed"] else ""))
            if template
            else not_measured(reason or ""),
            ratio(template["work"], stock["work"]) if (stock and template) else "—",
        )


# -- metric 3 ---------------------------------------------------------------------------------


def m3_stats(results: dict[str, Any], key: str) -> dict[str, float | None]:
    runs = good_runs(results, 3, key)
    return {
        "seconds": median([r.get("seconds") for r in runs]),
        "rate": median([r.get("tasks_per_second") for r in runs]),
        "rejected": max([r.get("rejected", 0) for r in runs], default=0),
        "failed": max([r.get("tasks_failed") or 0 for r in runs], default=0),
    }


def throughput_cell(stats: dict[str, float | None]) -> str:
    rate = stats["rate"]
    text = f"{seconds(stats['seconds'])} ({rate:.0f} tasks/s)" if rate else seconds(stats["seconds"])
    if stats.get("rejected"):
        text += f", {stats['rejected']:.0f} refused"
    if stats.get("failed"):
        text += f", {stats['failed']:.0f} tasks failed"
    return text


def metric3(table: Table, results: dict[str, Any], sizes: Any) -> None:
    n = sizes.tasks
    stock_reason = unavailable_reason(results, STOCK, 3)
    stock = m3_stats(results, STOCK) if stock_reason is None else None
    stock_cell = throughput_cell(stock) if stock else not_measured(stock_reason or "")
    for key, runner in RUNNERS.items():
        reason = unavailable_reason(results, key, 3)
        template = m3_stats(results, key) if reason is None else None
        table.add(
            f"3. **{n:,} tasks scheduled over HTTP until all are final** ({runner.split(',')[0]})",
            stock_cell,
            throughput_cell(template) if template else not_measured(reason or ""),
            ratio(template["seconds"], stock["seconds"]) if (stock and template) else "—",
        )
    celery = results.get("celery") or {}
    skipped = results.get("skipped", {}).get("3")
    if skipped or "missing" in celery or not celery:
        why = skipped or celery.get("missing") or "bench/celery_bench.py did not run"
        table.add("3. Celery, one worker (bench/celery_bench.py)", stock_cell, not_measured(why), "—")
        return
    drain = celery.get("drain_seconds")
    rate = celery.get("throughput_tasks_per_s")
    enqueue = celery.get("enqueue_latency_ms", {})
    table.add(
        f"3. Celery, one worker, {celery.get('tasks', '?'):,} tasks (bench/celery_bench.py: drain time of a "
        f"pre-filled queue; enqueue p50 / p99 {ms(enqueue.get('p50'))} / {ms(enqueue.get('p99'))} ms)",
        stock_cell,
        f"{seconds(drain)} ({rate:.0f} tasks/s)" if rate else seconds(drain),
        ratio(drain, stock["seconds"]) if (stock and celery.get("tasks") == n) else "— (different sizes)",
    )


# -- metrics 4 and 6 (bench/deploy_bench.py) --------------------------------------------------


def metric4(table: Table, results: dict[str, Any]) -> None:
    deploy = results.get("deploy") or {}
    skipped = results.get("skipped", {}).get("4")
    why = skipped or deploy.get("missing") or deploy.get("lambda_missing")
    if not why and not deploy.get("lambda"):
        why = "bench/deploy_bench.py did not run"
    numbers = deploy.get("lambda", {})
    stock, rendered = numbers.get("stock", {}), numbers.get("rendered", {})

    def cold(entry: dict[str, float]) -> str:
        imported, first = entry["import_s"] * 1000, entry["first_event_s"] * 1000
        return f"{ms(imported + first)} ms (import {ms(imported)} + first event {ms(first)})"

    if why:
        for label in LAMBDA_ROWS:
            table.add(label, not_measured(why), not_measured(why), "—")
        return
    cold_ratio = ratio(rendered["import_s"] + rendered["first_event_s"], stock["import_s"] + stock["first_event_s"])
    table.add(LAMBDA_ROWS[0], cold(stock), cold(rendered), cold_ratio)
    table.add(
        LAMBDA_ROWS[1],
        f"{ms(stock['task_response_s'] * 1000)} ms",
        f"{ms(rendered['task_response_s'] * 1000)} ms",
        ratio(rendered["task_response_s"], stock["task_response_s"]),
    )


LAMBDA_ROWS = [
    "4. Lambda cold start: import of the handler module + first event (stock Mangum vs rendered handler)",
    "4. Lambda response time with a 1 s background task (stock Mangum vs rendered handler, SQS offload)",
]


def metric6(table: Table, results: dict[str, Any]) -> None:
    deploy = results.get("deploy") or {}
    skipped = results.get("skipped", {}).get("6")
    why = skipped or deploy.get("missing") or deploy.get("images_missing")
    images = deploy.get("images", [])
    for kind, kind_label in (("container", "container image"), ("lambda", "Lambda image")):
        for runner in ("python", "rust"):
            label = f"6. {kind_label} size = base image + the app's share ({RUNNERS[runner].split(',')[0]})"
            entry = next((e for e in images if e["image"] == kind and f"-{runner}-" in e["variant"]), None)
            if why or entry is None:
                table.add(label, "—", not_measured(why or "deploy_bench.py reported no such image"), "—")
                continue
            if "size_mb" not in entry:
                table.add(label, "—", not_measured(entry.get("missing", "no size")), "—")
                continue
            base = entry.get("base_size_mb")
            if base:
                share = entry["size_mb"] - base
                cell = (
                    f"{entry['size_mb']:.0f} MB = {base:.0f} MB (`{entry['base_image']}`) + {share:.0f} MB "
                    f"({share / entry['size_mb']:.0%})"
                )
            else:
                cell = f"{entry['size_mb']:.0f} MB (base image size unknown)"
            table.add(label, "—", cell, "—")
    for runner in ("python", "rust"):
        label = f"6. container: `docker run` until /health answers 200 ({RUNNERS[runner].split(',')[0]})"
        entry = next((e for e in images if e["image"] == "container" and f"-{runner}-" in e["variant"]), None)
        if why:
            cell = not_measured(why)
        elif entry is None or "run_to_health_s" not in entry:
            cell = not_measured(
                "the smoke run starts no containers" if "smoke" in deploy.get("source", "") else "no number"
            )
        else:
            cell = seconds(entry["run_to_health_s"])
        table.add(label, "—", cell, "—")


# -- metric 5 ---------------------------------------------------------------------------------


def metric5(table: Table, results: dict[str, Any]) -> None:
    skipped = results.get("skipped", {}).get("5")
    copies = results.get("copy") or {}
    if skipped or not copies:
        table.add("5. `copier copy` time per variant", "—", not_measured(skipped or "no render completed"), "—")
    for label, times in copies.items():
        kept = [t for t in times if not math.isnan(t)]
        if not kept:
            table.add(f"5. `copier copy` ({label})", "—", not_measured("copier copy failed"), "—")
            continue
        spread = f" (min {min(kept):.1f}, max {max(kept):.1f}, {len(kept)} runs)" if len(kept) > 1 else " (1 run)"
        table.add(f"5. `copier copy` ({label})", "—", f"{statistics.median(kept):.1f} s{spread}", "—")
    ci = results.get("ci") or {}
    if skipped:
        cell = not_measured(skipped)
    elif "seconds" in ci:
        cell = f"{ci['seconds'] / 60:.1f} min ({ci['source']})"
    else:
        cell = not_measured(ci.get("missing", "no CI log"))
    table.add("5. the whole template test run (`bash .ci/run`)", "—", cell, "—")


# -- the report -------------------------------------------------------------------------------


def per_runner(results: dict[str, Any], metric: int, describe: Callable[[str], str]) -> list[str]:
    """`describe(runner)` with the runner's short name, for each in-process runner that measured `metric`."""
    return [
        f"{describe(key)} ({RUNNERS[key].split(',')[0]})"
        for key in ("python", "rust")
        if unavailable_reason(results, key, metric) is None
    ]


def headline(results: dict[str, Any], sizes: Any) -> list[str]:
    lines = []
    if unavailable_reason(results, STOCK, 2) is None:
        stock = m2_stats(results, STOCK)
        for key in ("rust", "python"):
            if unavailable_reason(results, key, 2) is None:
                template = m2_stats(results, key)
                if template["load_p99"] and stock["load_p99"]:
                    lines.append(
                        f"- `GET /health` p99 while {sizes.documents} document analyses run: "
                        f"{ms(template['load_p99'])} ms with the {RUNNERS[key]} vs {ms(stock['load_p99'])} ms with "
                        f"stock `BackgroundTasks` ({stock['load_p99'] / template['load_p99']:.1f}{TIMES} lower)."
                    )
    if unavailable_reason(results, STOCK, 1) is None:
        stock = m1_stats(results, STOCK)
        parts = per_runner(results, 1, lambda key: f"{m1_stats(results, key)['cost_p50']:+.2f} ms")
        if parts and stock["cost_p50"] is not None:
            lines.append(
                f"- Scheduling one task (stored durably, logged, a task id returned) adds {', '.join(parts)} to "
                f"the request's p50; stock `BackgroundTasks`, which stores nothing and returns no id, adds "
                f"{stock['cost_p50']:+.2f} ms."
            )
    if unavailable_reason(results, STOCK, 3) is None:
        stock = m3_stats(results, STOCK)
        parts = per_runner(results, 3, lambda key: seconds(m3_stats(results, key)["seconds"]))
        if parts:
            lines.append(
                f"- {sizes.tasks:,} tasks over HTTP until all are final: {', '.join(parts)} vs "
                f"{seconds(stock['seconds'])} for stock `BackgroundTasks`."
            )
    deploy = (results.get("deploy") or {}).get("lambda") or {}
    if "stock" in deploy and "rendered" in deploy and not results.get("skipped", {}).get("4"):
        stock_ms = deploy["stock"]["task_response_s"] * 1000
        rendered_ms = deploy["rendered"]["task_response_s"] * 1000
        lines.append(
            f"- Lambda, an endpoint with a 1 s background task: the response takes {ms(rendered_ms)} ms with the "
            f"rendered handler (task sent to SQS) vs {ms(stock_ms)} ms with stock Mangum, which runs the task "
            "before it returns."
        )
    return lines


def lag_note(results: dict[str, Any]) -> str:
    """Say so when tasks finished as fast as they were scheduled (then it is an HTTP rate)."""
    lags = [
        run["seconds"] - run["http_seconds"]
        for key in (STOCK, *RUNNERS)
        for run in good_runs(results, 3, key)
        if run.get("seconds") is not None and run.get("http_seconds") is not None
    ]
    if not lags or max(lags) > 1.0:
        return ""
    return (
        f" In every run the last task was final at most {max(lags):.2f} s after the last request was answered: "
        "the tasks keep up, so this row is the rate at which each system accepts tasks over HTTP."
    )


def write_markdown(path: Path, meta: dict[str, Any], results: dict[str, Any], sizes: Any, smoke: bool) -> None:
    table = Table()
    metric1(table, results, sizes)
    metric2(table, results, sizes)
    metric3(table, results, sizes)
    metric4(table, results)
    metric5(table, results)
    metric6(table, results)
    versions = ", ".join(f"{name} {version}" for name, version in sorted(meta.get("versions", {}).items()))
    lines = [
        "# Benchmarks: the rendered service vs stock FastAPI `BackgroundTasks`",
        "",
    ]
    if smoke:
        lines += ["> **Smoke run** (tiny sizes, checks that the benchmark works): these numbers mean nothing.", ""]
    lines += [
        f"Made by `python3 bench/run.py{' --smoke' if smoke else ''}` on {meta['date']} "
        f"(took {meta['duration_s']} s), from the working tree on top of commit `{meta['commit']}`.",
        "",
        f"- Machine: {meta['cpu']}, {meta['cores']} cores, {meta['memory_gib']} GiB, Linux {meta['kernel']}; "
        "shared and noisy, so every measurement is repeated and the systems are interleaved.",
        f"- Python {meta['python']}; {versions} (the stock baseline is pinned to the versions the rendered "
        "project locked, so both run the same FastAPI, Starlette and uvicorn).",
        f"- Each measurement: {meta['runs']} runs; a cell is the **median of the per-run statistics** "
        "(the median of the runs' p50s, the median of the runs' p99s).",
        "- Servers: one `uvicorn` process each (uvloop, httptools, one worker), default log settings, output to a "
        "file; client: asyncio + httpx on the same machine, loopback only, fixed counts and deadlines.",
        "",
    ]
    reused = meta.get("reused") or {}
    if reused.get("metrics"):
        numbers = ", ".join(str(n) for n in reused["metrics"])
        lines += [f"Metrics {numbers} are taken from the run of {reused['date']} (`--reuse`).", ""]
    head = headline(results, sizes)
    if head:
        lines += ["## Headline", "", *head, ""]
    lines += [
        "## Results",
        "",
        "Lower is better everywhere; a ratio below 1 means the template is faster (or smaller).",
        "",
        table.markdown(),
        "",
        "![latency distributions](latency.png)",
        "",
        "## What each row measures",
        "",
        f"1. **Cost of scheduling one task.** {sizes.requests} sequential requests per endpoint per run "
        f"(after {sizes.warmup} warm-up requests), one connection. The template's endpoint calls "
        "`tasks.add_task(noop)` (registered with `@task`): the record is written to the SQLite store and "
        "a log line written before the 202 with a task id; stock calls `background_tasks.add_task(noop)`. "
        "The same endpoint without the call is the reference; the difference is the cost of scheduling.",
        f"2. **Responsiveness under CPU-heavy background work.** {sizes.documents} CSV documents of "
        f"{sizes.document_bytes // 1024} KiB uploaded to `POST /documents/upload` ({sizes.upload_concurrency} at "
        "a time), each analysed in the background (bytes, lines, words, SHA-256, and per-column statistics of "
        "the numeric cells), while `GET /health` is probed "
        f"every {sizes.probe_interval * 1000:.0f} ms on its own connection until every analysis is final. "
        "Stock: the article's upload endpoint with the analysis in Python in a `BackgroundTasks` function. "
        "Template: its example upload endpoint; the Python runner runs the Python analysis on its thread pool, "
        "the Rust runner runs the native analysis with the GIL released. The idle row is the same probe "
        f"for {sizes.idle_probe_seconds:g} s before the uploads.",
        f"3. **Throughput.** {sizes.tasks:,} `POST /projects/{{id}}/tasks` ({sizes.task_concurrency} connections), "
        "the articles' activity-log task (one line appended to a file per task), timed from the first request "
        "until every accepted task is final: for the template its `/ready` counters say so; stock cannot say, "
        "so its log file's lines are counted. The template runs with `TASK_QUEUE_SIZE` above the task count "
        "(with the default bound of 1000 waiting tasks it answers 503 + Retry-After to a client this fast). "
        "Celery: bench/celery_bench.py (its enqueue and drain phases are separate; the cell is the drain)."
        + lag_note(results),
        "4. **Lambda**: bench/deploy_bench.py: the handler module imported and its first event handled in a "
        "fresh process (cold start), then an endpoint whose background task sleeps 1 s; stock Mangum runs the "
        "task before the handler returns, the rendered handler sends it to SQS (moto's server on loopback).",
        "5. **Template**: `copier copy --skip-tasks` from the working tree through tests/rendering.py; the whole "
        "test run is read from the last CI log.",
        "6. **Images**: bench/deploy_bench.py builds the container and Lambda images of the `both` variant for "
        "each runner (classic builder, base images made locally from Debian packages under the official "
        "names, so base sizes are those stand-ins', not Docker Hub's); the app's share is the image minus "
        "its runtime base image.",
        "",
    ]
    notes = []
    for key, reason in results.get("unavailable", {}).items():
        notes.append(f"- `{key}`: {' '.join(reason.split())}")
    for name in ("celery", "deploy"):
        entry = results.get(name) or {}
        for key in ("missing", "lambda_missing", "images_missing"):
            if key in entry:
                notes.append(f"- bench/{name}_bench.py: {entry[key]}")
    if notes:
        lines += ["## Not measured", "", *notes, ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def write_plot(path: Path, samples: dict[str, Any], results: dict[str, Any], sizes: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"stock": "#7f7f7f", "python": "#1f77b4", "rust": "#d62728"}
    labels = {"stock": "stock BackgroundTasks", "python": "template, Python runner", "rust": "template, Rust runner"}
    figure, axes = plt.subplots(1, 3, figsize=(18, 5.5))

    def ecdf(axis: Any, values: list[float], **style: Any) -> None:
        if not values:
            return
        ordered = sorted(v * 1000 for v in values)
        n = len(ordered)
        axis.step(ordered, [(i + 1) / n for i in range(n)], where="post", **style)

    axis = axes[0]
    for key in ("stock", "python", "rust"):
        entry = samples.get("m1", {}).get(key, {})
        ecdf(axis, entry.get("noop", []), color=colors[key], label=f"{labels[key]}: one no-op task")
        ecdf(axis, entry.get("nothing", []), color=colors[key], linestyle=":", label=f"{labels[key]}: no task")
    runs = f"{sizes.requests} {TIMES} {sizes.runs} runs each"
    axis.set_title(f"1. request latency, endpoint with / without one task\n({runs})")
    finish(axis, "latency (ms, log scale)")

    axis = axes[1]
    for key in ("stock", "python", "rust"):
        ecdf(axis, samples.get("m2", {}).get(key, []), color=colors[key], label=f"{labels[key]}: under load")
        ecdf(
            axis,
            samples.get("m2_idle", {}).get(key, []),
            color=colors[key],
            linestyle=":",
            label=f"{labels[key]}: idle",
        )
    axis.set_title(f"2. GET /health while {sizes.documents} document analyses run\n(all probes of {sizes.runs} runs)")
    finish(axis, "latency (ms, log scale)")

    axis = axes[2]
    names, values, spreads, bar_colors = [], [], [], []
    for key in ("stock", "python", "rust"):
        runs = [r.get("seconds") for r in results.get("m3", {}).get(key, []) if r.get("seconds")]
        if runs:
            names.append(labels[key].replace("template, ", ""))
            values.append(statistics.median(runs))
            spreads.append(runs)
            bar_colors.append(colors[key])
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

    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


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
