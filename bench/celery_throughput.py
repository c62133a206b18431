"""Celery variant: throughput of small tasks through one worker, and enqueue latency.

    python3 bench/celery_throughput.py [--tasks 10000] [--concurrency 8]

Renders the `task_queue: celery` variant (pure-Python runner) with the real copier CLI, installs it
with uv, starts its own redis-server (Debian's package) on a free loopback port, then measures in
two phases so neither disturbs the other on a small machine:

1. enqueue: one client posts `--tasks` requests, one after another, to the service running under
   uvicorn; each endpoint call is `tasks.add_task(noop, n)` (broker check, record written to
   Redis, 202; the message is published after the response). Latency is request to 202 as the
   client sees it. No worker runs yet, so every task waits in the queue.
2. throughput: one `celery -A <package>.worker worker` (prefork, `--concurrency` processes) drains
   the queue. Throughput is tasks / (last finished_at - first started_at) from the task records,
   so the worker's start-up is not counted.

Logs are at WARNING: at INFO every task writes three JSON lines, which is a logging benchmark.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "example_service"

# Imported by the service (uvicorn --factory) and by the worker (--include): the task, and an
# endpoint that schedules it.
BENCH_MODULE = f"""
from fastapi import APIRouter, FastAPI

from {PACKAGE}.app import create_app
from {PACKAGE}.tasks import TaskAccepted, Tasks, task


@task(name="bench.noop", max_attempts=1)
def noop(n: int) -> int:
    return n


router = APIRouter()


@router.post("/bench/{{n}}", status_code=202)
def enqueue(n: int, tasks: Tasks) -> TaskAccepted:
    return tasks.add_task(noop, n)


def service() -> FastAPI:
    app = create_app()
    app.include_router(router)
    return app
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8, help="worker pool processes")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # inside the project
    options = parser.parse_args()
    if options.measure is not None:
        measure(options.measure, options.tasks, options.concurrency, options.json)
        return

    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed: bash .ci/install-celery.sh")
    sys.path.insert(0, str(REPO_ROOT))
    from tests.rendering import render_variant

    with tempfile.TemporaryDirectory(prefix="celery-bench-") as scratch:
        project = Path(scratch) / "service"
        answers = {
            "python_version": f"{sys.version_info.major}.{sys.version_info.minor}",
            "deploy_target": "container",
            "task_runner": "python",
            "task_queue": "celery",
            "include_examples": False,
        }
        print(f"rendering {answers} ...", flush=True)
        render_variant(answers, project)
        subprocess.run(["uv", "sync", "--quiet"], cwd=project, check=True)
        (project / "bench_jobs.py").write_text(BENCH_MODULE)
        command = [
            "uv", "run", "--quiet", "python", str(Path(__file__).resolve()),
            "--measure", str(project),
            "--tasks", str(options.tasks),
            "--concurrency", str(options.concurrency),
        ]  # fmt: skip
        if options.json is not None:
            command += ["--json", str(options.json.resolve())]
        subprocess.run(command, cwd=project, check=True)


def measure(project: Path, count: int, concurrency: int, json_path: Path | None) -> None:
    """Runs in the rendered project's environment (its package and httpx2 are importable)."""
    import httpx2 as httpx
    from redis import Redis

    scratch = Path(tempfile.mkdtemp(prefix="celery-bench-run-"))
    redis_port, api_port = free_port(), free_port()
    redis = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
         "--appendonly", "no", "--dir", str(scratch)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    environment = {
        **os.environ,
        "LOG_LEVEL": "WARNING",
        "TASK_BACKEND": "celery",
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
        "CELERY_RESULT_BACKEND": f"redis://127.0.0.1:{redis_port}/1",
        "TASK_STORE_URL": f"redis://127.0.0.1:{redis_port}/1",
        "TASK_QUEUE_SIZE": str(count + 1000),
        "TASK_CONCURRENCY": str(concurrency),
        # As `uv run` on a developer's machine: no key (the settings' default; the images need one).
        "AUTH_MODE": "none",
    }
    processes = [redis]
    try:
        wait_for(lambda: Redis(port=redis_port).ping(), "redis-server")
        api = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench_jobs:service", "--factory",
             "--port", str(api_port), "--no-access-log", "--log-level", "warning"],
            cwd=project, env=environment,
        )  # fmt: skip
        processes.append(api)
        base_url = f"http://127.0.0.1:{api_port}"
        wait_for(lambda: httpx.get(f"{base_url}/ready").status_code == 200, "the API")

        print(f"enqueueing {count} tasks through POST /bench/{{n}} ...", flush=True)
        latencies = []
        with httpx.Client(base_url=base_url) as client:
            for n in range(count):
                started = time.perf_counter()
                response = client.post(f"/bench/{n}")
                latencies.append(time.perf_counter() - started)
                if response.status_code != 202:
                    raise SystemExit(f"task {n}: {response.status_code} {response.text}")
        store = Redis(port=redis_port, db=1, decode_responses=True)
        broker = Redis(port=redis_port, db=0)
        wait_for(lambda: broker.llen(PACKAGE) == count, "the queue to hold every task")

        print(f"draining with one worker, --concurrency {concurrency} ...", flush=True)
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", f"{PACKAGE}.worker", "worker",
             "--include", "bench_jobs", "--concurrency", str(concurrency),
             "--without-mingle", "--without-gossip"],
            cwd=project, env=environment, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        processes.append(worker)
        wait_for(
            lambda: store.zcard("tasks:state:succeeded") == count,
            "the worker to finish every task",
            timeout=1800,
        )
        starts, finishes = [], []
        for task_id in store.zrange("tasks:all", 0, -1):
            record = json.loads(store.hget(f"tasks:task:{task_id}", "data") or "{}")
            starts.append(datetime.fromisoformat(record["started_at"]))
            finishes.append(datetime.fromisoformat(record["finished_at"]))
        busy = (max(finishes) - min(starts)).total_seconds()
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=60)
        shutil.rmtree(scratch, ignore_errors=True)

    quantiles = statistics.quantiles(latencies, n=100)
    results = {
        "tasks": count,
        "worker_concurrency": concurrency,
        "cpus": os.cpu_count(),
        "throughput_tasks_per_s": round(count / busy, 1),
        "drain_seconds": round(busy, 2),
        "enqueue_latency_ms": {
            "p50": round(quantiles[49] * 1000, 2),
            "p99": round(quantiles[98] * 1000, 2),
            "max": round(max(latencies) * 1000, 2),
        },
    }
    print()
    print("| tasks | worker concurrency | throughput | enqueue p50 | enqueue p99 |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| {count} | {concurrency} | {results['throughput_tasks_per_s']} tasks/s "
        f"| {results['enqueue_latency_ms']['p50']} ms | {results['enqueue_latency_ms']['p99']} ms |"
    )
    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2) + "\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except Exception:  # not up yet
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


if __name__ == "__main__":
    main()
