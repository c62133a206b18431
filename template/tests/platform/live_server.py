"""The service in a real uvicorn process on a free loopback port, for the tests that need one.

`live_server()` starts it, waits until /health answers, and kills it (group and all) when the
block ends: a test that wants a graceful stop sends the signal itself, through `process`, and
asserts on what follows. `LoggedProcess` is what any process a test starts has in common (the
Celery workers of test_celery.py too): its own process group, and a log of JSON lines.
"""

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Guards against a hang, not a performance limit: the server normally answers within a second.
STARTUP_TIME_BOX_S = 30.0
# The service plus the test tasks (slow, failing, hanging) the real-server tests schedule.
SERVER_APP = "tests.platform.server_app:app"
# What follows the interpreter to run uvicorn; a test can run it its own way (`-c <code>`).
UVICORN = ("-m", "uvicorn")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The examples' periodic tasks would fire on a server's first tick (a new store has no slot
# claimed), adding records and running tasks no test asked for; a test of the clock sets it.
NO_PERIODIC_CLOCK = {"PERIODIC_TICK_SECONDS": "0"}


def local_runner_env(tmp_path: Path) -> dict[str, str]:
    """The in-process runner on a SQLite store in `tmp_path`.

    Also where Celery is the default: test_celery.py covers Celery.
    """
    return {"TASK_BACKEND": "local", "TASK_STORE_URL": f"sqlite:///{tmp_path / 'tasks.db'}"}


def store_states(tmp_path: Path, ids: Iterable[str]) -> dict[str, str]:
    """States as the `local_runner_env` store recorded them, read while no server is running."""
    with contextlib.closing(sqlite3.connect(tmp_path / "tasks.db")) as db:
        rows = dict(db.execute("SELECT task_id, state FROM tasks").fetchall())
    return {task_id: str(rows.get(task_id, "missing")) for task_id in ids}


def start_process_group(
    command: Sequence[str], env: Mapping[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """Start `command` in the project root with `env` over this process's environment, in its
    own process group (so the processes it forks die with it), its output written to `log_path`."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env={**os.environ, **NO_PERIODIC_CLOCK, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@dataclass
class LoggedProcess:
    """A process a test started in its own process group, its output written to `log_path`."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON log lines so far; anything else the process printed is skipped."""
        lines = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    lines.append(entry)
        return lines

    def kill(self) -> None:
        """SIGKILL the process and any it forked (workers, pools): a crash, not a shutdown."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@dataclass
class LiveServer(LoggedProcess):
    """A uvicorn process serving on 127.0.0.1:`port`."""

    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def task_status(self, task_id: str) -> dict[str, Any]:
        """GET /tasks/{task_id}: the task's status as the service reports it."""
        status: dict[str, Any] = httpx.get(f"{self.base_url}/tasks/{task_id}", timeout=5).json()
        return status

    def wait_until_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._answers_health():
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not become healthy:\n{self.log_text()}")
            time.sleep(0.05)

    def _answers_health(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"server exited early:\n{self.log_text()}")
        try:
            return httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False


@contextlib.contextmanager
def live_server(
    *uvicorn_args: str,
    env: Mapping[str, str],
    log_path: Path,
    app: str = SERVER_APP,
    launcher: Sequence[str] = UVICORN,
) -> Iterator[LiveServer]:
    """`uvicorn <app> <uvicorn_args>` with `env` over this process's environment, until healthy."""
    port = free_port()
    command = [sys.executable, *launcher, app, "--host", "127.0.0.1", "--port", str(port)]
    process = start_process_group([*command, *uvicorn_args], env, log_path)
    server = LiveServer(process, log_path, port)
    try:
        server.wait_until_healthy(STARTUP_TIME_BOX_S)
        yield server
    finally:
        server.kill()
