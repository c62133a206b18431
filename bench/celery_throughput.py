"""Celery variant: throughput of small tasks through one worker, how it scales to two, and
enqueue latency.

    python3 bench/celery_throughput.py [--tasks 10000] [--concurrency 8] [--rounds 3]

Renders the `task_queue: celery` variant (pure-Python runner) with the real copier CLI, installs it
with uv, starts its own redis-server (Debian's package) on a free loopback port, then measures in
phases so none disturbs another on a small machine:

1. enqueue: one client posts `--tasks` requests, one after another, to the service running under
   uvicorn; each endpoint call is `tasks.add_task(noop, n)` (broker check, record written to
   Redis, 202; the message is published after the response). Latency is request to 202 as the
   client sees it. No worker consumes yet, so every task waits in the queue.
2. throughput: one `celery -A <package>.worker worker` (prefork, `--concurrency` processes) drains
   the queue. Throughput is tasks / (last finished_at - first started_at) from the task records.
3. scaling (`--rounds`): the same count, enqueued afresh as in 1 (not timed; while the drain's
   workers start), drained by each of these shapes, the order rotating every round so that the
   machine's drift falls on all of them:
   - `one`: one worker process, `--concurrency 1`;
   - `two`: two worker processes (`-n w1@%h`, `-n w2@%h`), `--concurrency 1` each: what
     `docker compose up --scale worker=2` runs, and the shape the target is about
     ("2 worker processes at least 1.5x one worker's rate");
   - `prefork2`: one worker process, `--concurrency 2` (one consumer, two pool processes).
   Each cell is the median over the rounds; the ratio is two's median over one's.

Every drain starts its workers on a queue nobody publishes to and, once each answers a ping, has
them all consume the real queue at once (a broadcast `add_consumer`): a worker's start-up (about a
second of imports) is then in no window, and two workers start draining together rather than the
first alone until the second is up. CPU seconds of redis-server, of the workers' main processes
(the consumers) and of their pool processes are read from /proc over each drain, and the machine's
busy time from /proc/stat (what is left over is other processes'): on a machine with few cores,
shared, they say whether the workers or the machine are the limit. For the same reason each drain
first waits (up to `--quiet-wait` seconds) for the machine to be quiet, its workers idle.

Logs are at WARNING: at INFO every task writes three JSON lines, which is a logging benchmark.
Each worker serves its metrics on a port of its own, as scaled workers do.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "example_service"
# The queue workers are started on: nothing is ever published to it (see the docstring).
HOLDING_QUEUE = "bench.hold"
TARGET_RATIO = 1.5
# Before a drain, with our processes idle, the machine counts as quiet below this many busy cores;
# a drain waits at most --quiet-wait seconds for that (other jobs on a shared machine come and go).
QUIET_CORES = 0.25

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
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the 1-vs-2 scaling drains (0: none)")
    parser.add_argument(
        "--quiet-wait", type=float, default=45.0, help="longest wait for a quiet machine before each drain (s)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # inside the project
    options = parser.parse_args()
    if options.measure is not None:
        measure(options.measure, options.tasks, options.concurrency, options.rounds, options.quiet_wait, options.json)
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
            "--rounds", str(options.rounds),
            "--quiet-wait", str(options.quiet_wait),
        ]  # fmt: skip
        if options.json is not None:
            command += ["--json", str(options.json.resolve())]
        subprocess.run(command, cwd=project, check=True)


@dataclass(frozen=True)
class Shape:
    """How many worker processes drain the queue, with how many pool processes each."""

    name: str
    processes: int
    concurrency: int

    def describe(self) -> str:
        plural = "es" if self.processes > 1 else ""
        return f"{self.processes} worker process{plural}, --concurrency {self.concurrency}"


SCALING = (Shape("one", 1, 1), Shape("two", 2, 1), Shape("prefork2", 1, 2))


@dataclass
class Services:
    """redis-server and the API, started once for every batch; and what talks to them."""

    project: Path
    environment: dict[str, str]
    base_url: str
    store: Any  # redis.Redis on the task store's database
    broker: Any  # redis.Redis on the broker's database
    control: Any  # a Celery app on the broker, for ping and add_consumer
    redis_pid: int
    api_pid: int
    quiet_wait: float  # seconds a drain waits at most for a quiet machine


def measure(
    project: Path, count: int, concurrency: int, rounds: int, quiet_wait: float, json_path: Path | None
) -> None:
    """Runs in the rendered project's environment (its package and httpx2 are importable)."""
    with services(project, count, quiet_wait) as running:
        print(f"enqueueing {count} tasks through POST /bench/{{n}} ...", flush=True)
        latencies = enqueue(running, count)
        print(f"draining with one worker, --concurrency {concurrency} ...", flush=True)
        first = drain(running, Shape("single", 1, concurrency), count)
        scaling = measure_scaling(running, count, rounds) if rounds > 0 else None

    quantiles = statistics.quantiles(latencies, n=100)
    results: dict[str, Any] = {
        "tasks": count,
        "worker_concurrency": concurrency,
        "cpus": os.cpu_count(),
        "throughput_tasks_per_s": first["tasks_per_s"],
        "drain_seconds": first["seconds"],
        "drain_cpu_cores": first["cpu_cores"],
        "enqueue_latency_ms": {
            "p50": round(quantiles[49] * 1000, 2),
            "p99": round(quantiles[98] * 1000, 2),
            "max": round(max(latencies) * 1000, 2),
        },
    }
    if scaling is not None:
        results["scaling"] = scaling
        # The target's numbers at the top level, where the report's readers look for them.
        results["one_worker_tasks_per_s"] = scaling["shapes"]["one"]["tasks_per_s"]
        results["two_workers_tasks_per_s"] = scaling["shapes"]["two"]["tasks_per_s"]
    print_table(results)
    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2) + "\n")


@contextmanager
def services(project: Path, count: int, quiet_wait: float) -> Iterator[Services]:
    import httpx2 as httpx
    from celery import Celery
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
        # As `uv run` on a developer's machine: no key (the settings' default; the images need one).
        "AUTH_MODE": "none",
    }
    processes = [redis]
    control = Celery("bench", broker=environment["CELERY_BROKER_URL"], set_as_current=False)
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
        yield Services(
            project=project,
            environment=environment,
            base_url=base_url,
            store=Redis(port=redis_port, db=1, decode_responses=True),
            broker=Redis(port=redis_port, db=0),
            control=control,
            redis_pid=redis.pid,
            api_pid=api.pid,
            quiet_wait=quiet_wait,
        )
    finally:
        control.close()
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=60)
        shutil.rmtree(scratch, ignore_errors=True)


def enqueue(running: Services, count: int) -> list[float]:
    """`count` tasks, one request after another; the latency of each (request to 202)."""
    import httpx2 as httpx

    latencies = []
    with httpx.Client(base_url=running.base_url) as client:
        for n in range(count):
            started = time.perf_counter()
            response = client.post(f"/bench/{n}")
            latencies.append(time.perf_counter() - started)
            if response.status_code != 202:
                raise SystemExit(f"task {n}: {response.status_code} {response.text}")
    wait_for_queue(running, count)
    return latencies


def wait_for_queue(running: Services, count: int) -> None:
    # The API publishes after each response: wait until every message is in the queue.
    wait_for(lambda: running.broker.llen(PACKAGE) == count, "the queue to hold every task")


def measure_scaling(running: Services, count: int, rounds: int) -> dict[str, Any]:
    """Each shape of SCALING drains a fresh batch once per round, in an order that rotates."""
    runs: dict[str, list[dict[str, Any]]] = {shape.name: [] for shape in SCALING}
    for round_number in range(rounds):
        order = SCALING[round_number % len(SCALING) :] + SCALING[: round_number % len(SCALING)]
        for shape in order:
            forget_batch(running)
            print(f"round {round_number + 1}/{rounds}: {shape.describe()} ...", flush=True)
            # Enqueued while the workers start (they consume nothing yet): saves their start-up.
            runs[shape.name].append(drain(running, shape, count, meanwhile=lambda: enqueue(running, count)))
    shapes = {
        shape.name: {
            "processes": shape.processes,
            "concurrency": shape.concurrency,
            "tasks_per_s": round(statistics.median(run["tasks_per_s"] for run in runs[shape.name]), 1),
            "cpu_cores": median_cores(runs[shape.name]),
            "runs": runs[shape.name],
        }
        for shape in SCALING
    }
    one, two, prefork = (shapes[name]["tasks_per_s"] for name in ("one", "two", "prefork2"))
    return {
        "target_form": "two separate worker processes, --concurrency 1 each, vs one",
        "rounds": rounds,
        "target_ratio": TARGET_RATIO,
        "shapes": shapes,
        # The target's: two worker processes over one, medians over the rounds.
        "ratio": round(two / one, 2),
        "met": two / one >= TARGET_RATIO,
        # Each round's own ratio (its two drains ran minutes apart at most): the spread.
        "round_ratios": [
            round(b["tasks_per_s"] / a["tasks_per_s"], 2) for a, b in zip(runs["one"], runs["two"], strict=True)
        ],
        "prefork2_ratio": round(prefork / one, 2),
    }


def forget_batch(running: Services) -> None:
    """Empty the task store (records, counters, Celery's results): the next batch's records are
    then the only ones. The broker's database keeps kombu's bindings; its queue is empty."""
    assert running.broker.llen(PACKAGE) == 0
    running.store.flushdb()


def drain(running: Services, shape: Shape, count: int, meanwhile: Callable[[], object] | None = None) -> dict[str, Any]:
    """Start `shape`'s workers on the holding queue (and run `meanwhile`), let them all consume
    the real one at once, wait until every task succeeded, stop them. The rate is from the
    records' timestamps."""
    nodes = [f"w{index + 1}@{socket.gethostname()}" for index in range(shape.processes)]
    workers = [start_worker(running, node, shape.concurrency) for node in nodes]
    try:
        if meanwhile is not None:
            meanwhile()
        wait_for(lambda: answering(running, nodes) == set(nodes), "the workers to answer a ping", timeout=120)
        waited = wait_for_quiet(running.quiet_wait)
        pids = [running.redis_pid, running.api_pid, *(worker.pid for worker in workers)]
        before, machine_before = cpu_seconds(pids), machine_cpu_seconds()
        started = time.monotonic()
        running.control.control.add_consumer(PACKAGE, destination=nodes, reply=True, timeout=5)
        wait_for(
            lambda: running.store.zcard("tasks:state:succeeded") == count,
            "the workers to finish every task",
            timeout=1800,
        )
        wall = time.monotonic() - started
        after, machine_after = cpu_seconds(pids), machine_cpu_seconds()
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=60)
    busy = busy_seconds(running)
    roles = {
        "redis": [running.redis_pid],
        "api": [running.api_pid],
        "worker_main": [worker.pid for worker in workers],
    }
    cores = {role: used(before, after, pids, wall) for role, pids in roles.items()}
    # Whatever is left is the pool processes (children of the workers).
    pool = set(after) - {pid for pids in roles.values() for pid in pids}
    cores["pool"] = used(before, after, list(pool), wall)
    cores["total"] = round(sum(cores.values()), 2)
    # What else ran on the machine meanwhile (another benchmark, a test run): the noise.
    cores["others"] = round(max(0.0, (machine_after - machine_before) / wall - cores["total"]), 2)
    print(f"  {count / busy:.0f} tasks/s; CPU cores {cores}; waited {waited:.0f} s for a quiet machine", flush=True)
    return {
        "seconds": round(busy, 3),
        "tasks_per_s": round(count / busy, 1),
        "cpu_cores": cores,
        "quiet_wait_seconds": round(waited, 1),
    }


def start_worker(running: Services, node: str, concurrency: int) -> subprocess.Popen[bytes]:
    environment = {**running.environment, "WORKER_METRICS_PORT": str(free_port())}
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", f"{PACKAGE}.worker", "worker",
         "--include", "bench_jobs", "--concurrency", str(concurrency), "-n", node,
         "-Q", HOLDING_QUEUE, "--without-mingle", "--without-gossip"],
        cwd=running.project, env=environment, stdout=subprocess.DEVNULL,
    )  # fmt: skip


def answering(running: Services, nodes: list[str]) -> set[str]:
    replies = running.control.control.ping(destination=nodes, timeout=0.5)
    return {name for reply in replies for name in reply}


def busy_seconds(running: Services) -> float:
    """Last finished_at - first started_at over the batch's records."""
    starts, finishes = [], []
    for task_id in running.store.zrange("tasks:all", 0, -1):
        record = json.loads(running.store.hget(f"tasks:task:{task_id}", "data") or "{}")
        starts.append(datetime.fromisoformat(record["started_at"]))
        finishes.append(datetime.fromisoformat(record["finished_at"]))
    return (max(finishes) - min(starts)).total_seconds()


def cpu_seconds(roots: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each process in `roots` and of their children (/proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, seconds)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        # After the name: state, ppid, ..., utime and stime are the 12th and 13th.
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    wanted = set(roots)
    return {pid: seconds for pid, (parent, seconds) in stats.items() if pid in wanted or parent in wanted}


def wait_for_quiet(patience: float) -> float:
    """Wait (up to `patience` seconds) until the machine, ours idle, is busy below QUIET_CORES over a
    second: a drain then starts with the CPUs its own, as far as it can tell. The seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < patience:
        before = machine_cpu_seconds()
        time.sleep(1.0)
        if machine_cpu_seconds() - before < QUIET_CORES:
            break
    return max(0.0, time.monotonic() - started - 1.0)


def machine_cpu_seconds() -> float:
    """CPU seconds every core of the machine spent busy since boot (/proc/stat: all but idle and iowait)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def used(before: dict[int, float], after: dict[int, float], pids: list[int], wall: float) -> float:
    """CPU cores `pids` used over `wall` seconds (a process born meanwhile counts from zero)."""
    spent = sum(after.get(pid, 0.0) - before.get(pid, 0.0) for pid in pids)
    return round(spent / wall, 2)


def median_cores(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {role: round(statistics.median(run["cpu_cores"][role] for run in runs), 2) for role in runs[0]["cpu_cores"]}


def print_table(results: dict[str, Any]) -> None:
    enqueue = results["enqueue_latency_ms"]
    print()
    print("| tasks | worker concurrency | throughput | enqueue p50 | enqueue p99 |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| {results['tasks']} | {results['worker_concurrency']} | {results['throughput_tasks_per_s']} tasks/s "
        f"| {enqueue['p50']} ms | {enqueue['p99']} ms |"
    )
    scaling = results.get("scaling")
    if scaling is None:
        return
    print()
    print(f"scaling, median of {scaling['rounds']} rounds:")
    print("| shape | throughput | CPU cores: redis / consumers / pool / total; others |")
    print("| --- | ---: | ---: |")
    for name, shape in scaling["shapes"].items():
        cores = shape["cpu_cores"]
        print(
            f"| {name}: {Shape(name, shape['processes'], shape['concurrency']).describe()} "
            f"| {shape['tasks_per_s']} tasks/s "
            f"| {cores['redis']} / {cores['worker_main']} / {cores['pool']} / {cores['total']}; {cores['others']} |"
        )
    met = "met" if scaling["met"] else "not met"
    print(
        f"two over one: {scaling['ratio']}x (rounds: {scaling['round_ratios']}; target >= {TARGET_RATIO}x: {met}); "
        f"prefork2 over one: {scaling['prefork2_ratio']}x"
    )


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
