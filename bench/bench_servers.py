"""The systems under test: rendered variants of the template and the stock baseline.

Each one is a real `uvicorn` process on a free loopback port, started the same way (one worker,
uvicorn's defaults: uvloop + httptools, its default log level), from its own empty working
directory, with its output sent to a log file. Variants are rendered only through
tests/rendering.py::render_variant, from the working tree.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
BASELINES = BENCH_DIR / "baselines"
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.rendering import CARGO_TARGET, LOCAL_PYTHON, free_port, render_variant  # noqa: E402
from tests.rendering import run as run_command  # noqa: E402

# Bench-only endpoints for a rendered project, written into it at bench time (the template is
# never changed for the benchmark): the same endpoint with and without one no-op task.
SERVICE_MODULE = '''"""Bench-only endpoints, written by bench/run.py; not part of the template."""

from typing import Any

from fastapi import APIRouter

from {package}.app import create_app
from {package}.tasks import TaskAccepted, Tasks, task


@task(name="bench.noop", max_attempts=1)
def noop() -> None:
    return None


router = APIRouter()


@router.post("/bench/noop-task", status_code=202)
def noop_task(tasks: Tasks) -> TaskAccepted:
    return tasks.add_task(noop)


@router.post("/bench/no-task", status_code=202)
def no_task(tasks: Tasks) -> dict[str, Any]:
    return {{"status": "accepted"}}


app = create_app()
app.include_router(router)
'''


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


def clean_environment() -> dict[str, str]:
    """The environment servers start with: ours, minus what would change the apps' settings."""
    drop = ("TASK_", "LOG_LEVEL", "UPLOAD_DIR", "OUTBOX_DIR", "ACTIVITY_LOG_PATH", "MAX_UPLOAD_BYTES")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    environment.pop("VIRTUAL_ENV", None)
    return environment


def error_line(output: str) -> str:
    """The line of a failed command's output that says what went wrong (its last error line)."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if "error" in line.lower() or "failed" in line.lower():
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


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


# -- rendering and installing ---------------------------------------------------------------


def variant_answers(task_runner: str, **changes: Any) -> dict[str, Any]:
    answers: dict[str, Any] = {
        "python_version": LOCAL_PYTHON,
        "deploy_target": "container",
        "task_runner": task_runner,
        "task_queue": "none",
        "include_examples": True,
    }
    return {**answers, **changes}


def render(answers: Mapping[str, Any], destination: Path) -> float:
    """Render a variant from the working tree; the seconds `copier copy` took."""
    shutil.rmtree(destination, ignore_errors=True)
    destination.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = render_variant(answers, destination, check=False)
    took = time.perf_counter() - started
    if result.returncode != 0:
        raise SetupError(f"copier copy failed: {error_line(result.stderr or result.stdout)}")
    return took


def install(project: Path) -> Path:
    """`uv sync` the rendered project (builds the Rust crate with maturin when it has one)."""
    env = {"CARGO_TARGET_DIR": str(CARGO_TARGET), "UV_PYTHON": LOCAL_PYTHON}
    if (project / "rust").is_dir() and shutil.which("cargo") is None:
        raise SetupError("no Rust toolchain (cargo) on this machine", absent=True)
    run([uv(), "sync", "--quiet", "--no-dev", "--compile-bytecode"], cwd=project, env=env, timeout=1800)
    python = project / ".venv" / "bin" / "python"
    if not python.exists():
        raise SetupError(f"uv sync made no interpreter at {python}")
    return python


def package_name(project: Path) -> str:
    for line in (project / ".copier-answers.yml").read_text().splitlines():
        if line.startswith("package_name:"):
            return line.split(":", 1)[1].strip().strip("'\"")
    raise SetupError("the rendered project's answers file has no package_name")


def template_system(
    key: str, label: str, project: Path, python: Path, workdir: Path, logs: Path, queue_size: int
) -> System:
    package = package_name(project)
    (project / "bench_service.py").write_text(SERVICE_MODULE.format(package=package))
    if key == "rust":
        check = subprocess.run(
            [str(python), "-c", f"import {package}._native"], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            raise SetupError(f"the Rust extension does not import: {check.stderr.strip().splitlines()[-1:]}")
    shutil.rmtree(workdir, ignore_errors=True)
    return System(
        key=key,
        label=label,
        kind="template",
        python=python,
        app_dir=project,
        module="bench_service",
        workdir=workdir,
        log_path=logs / f"{key}.log",
        # Room for every task of the throughput run, so it measures throughput, not the 503s
        # the default bound (1000 waiting) answers with when a client outruns the runner.
        env={"TASK_QUEUE_SIZE": str(queue_size)},
    )


def lock_versions(project: Path) -> dict[str, str]:
    lock = tomllib.loads((project / "uv.lock").read_text())
    return {
        package["name"]: package["version"]
        for package in lock.get("package", [])
        if "version" in package and package.get("source", {}).get("registry")
    }


def stock_system(workdir: Path, logs: Path, reference_project: Path, reference_python: Path, venv: Path) -> System:
    """Stock FastAPI in a venv of its own, pinned to the versions the rendered project locked."""
    constraints = venv.parent / "stock-constraints.txt"
    constraints.parent.mkdir(parents=True, exist_ok=True)
    constraints.write_text(
        "".join(f"{name}=={version}\n" for name, version in sorted(lock_versions(reference_project).items()))
    )
    if not (venv / "bin" / "python").exists():
        run([uv(), "venv", "--quiet", "--python", str(reference_python), str(venv)], cwd=BENCH_DIR)
    run(
        [uv(), "pip", "install", "--quiet", "--compile-bytecode", "--python", str(venv / "bin" / "python"),
         "-r", str(BASELINES / "requirements.txt"), "--constraint", str(constraints)],
        cwd=BENCH_DIR,
    )  # fmt: skip
    shutil.rmtree(workdir, ignore_errors=True)
    return System(
        key="stock",
        label="stock FastAPI BackgroundTasks",
        kind="stock",
        python=venv / "bin" / "python",
        app_dir=BASELINES,
        module="stock_app",
        workdir=workdir,
        log_path=logs / "stock.log",
    )


def installed_versions(python: Path, names: list[str]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for n in sys.argv[1:]:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    result = subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True, check=False)
    try:
        return dict(json.loads(result.stdout))
    except json.JSONDecodeError:
        return {}
