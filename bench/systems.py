"""The systems under test: each a real `uvicorn` process, and how it is started, probed and stopped.

Each one runs on a free loopback port, started the same way (one worker, uvicorn's defaults:
uvloop + httptools, its default log level), from its own empty working directory, with its
output sent to a log file. variants.py makes them (rendered variants and the stock baseline).
"""

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import repository  # noqa: F401  (puts tests/ on sys.path)
from processes import error_line, tail
from server_environment import clean_environment

from tests.rendering import free_port
from tests.rendering import run as run_command


class SetupError(RuntimeError):
    """A system could not be prepared; the message says why (it ends up in the report).

    `absent` means a tool this machine does not have (the row is "not measured"); otherwise
    something that should work broke (the row says "failed").
    """

    def __init__(self, message: str, *, absent: bool = False) -> None:
        super().__init__(message)
        self.absent = absent

    @property
    def cell(self) -> str:
        return f"{'not measured' if self.absent else 'failed'}: {self}"


@dataclass
class Endpoints:
    noop: str
    nothing: str


@dataclass
class System:
    key: str
    label: str
    kind: str  # "stock" or "template"
    python: Path
    app_dir: Path
    module: str
    workdir: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    base_url: str = ""

    @property
    def endpoints(self) -> Endpoints:
        if self.kind == "stock":
            return Endpoints(noop="/noop-task", nothing="/no-task")
        return Endpoints(noop="/bench/noop-task", nothing="/bench/no-task")

    def start(self, timeout: float = 60.0) -> None:
        port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            str(self.python), "-m", "uvicorn", f"{self.module}:app",
            "--app-dir", str(self.app_dir), "--host", "127.0.0.1", "--port", str(port),
        ]  # fmt: skip
        environment = {**clean_environment(), **self.env}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.workdir,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SetupError(
                    f"{self.label} exited at start-up: {error_line(tail(self.log_path, 20))} (log: {self.log_path})"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/health", timeout=1, trust_env=False).status_code == 200:
                    return
            time.sleep(0.05)
        self.stop()
        raise SetupError(f"{self.label} did not answer /health within {timeout:.0f}s; see {self.log_path}")

    def variant(self, name: str, **env: str) -> "System":
        """A second server of the same code (interpreter, app, module) with `env` on top of this
        one's environment; its own working directory and log (suffixed `-name`); not started."""
        return dataclasses.replace(
            self,
            label=f"{self.label}, {name}",
            workdir=self.workdir.with_name(f"{self.workdir.name}-{name}"),
            log_path=self.log_path.with_name(f"{self.log_path.stem}-{name}{self.log_path.suffix}"),
            env={**self.env, **env},
            process=None,
            base_url="",
        )

    @contextlib.contextmanager
    def running(self) -> Iterator["System"]:
        """Started from an empty working directory for the `with` block, stopped after it
        (whatever happens inside). For the variants metrics start next to the systems as started."""
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def healthy(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            return False
        try:
            return httpx.get(f"{self.base_url}/health", timeout=5, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    # -- completion: how many tasks reached a final state so far ---------------------------

    def finished_counter(self, kind: str) -> Callable[[], int]:
        """A function that counts the tasks of `kind` ("activity", "document", "any") finished so far.

        The template says it itself (`/ready` counts succeeded and failed tasks); stock FastAPI
        has no such thing, so for it we count the lines its tasks append to their files, as the
        articles do to check on them.
        """
        if self.kind == "stock":
            name = {"activity": "activities.log", "document": "document_analysis.json"}[kind]
            path = self.workdir / name

            def count_lines() -> int:
                try:
                    with path.open("rb") as file:
                        return sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(1 << 20), b""))
                except FileNotFoundError:
                    return 0

            return count_lines

        def count_final() -> int:
            counters = self.counters()
            return counters["succeeded"] + counters["failed"]

        return count_final

    def failed_count(self, since: int | None = 0) -> int | None:
        """Tasks the template recorded as failed (minus `since`); None for stock, which cannot tell."""
        if self.kind == "stock" or since is None:
            return None
        return self.counters()["failed"] - since

    def counters(self) -> dict[str, int]:
        response = httpx.get(f"{self.base_url}/ready", timeout=10, trust_env=False)
        return dict(response.json()["tasks"])

    def clear_uploads(self) -> None:
        folder = self.workdir / ("uploads" if self.kind == "stock" else "var/uploads")
        if folder.exists():
            for path in folder.iterdir():
                path.unlink(missing_ok=True)


def run(command: list[str], cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 1800) -> str:
    """Run a setup command; SetupError with the end of its output if it fails."""
    try:
        result = run_command(command, cwd, env, timeout)
    except subprocess.TimeoutExpired as error:
        raise SetupError(f"{' '.join(command[:3])} timed out after {timeout:.0f}s") from error
    if result.returncode != 0:
        raise SetupError(f"`{' '.join(command[:3])}` failed: {error_line(result.stderr or result.stdout)}")
    return result.stdout


def uv() -> str:
    found = os.environ.get("BENCH_UV") or shutil.which("uv")
    beside = Path(sys.executable).parent / "uv"
    if found is None and beside.exists():
        found = str(beside)
    if found is None:
        raise SetupError("uv is not installed (pip install -r requirements-test.txt)", absent=True)
    return found
