"""PostgreSQL store: metric 3's batch of tasks over HTTP until all are final, one and two replicas.

    python3 bench/postgres_throughput.py [--tasks 10000] [--concurrency 8] [--runs 5]

Renders the `task_store: postgres` variant (Python runner, with the examples, as metric 3's
template rows) with the real copier CLI, installs it with uv, and starts its own PostgreSQL server
(Debian's `postgresql` package: initdb + pg_ctl from a throwaway folder on a free loopback port,
as the `postgres` user when run as root, without fsync, as the rendered tests start theirs).

Each run measures both shapes, the order alternating between runs, each on a fresh database
with freshly started replicas (their start-up is not timed):

- one replica: one uvicorn process with TASK_STORE_URL=postgresql://...;
- two replicas: two uvicorn processes on the same database, each from its own empty working
  directory (two "hosts"), the client sending request i to replica i % 2.

The workload is metric 3's (bench/task_throughput.py): `--tasks` `POST /projects/{id}/tasks`
over `--concurrency` connections in all, each scheduling the example activity-log task; the time
is from the first request until every accepted task's record in the database is final (counted
with one SELECT on the shared `tasks` table). Servers are started as bench/systems.py starts the
others: uvicorn's defaults, the app's default log settings, output to a log file, TASK_QUEUE_SIZE
above the task count.
"""

import argparse
import asyncio
import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from server_environment import clean_environment

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "example_service"
SERVER_USER = "postgres"  # PostgreSQL refuses to run as root; Debian's package makes this user
FINAL = ("succeeded", "failed", "cancelled")
REPLICAS = (1, 2)


def server_program(name: str) -> str | None:
    """A PostgreSQL server program: Debian keeps them off PATH in /usr/lib/postgresql/<n>/bin."""
    installed = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    return installed[-1] if installed else shutil.which(name)


def missing_postgres() -> str | None:
    """Why this machine cannot run the PostgreSQL server, or None."""
    if server_program("initdb") is None or server_program("pg_ctl") is None:
        return "PostgreSQL is not installed (bash .ci/install-postgres.sh)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"PostgreSQL is not installed: no `{SERVER_USER}` user to run it as (bash .ci/install-postgres.sh)"
        if shutil.which("runuser") is None:
            return "runuser is missing (util-linux): PostgreSQL cannot run as root"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8, help="client connections, over all replicas")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=600.0, help="per measurement")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # inside the project
    options = parser.parse_args()
    # A terminated run (bench/run.py's time limit) still stops its servers: `finally` runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if options.measure is not None:
        measure(options.measure, options)
        return

    why = missing_postgres()
    if why is not None:
        sys.exit(why)
    sys.path.insert(0, str(REPO_ROOT))
    from tests.rendering import render_variant

    with tempfile.TemporaryDirectory(prefix="postgres-bench-", ignore_cleanup_errors=True) as scratch:
        project = Path(scratch) / "service"
        answers = {
            "python_version": f"{sys.version_info.major}.{sys.version_info.minor}",
            "deploy_target": "container",
            "task_runner": "python",
            "task_queue": "none",
            "task_store": "postgres",
            "include_examples": True,
        }
        print(f"rendering {answers} ...", flush=True)
        render_variant(answers, project)
        subprocess.run(["uv", "sync", "--quiet"], cwd=project, check=True)
        command = [
            "uv", "run", "--quiet", "python", str(Path(__file__).resolve()), "--measure", str(project),
            "--tasks", str(options.tasks), "--concurrency", str(options.concurrency),
            "--runs", str(options.runs), "--timeout", str(options.timeout),
        ]  # fmt: skip
        if options.json is not None:
            command += ["--json", str(options.json.resolve())]
        subprocess.run(command, cwd=project, check=True)


# -- inside the rendered project's environment (psycopg and httpx2 are importable) ------------


class PostgresServer:
    """A throwaway server: initdb into a temporary folder, pg_ctl start on a free port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="postgres-bench-db-"))
        self.data = self.directory / "data"
        self.as_server_user = os.geteuid() == 0
        if self.as_server_user:
            shutil.chown(self.directory, SERVER_USER, SERVER_USER)
        self.run(
            "initdb", "--pgdata", str(self.data), "--username", "postgres", "--auth", "trust",
            "--encoding", "UTF8", "--no-sync",
        )  # fmt: skip

    def run(self, program: str, *arguments: str) -> None:
        prefix = ["runuser", "-u", SERVER_USER, "--"] if self.as_server_user else []
        command = [*prefix, str(server_program(program)), *arguments]
        result = subprocess.run(command, cwd=self.directory, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log = self.directory / "server.log"
            server_log = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise SystemExit(f"{program} failed: {result.stdout}{result.stderr}\n{server_log}")

    def start(self) -> None:
        options = " ".join([
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.directory}",
            # A throwaway server, as the rendered tests' (postgres_support.py): speed over durability.
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
            "-c max_connections=200",
        ])  # fmt: skip
        log = str(self.directory / "server.log")
        self.run("pg_ctl", "--pgdata", str(self.data), "--log", log, "--options", options, "--wait", "start")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def remove(self) -> None:
        with contextlib.suppress(SystemExit, subprocess.TimeoutExpired):
            self.run("pg_ctl", "--pgdata", str(self.data), "--mode", "immediate", "--wait", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


def measure(project: Path, options: argparse.Namespace) -> None:
    import psycopg

    server = PostgresServer()
    logs = Path(tempfile.mkdtemp(prefix="postgres-bench-logs-"))
    runs: dict[str, list[dict[str, Any]]] = {str(n): [] for n in REPLICAS}
    try:
        server.start()
        wait_for(lambda: psycopg.connect(server.url(), connect_timeout=2).close() is None, "PostgreSQL")
        for run in range(options.runs):
            order = REPLICAS if run % 2 == 0 else tuple(reversed(REPLICAS))
            for replicas in order:
                print(f"run {run + 1}/{options.runs}: {replicas} replica(s), {options.tasks} tasks ...", flush=True)
                database = f"bench_{run}_{replicas}"
                with psycopg.connect(server.url(), autocommit=True) as admin:
                    admin.execute(f'CREATE DATABASE "{database}"')
                try:
                    url = server.url(database)
                    with started_replicas(project, replicas, url, options.tasks, logs / f"run{run}") as base_urls:
                        result = asyncio.run(one_batch(base_urls, url, options))
                finally:
                    with psycopg.connect(server.url(), autocommit=True) as admin:
                        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                print(f"  {result['seconds']:.2f} s ({result['tasks_per_second']:.0f} tasks/s)", flush=True)
                runs[str(replicas)].append(result)
    finally:
        server.remove()

    summary = {
        "tasks": options.tasks,
        "concurrency": options.concurrency,
        "runner": "python",
        "cpus": os.cpu_count(),
        "replicas": {n: {"seconds": median([r["seconds"] for r in rs]), "runs": rs} for n, rs in runs.items()},
    }
    print()
    print("| replicas | tasks | seconds (median) | tasks/s |")
    print("| ---: | ---: | ---: | ---: |")
    for n, entry in summary["replicas"].items():
        print(f"| {n} | {options.tasks} | {entry['seconds']:.2f} | {options.tasks / entry['seconds']:.0f} |")
    if options.json is not None:
        options.json.write_text(json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(logs, ignore_errors=True)


@contextlib.contextmanager
def started_replicas(project: Path, count: int, url: str, tasks: int, logs: Path) -> Iterator[list[str]]:
    """`count` uvicorn processes of the rendered service on one database, each from its own
    empty working directory; their base URLs once every one answers /health."""
    import httpx2 as httpx

    processes: list[subprocess.Popen[bytes]] = []
    base_urls = []
    environment = clean_environment()
    environment |= {"TASK_STORE_URL": url, "TASK_QUEUE_SIZE": str(max(1000, tasks + 1000))}
    try:
        for number in range(count):
            port = free_port()
            workdir = logs / f"replica-{number}"
            workdir.mkdir(parents=True, exist_ok=True)
            with (logs / f"replica-{number}.log").open("ab") as log:
                command = [
                    sys.executable, "-m", "uvicorn", f"{PACKAGE}.main:app", "--host", "127.0.0.1", "--port", str(port),
                ]  # fmt: skip
                processes.append(
                    subprocess.Popen(
                        command,
                        cwd=workdir,
                        env=environment,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                )
            base_urls.append(f"http://127.0.0.1:{port}")
        for process, base_url in zip(processes, base_urls, strict=True):

            def answers(process: subprocess.Popen[bytes] = process, base_url: str = base_url) -> bool:
                if process.poll() is not None:
                    raise SystemExit(f"a replica exited at start-up; see its log in {logs}")
                return httpx.get(f"{base_url}/health", timeout=1, trust_env=False).status_code == 200

            wait_for(answers, f"the replica at {base_url}")
        yield base_urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def one_batch(base_urls: list[str], url: str, options: argparse.Namespace) -> dict[str, Any]:
    """Metric 3's batch, request i to replica i % len(base_urls); seconds until all are final."""
    import httpx2 as httpx
    import psycopg

    count, concurrency = options.tasks, options.concurrency
    per_client = max(1, concurrency // len(base_urls))
    clients = [
        httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(30.0),
            limits=httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client),
            trust_env=False,
        )
        for base_url in base_urls
    ]
    statuses: dict[int, int] = {}
    errors = 0
    next_index = iter(range(count))

    async def worker() -> None:
        nonlocal errors
        for index in next_index:
            body = {"task_name": f"bench task {index}", "assigned_to": "bench"}
            try:
                response = await clients[index % len(clients)].post(f"/projects/{index % 997 + 1}/tasks", json=body)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            except httpx.HTTPError:
                errors += 1

    started = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), options.timeout)
    finally:
        for client in clients:
            await client.aclose()
    scheduled = time.perf_counter() - started
    accepted = statuses.get(202, 0) + statuses.get(200, 0)
    if accepted == 0:
        raise SystemExit(f"no task was accepted: {statuses}, {errors} errors")

    with psycopg.connect(url, autocommit=True) as database:

        def final() -> tuple[int, int]:
            row = database.execute(
                "SELECT count(*) FILTER (WHERE state = ANY(%s)), count(*) FILTER (WHERE state = 'failed') FROM tasks",
                (list(FINAL),),
            ).fetchone()
            assert row is not None
            return int(row[0]), int(row[1])

        deadline = started + options.timeout
        while (done := final())[0] < accepted:
            if time.perf_counter() > deadline:
                raise SystemExit(
                    f"not every accepted task was final within {options.timeout:.0f}s: {done[0]}/{accepted}"
                )
            await asyncio.sleep(0.05)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "http_seconds": scheduled,
        "accepted": accepted,
        "rejected": count - accepted,
        "tasks_per_second": accepted / seconds,
        "tasks_failed": done[1],
    }


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


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
        except SystemExit:
            raise
        except Exception:  # not up yet
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


if __name__ == "__main__":
    main()
