"""BENCHMARKS.md from the numbers of one run: a header, the headline, every metric's rows (from the
metric modules, metrics.py), what each row measures, and why any part was not measured."""

from pathlib import Path
from typing import Any

import api_latency_under_cpu_load
import lambda_latency
import observability_cost
import scheduling_latency
import targets
import task_control_costs
import task_throughput
from metrics import METRICS
from report_cells import Table
from repository import BENCH_DIR

# The headline's order: the latency under load first, then scheduling, throughput and Lambda.
HEADLINE = [api_latency_under_cpu_load, scheduling_latency, task_throughput, lambda_latency]
# What changed in the code measured, and why: a section of its own, written by hand.
CHANGES = BENCH_DIR / "CHANGES.md"
# The scripts whose failure a results.json key records, for the "Not measured" list.
SCRIPTS = {
    "celery": "bench/celery_throughput.py",
    "postgres": "bench/postgres_throughput.py",
    "deploy": "bench/deployment.py",
}


def write_markdown(path: Path, meta: dict[str, Any], results: dict[str, Any], sizes: Any, smoke: bool) -> None:
    table = Table()
    for metric in METRICS:
        metric.add_rows(table, results, sizes)
    lines = header(meta, smoke)
    head = [line for metric in HEADLINE for line in metric.headline(results, sizes)]
    if head:
        lines += ["## Headline", "", *head, ""]
    met = targets.all_targets(results, sizes)
    lines += [
        "## Targets",
        "",
        'What the template holds itself to, from this run\'s numbers (the rows of "Results" they come from '
        "say how each is measured).",
        "",
        targets.markdown(met),
        "",
    ]
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
        *explanations(sizes, results),
        "",
    ]
    notes = not_measured_notes(results)
    if notes:
        lines += ["## Not measured", "", *notes, ""]
    if CHANGES.exists():
        # Written by hand with the changes it describes: what changed in the code measured, why.
        lines += [CHANGES.read_text().strip(), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def header(meta: dict[str, Any], smoke: bool) -> list[str]:
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
    by_date: dict[str, list[int]] = {}
    for number in reused.get("metrics", []):
        by_date.setdefault(reused.get("dates", {}).get(str(number), reused.get("date", "?")), []).append(number)
    if by_date:
        parts = [
            f"{'metric' if len(numbers) == 1 else 'metrics'} {', '.join(map(str, numbers))} from the run of {date}"
            for date, numbers in sorted(by_date.items())
        ]
        lines += [f"Taken from earlier runs (`--reuse`): {'; '.join(parts)}.", ""]
    return lines


def explanations(sizes: Any, results: dict[str, Any]) -> list[str]:
    """What each row measures, one paragraph per metric."""
    return [
        f"1. **Cost of scheduling one task.** {sizes.requests} sequential requests per endpoint per run "
        f"(after {sizes.warmup} warm-up requests), one connection. The template's endpoint calls "
        "`tasks.add_task(noop)` (registered with `@task`): the record is written to the SQLite store and "
        "a log line written before the 202 with a task id; stock calls `background_tasks.add_task(noop)`. "
        "The same endpoint without the call is the reference; the difference is the cost of scheduling.",
        f"2. **Responsiveness under CPU-heavy background work.** {sizes.documents} CSV documents of "
        f"{sizes.document_bytes // 1024} KiB uploaded to `POST /documents/upload` ({sizes.upload_concurrency} at "
        "a time), each analysed in the background (bytes, lines, words, SHA-256, and per-column statistics of "
        "the numeric cells), while `GET /health` is probed "
        f"every {sizes.probe_interval * 1000:.0f} ms on its own connection, from a process of its own "
        "(bench/prober.py: the load client's event loop would delay reading its answers), until every "
        "analysis is final. "
        "Stock: the article's upload endpoint with the analysis in Python in a `BackgroundTasks` function. "
        "Template: its example upload endpoint; the Python runner runs the Python analysis in a worker "
        "process (`@task(cpu_bound=True)`; one process on 2 cores: one per CPU but one), "
        "the Rust runner runs the native analysis with the GIL released, one analysis at a time (its "
        "`TASK_CPU_BOUND_SLOTS`, one per CPU but one). The idle row is the same probe "
        f"for {sizes.idle_probe_seconds:g} s before the uploads.",
        f"3. **Throughput.** {sizes.tasks:,} `POST /projects/{{id}}/tasks` ({sizes.task_concurrency} connections), "
        "the articles' activity-log task (one entry per task: a line appended to a file in stock's, a "
        "row in an SQLite table in the template's), timed from the first request "
        "until every accepted task is final: for the template its `/ready` counters say so; stock cannot say, "
        "so its log file's lines are counted. The template runs with `TASK_QUEUE_SIZE` above the task count "
        "(with the default bound of 1000 waiting tasks it answers 503 + Retry-After to a client this fast). "
        "Celery: bench/celery_throughput.py (its enqueue and drain phases are separate; the cell is the drain). "
        "Celery scaling: one worker process against two (`--concurrency 1` each, as `--scale worker=2` runs "
        "them) and one with `--concurrency 2`, a fresh batch per drain, the shapes interleaved over rounds; "
        "the CPU other processes used meanwhile is shown, because on 2 shared cores it decides the ratio. "
        "PostgreSQL store: bench/postgres_throughput.py renders the `task_store: postgres` variant (Python "
        "runner), starts its own PostgreSQL server (Debian's package, a throwaway data folder, fsync off) and "
        "sends the same batch to one replica, then to two replicas on one database (two uvicorn processes, "
        "each from its own working directory, requests alternating between them), each run on a fresh "
        "database with fresh replicas; the time is until every task's record in the database is final."
        + task_throughput.lag_note(results),
        "4. **Lambda**: bench/deployment.py: the handler module imported and its first event handled in a "
        "fresh process (cold start; the event is a POST to `/process/` that schedules a task with the list of "
        "one JSON object it carries, stored in DynamoDB and sent to SQS by the rendered handler), then an "
        "endpoint whose background task sleeps 1 s; stock Mangum runs the "
        "task before the handler returns, the rendered handler sends it to SQS (moto's server on loopback). "
        "bench/results/deploy.md lists where each handler module's import spends its time "
        "(`python -X importtime`, the ten costliest packages).",
        "5. **Template**: `copier copy --skip-tasks` from the working tree through tests/rendering.py; the whole "
        "test run is read from the last CI log.",
        "6. **Images**: bench/deployment.py builds the container and Lambda images of the `both` variant for "
        "each runner (classic builder, base images made locally from Debian packages under the official "
        "names, so base sizes are those stand-ins', not Docker Hub's); the app's share is the image minus "
        "its runtime base image.",
        f"7. **Task control**: bench/task_control_costs.py. {sizes.requests} sequential requests of each kind "
        "per run on one connection, to the no-op scheduling endpoint without a key and to the same endpoint "
        "decorated `@idempotent` with a fresh `Idempotency-Key` each time, in alternating blocks of "
        f"{task_control_costs.BLOCK} (so a slow spell of the machine falls on both); the key's cost is the "
        "difference of the p50s. Progress: `GET /health` probed every "
        f"{sizes.probe_interval * 1000:g} ms while a task paces {task_control_costs.PROGRESS_CALLS_PER_SECOND:,} "
        f"steps a second for {sizes.progress_seconds:g} s, calling `report_progress` at each step or not, "
        f"{task_control_costs.PROGRESS_ROUNDS} rounds of each alternating, probes pooled per mode; the cost is "
        "the ratio of the p99s.",
        f"8. **Observability**: bench/observability_cost.py. The no-op scheduling endpoint of metric 1 on the "
        "server as started, which is the default: Prometheus metrics on (every request, task transition and "
        "store call counted), tracing off (trace ids made and carried, no OTEL_* variable, the OpenTelemetry "
        "SDK never imported); against a second server of the same render started with METRICS_ENABLED=false "
        f"(every count a no-op, /metrics answers 404; checked before each run). {sizes.requests} sequential "
        "requests to each per run, each server on a connection of its own, both up at once, in alternating "
        f"blocks of {observability_cost.BLOCK} (so a slow spell of the machine falls on both); the cost is the "
        "median of the runs' ratios of the p50s (on ÷ off), and of the p99s.",
    ]


def not_measured_notes(results: dict[str, Any]) -> list[str]:
    notes = []
    for key, reason in results.get("unavailable", {}).items():
        notes.append(f"- `{key}`: {' '.join(reason.split())}")
    for name, script in SCRIPTS.items():
        entry = results.get(name) or {}
        for key in ("missing", "lambda_missing", "images_missing"):
            if key in entry:
                notes.append(f"- {script}: {entry[key]}")
    return notes
