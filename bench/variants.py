"""Making the systems under test: rendered variants of the template and the stock baseline.

Variants are rendered only through tests/rendering.py::render_variant, from the working tree, and
installed with `uv sync`; the stock baseline gets a venv of its own pinned to the library versions
the rendered project locked.
"""

import concurrent.futures
import json
import shutil
import subprocess
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from processes import error_line, say
from repository import BENCH_DIR, REPO_ROOT
from run_results import Results
from systems import SetupError, System, run, uv

from tests.rendering import CARGO_TARGET, LOCAL_PYTHON, render_variant

BASELINES = BENCH_DIR / "baselines"
RUNNERS = {"python": "Python runner", "rust": "Rust runner"}
# The libraries whose versions the report states (the stock baseline is pinned to the same).
REPORTED_VERSIONS = ("fastapi", "starlette", "uvicorn", "pydantic", "uvloop", "httptools", "python-multipart")

# Bench-only endpoints for a rendered project, written into it at bench time (the template is
# never changed for the benchmark): the same endpoint with and without one no-op task.
SERVICE_MODULE = '''"""Bench-only endpoints, written by bench/run.py; not part of the template."""

import time
from typing import Any

from fastapi import APIRouter

from {package}.app import create_app
from {package}.tasks import TaskAccepted, Tasks, idempotent, report_progress, task


@task(name="bench.noop", max_attempts=1)
def noop() -> None:
    return None


@task(name="bench.pace", max_attempts=1)
def pace(seconds: float, rate: int, report: bool) -> dict[str, float]:
    """Run `seconds` at `rate` steps a second, calling report_progress at each step if `report`."""
    total = int(seconds * rate)
    started = time.perf_counter()
    for done in range(1, total + 1):
        if report:
            report_progress(done, total)
        if done % 100 == 0:
            ahead = started + done / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
    return {{"calls": total if report else 0, "calls_per_second": total / (time.perf_counter() - started)}}


router = APIRouter()


@router.post("/bench/noop-task", status_code=202)
def noop_task(tasks: Tasks) -> TaskAccepted:
    return tasks.add_task(noop)


@router.post("/bench/idempotent-noop-task", status_code=202)
@idempotent
def idempotent_noop_task(tasks: Tasks) -> TaskAccepted:
    return tasks.add_task(noop)


@router.post("/bench/progress-task", status_code=202)
def progress_task(tasks: Tasks, seconds: float, rate: int, report: bool) -> TaskAccepted:
    return tasks.add_task(pace, seconds, rate, report)


@router.post("/bench/no-task", status_code=202)
def no_task(tasks: Tasks) -> dict[str, Any]:
    return {{"status": "accepted"}}


app = create_app()
app.include_router(router)
'''


def prepare_systems(
    systems: dict[str, System], results: Results, *, work: Path, logs: Path, sizes: Any, smoke: bool
) -> None:
    """Render and install both runners' variants and the stock baseline, into `systems`.

    A system that cannot be made is left out, and why is recorded in `results.unavailable`.
    """
    renders = work / "render"
    queue_size = max(1000, sizes.tasks + 1000)
    projects: dict[str, tuple[Path, Path]] = {}

    def prepare_variant(key: str) -> None:
        project = renders / key
        label = f"template, {RUNNERS[key]}"
        try:
            took = render(variant_answers(key), project)
            if smoke:  # a full run times `copier copy` on its own, without a neighbour
                results.data["copy"].setdefault(f"{key} runner, container, examples", []).append(took)
            say(f"rendered the {key} variant in {took:.1f}s; installing it (uv sync) ...")
            python = install(project)
            say(f"installed the {key} variant")
            systems[key] = template_system(key, label, project, python, work / "state" / key, logs, queue_size)
            projects[key] = (project, python)
        except SetupError as error:
            results.unavailable[key] = error.cell
            say(f"{label}: {error.cell}")

    # Two renders at once: copier and uv are mostly waiting on files and subprocesses.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(prepare_variant, ("python", "rust")))
    reference = projects.get("python") or projects.get("rust")
    if reference is None:
        results.unavailable["stock"] = "failed: no rendered project to take the library versions from"
        return
    try:
        systems["stock"] = stock_system(work / "state" / "stock", logs, reference[0], reference[1], work / "stock-venv")
    except SetupError as error:
        results.unavailable["stock"] = error.cell
    results.versions = {
        name: version for name, version in lock_versions(reference[0]).items() if name in REPORTED_VERSIONS
    }
    if "stock" in systems:
        stock_versions = installed_versions(systems["stock"].python, list(results.versions))
        mismatched = {n: v for n, v in stock_versions.items() if results.versions.get(n) != v}
        if mismatched:
            say(f"warning: stock baseline versions differ from the template's: {mismatched}")


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


def render(answers: Mapping[str, Any], destination: Path, template: Path = REPO_ROOT) -> float:
    """Render a variant from the working tree (or from `template`, another checkout); the seconds
    `copier copy` took."""
    shutil.rmtree(destination, ignore_errors=True)
    destination.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = render_variant(answers, destination, template=template, check=False)
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


# -- the stock baseline ---------------------------------------------------------------------


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
