"""Metric 3: how long a batch of tasks scheduled over HTTP takes until every one is final.

The in-process runners are measured here, against the running servers (SQLite store); the Celery
variant by celery_throughput.py and the PostgreSQL store (one and two replicas) by
postgres_throughput.py, which run.py starts as scripts of their own.
"""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from load_client import closed_loop, wait_for_count
from processes import host_python, last_line, say
from report_cells import (
    STOCK,
    TIMES,
    Table,
    good_runs,
    median,
    ms,
    not_measured,
    per_runner,
    ratio,
    runner_name,
    seconds,
)
from report_cells import unavailable_reason as why_not
from repository import REPO_ROOT
from run_results import Results
from systems import System, uv

NUMBER = 3
NAME = "task_throughput"
TITLE = "task throughput"
KEY = "m3"  # its results.json key; the Celery numbers are under "celery", PostgreSQL's under "postgres"
CELERY_SCRIPT = Path(__file__).resolve().parent / "celery_throughput.py"
POSTGRES_SCRIPT = Path(__file__).resolve().parent / "postgres_throughput.py"


async def measure(system: System, run: int, sizes: Any, results: Results) -> None:
    s = sizes
    counter = system.finished_counter("activity")
    before = await asyncio.to_thread(counter)

    async def create(http: httpx.AsyncClient, index: int) -> httpx.Response:
        body = {"task_name": f"bench task {index}", "assigned_to": "bench"}
        return await http.post(f"/projects/{index % 997 + 1}/tasks", json=body)

    failed_before = await asyncio.to_thread(system.failed_count)
    started = time.perf_counter()
    batch = await closed_loop(
        system.base_url, create, count=s.tasks, concurrency=s.task_concurrency, deadline=s.timeout
    )
    scheduled = time.perf_counter() - started
    done = await wait_for_count(counter, before + batch.accepted, timeout=s.timeout, interval=0.05)
    if done is None:
        raise ValueError(f"not every accepted task was final within {s.timeout:.0f}s")
    if batch.accepted == 0:
        raise ValueError(f"no task was accepted: {batch.statuses}, {batch.errors} errors")
    seconds = done - started
    results.data[KEY].setdefault(system.key, []).append(
        {
            "seconds": seconds,
            "http_seconds": scheduled,
            "accepted": batch.accepted,
            "rejected": batch.rejected,
            "tasks_per_second": batch.accepted / seconds,
            "tasks_failed": await asyncio.to_thread(system.failed_count, failed_before),
        }
    )


# -- the Celery variant and the PostgreSQL store: scripts of their own ------------------------


def start_celery(sizes: Any, work: Path, logs: Path) -> subprocess.Popen[str] | dict[str, str]:
    """celery_throughput.py in the background, under the interpreter run.py was started with:
    one worker's drain, then `sizes.celery_rounds` rounds of the 1-vs-2-worker drains."""
    if shutil.which("redis-server") is None:
        return {"missing": "redis-server is not installed (bash .ci/install-celery.sh)"}
    arguments = [
        "--tasks", str(sizes.celery_tasks), "--rounds", str(sizes.celery_rounds),
        "--quiet-wait", str(sizes.celery_quiet_wait),
    ]  # fmt: skip
    return start_script(CELERY_SCRIPT, arguments, work, logs)


def finish_celery(process: subprocess.Popen[str] | dict[str, str], work: Path, logs: Path, limit: float) -> Any:
    """Its numbers, or {"missing": why}."""
    return finish_script(CELERY_SCRIPT, process, work, logs, limit)


def start_postgres(sizes: Any, work: Path, logs: Path) -> subprocess.Popen[str] | dict[str, str]:
    """postgres_throughput.py in the background: the same batch as the rows above, `sizes.runs` times."""
    why = postgres_missing()
    if why is not None:
        return {"missing": why}
    arguments = [
        "--tasks", str(sizes.tasks), "--concurrency", str(sizes.task_concurrency),
        "--runs", str(sizes.runs), "--timeout", str(sizes.timeout),
    ]  # fmt: skip
    return start_script(POSTGRES_SCRIPT, arguments, work, logs)


def finish_postgres(process: subprocess.Popen[str] | dict[str, str], work: Path, logs: Path, limit: float) -> Any:
    """Its numbers, or {"missing": why}."""
    return finish_script(POSTGRES_SCRIPT, process, work, logs, limit)


def postgres_missing() -> str | None:
    """Why PostgreSQL cannot be started here (postgres_throughput.py's own check), or None."""
    import postgres_throughput

    return postgres_throughput.missing_postgres()


def start_script(script: Path, arguments: list[str], work: Path, logs: Path) -> subprocess.Popen[str]:
    """A measuring script in the background, under the interpreter run.py was started with, in a
    session of its own (so a time limit can stop it and the servers it started)."""
    output = work / "external" / f"{script.stem.split('_')[0]}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.unlink(missing_ok=True)
    command = [host_python(), str(script), *arguments, "--json", str(output)]
    env = {**os.environ, "PATH": f"{Path(uv()).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    say(f"running bench/{script.name} {' '.join(arguments)} ...")
    log = (logs / f"{script.stem}.log").open("w")
    return subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )


def stop_script(process: subprocess.Popen[str]) -> None:
    """SIGTERM to the script's session (it stops its servers on the way out), then SIGKILL."""
    if process.poll() is not None:
        return
    for sent, grace in ((signal.SIGTERM, 60), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sent)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def finish_script(
    script: Path, process: subprocess.Popen[str] | dict[str, str], work: Path, logs: Path, limit: float
) -> Any:
    """The script's numbers (its --json), or {"missing": why}."""
    if isinstance(process, dict):
        return process
    try:
        process.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        stop_script(process)
        return {"missing": f"failed: bench/{script.name} did not finish within {limit:.0f}s"}
    output = work / "external" / f"{script.stem.split('_')[0]}.json"
    if process.returncode == 0 and output.exists():
        say(f"bench/{script.name} done")
        return json.loads(output.read_text())
    why = last_line(logs / f"{script.stem}.log")
    return {"missing": f"failed: bench/{script.name} exited {process.returncode}: {why}"}


# -- in the report ----------------------------------------------------------------------------


def stats(results: dict[str, Any], key: str) -> dict[str, float | None]:
    runs = good_runs(results, NUMBER, key)
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


def add_rows(table: Table, results: dict[str, Any], sizes: Any) -> None:
    n = sizes.tasks
    stock_reason = why_not(results, STOCK, NUMBER)
    stock = stats(results, STOCK) if stock_reason is None else None
    stock_cell = throughput_cell(stock) if stock else not_measured(stock_reason or "")
    for key in ("python", "rust"):
        reason = why_not(results, key, NUMBER)
        template = stats(results, key) if reason is None else None
        table.add(
            f"3. **{n:,} tasks scheduled over HTTP until all are final** ({runner_name(key)})",
            stock_cell,
            throughput_cell(template) if template else not_measured(reason or ""),
            ratio(template["seconds"], stock["seconds"]) if (stock and template) else "—",
        )
    skipped = results.get("skipped", {}).get(str(NUMBER))
    add_celery_row(table, results.get("celery") or {}, skipped, stock, stock_cell, n)
    add_postgres_rows(table, results.get("postgres") or {}, skipped, stock, stock_cell, n)


def add_celery_row(
    table: Table, celery: dict[str, Any], skipped: str | None, stock: Any, stock_cell: str, n: int
) -> None:
    if skipped or "missing" in celery or not celery:
        why = skipped or celery.get("missing") or "bench/celery_throughput.py did not run"
        table.add("3. Celery, one worker (bench/celery_throughput.py)", stock_cell, not_measured(why), "—")
        return
    drain = celery.get("drain_seconds")
    rate = celery.get("throughput_tasks_per_s")
    enqueue = celery.get("enqueue_latency_ms", {})
    concurrency = celery.get("worker_concurrency", "?")
    table.add(
        f"3. Celery, one worker (--concurrency {concurrency}), {celery.get('tasks', '?'):,} tasks "
        "(bench/celery_throughput.py: drain time of a pre-filled queue; "
        f"enqueue p50 / p99 {ms(enqueue.get('p50'))} / {ms(enqueue.get('p99'))} ms)",
        stock_cell,
        f"{seconds(drain)} ({rate:.0f} tasks/s)" if rate else seconds(drain),
        ratio(drain, stock["seconds"]) if (stock and celery.get("tasks") == n) else "— (different sizes)",
    )
    add_celery_scaling_rows(table, celery)


# The target: "Celery: 10,000 tasks with 2 worker processes at least 1.5x one worker's rate".
CELERY_SCALING_TARGET = 1.5


def add_celery_scaling_rows(table: Table, celery: dict[str, Any]) -> None:
    """celery_throughput.py's scaling rounds: one worker process, two (what `--scale worker=2`
    runs), and one with two pool processes; `--concurrency 1` per pool process. No stock
    counterpart: the rows compare the template with itself."""
    scaling = celery.get("scaling") or {}
    shapes = scaling.get("shapes") or {}
    rounds = scaling.get("rounds", "?")
    labels = {
        "one": f"3. Celery, 1 worker process (--concurrency 1), {celery.get('tasks', '?'):,} tasks: drain rate, "
        f"median of {rounds} rounds (bench/celery_throughput.py: a fresh batch per drain, the shapes interleaved)",
        "two": "3. Celery, 2 worker processes (--concurrency 1 each, as `--scale worker=2`), the same rounds: "
        f"**rate ÷ 1 worker process's, target ≥ {CELERY_SCALING_TARGET}{TIMES}**",
        "prefork2": "3. Celery, 1 worker process with --concurrency 2 (prefork), the same rounds: "
        "rate ÷ 1 worker process's",
    }
    if not shapes:
        why = "bench/celery_throughput.py ran no scaling rounds (--rounds 0, or an older results.json)"
        for label in labels.values():
            table.add(label, "—", not_measured(why), "—")
        return
    one = shapes["one"]["tasks_per_s"]
    spread = scaling.get("round_ratios") or []
    for name, label in labels.items():
        rate = shapes[name]["tasks_per_s"]
        cell = f"{rate:.0f} tasks/s"
        if name != "one":
            cell += f" = {rate / one:.2f}{TIMES}"
        if name == "two":
            if len(spread) > 1:
                cell += f" (rounds {min(spread):.2f} to {max(spread):.2f}{TIMES})"
            cell += ": met" if rate / one >= CELERY_SCALING_TARGET else ": **not met**"
        table.add(f"{label}; CPU cores {cores_text(shapes[name].get('cpu_cores') or {})}", "—", cell, "—")


def cores_text(cores: dict[str, float]) -> str:
    """What the drain kept busy: on a small machine, whether the workers or the machine limit."""
    if not cores:
        return "not read"
    return (
        f"redis {cores.get('redis', 0):.2f}, worker main {cores.get('worker_main', 0):.2f}, "
        f"pool {cores.get('pool', 0):.2f}, other processes {cores.get('others', 0):.2f}"
    )


POSTGRES_ROWS = {"1": "one replica", "2": "two replicas"}


def add_postgres_rows(
    table: Table, postgres: dict[str, Any], skipped: str | None, stock: Any, stock_cell: str, n: int
) -> None:
    """One row per replica count: the same batch as the template rows, the PostgreSQL store."""
    for replicas, shape in POSTGRES_ROWS.items():
        label = f"3. PostgreSQL store, {shape}"
        if skipped or "missing" in postgres or not postgres:
            why = skipped or postgres.get("missing") or "bench/postgres_throughput.py did not run"
            table.add(f"{label} (bench/postgres_throughput.py)", stock_cell, not_measured(why), "—")
            continue
        runs = postgres.get("replicas", {}).get(replicas, {}).get("runs", [])
        numbers = {
            "seconds": median([r.get("seconds") for r in runs]),
            "rate": median([r.get("tasks_per_second") for r in runs]),
            "rejected": max([r.get("rejected", 0) for r in runs], default=0),
            "failed": max([r.get("tasks_failed") or 0 for r in runs], default=0),
        }
        where = (
            "one uvicorn process" if replicas == "1" else "two uvicorn processes on one database, requests alternating"
        )
        table.add(
            f"{label}, {postgres.get('tasks', '?'):,} tasks (bench/postgres_throughput.py: {where}; Python runner)",
            stock_cell,
            throughput_cell(numbers),
            "—"
            if not stock
            else ratio(numbers["seconds"], stock["seconds"])
            if postgres.get("tasks") == n
            else "— (different sizes)",
        )


def headline(results: dict[str, Any], sizes: Any) -> list[str]:
    if why_not(results, STOCK, NUMBER) is not None:
        return []
    stock = stats(results, STOCK)
    parts = per_runner(results, NUMBER, lambda key: seconds(stats(results, key)["seconds"]))
    if not parts:
        return []
    return [
        f"- {sizes.tasks:,} tasks over HTTP until all are final: {', '.join(parts)} vs "
        f"{seconds(stock['seconds'])} for stock `BackgroundTasks`."
    ]


def lag_note(results: dict[str, Any]) -> str:
    """Say so when tasks finished as fast as they were scheduled (then it is an HTTP rate)."""
    lags = [
        run["seconds"] - run["http_seconds"]
        for key in (STOCK, "python", "rust")
        for run in good_runs(results, NUMBER, key)
        if run.get("seconds") is not None and run.get("http_seconds") is not None
    ]
    if not lags or max(lags) > 1.0:
        return ""
    return (
        f" In every run the last task was final at most {max(lags):.2f} s after the last request was answered: "
        "the tasks keep up, so this row is the rate at which each system accepts tasks over HTTP."
    )
