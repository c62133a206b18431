"""Benchmarks of the rendered service against stock FastAPI, one command.

    python3 bench/run.py            # full run (about 20-30 minutes here), for people
    python3 bench/run.py --smoke    # tiny sizes, well under 2 minutes, for CI

Renders the variants it needs from the working tree (tests/rendering.py::render_variant) into
bench/.work/, installs them with `uv sync` (the Rust variant builds its crate with maturin),
starts real uvicorn processes for them and for the stock baselines (bench/baselines/), measures
the eight metrics (bench/metrics.py lists them), and writes bench/results/BENCHMARKS.md, latency.png
and results.json. Every measurement is repeated (`--runs`, 5 by default) with the systems
interleaved, and the report gives the median of the per-run statistics. Nothing asserts a timing.

What it needs beyond the repository's requirements-test.txt (httpx, matplotlib) it installs
from bench/requirements.txt into <work>/venv with uv and runs itself there.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
NEEDED = ("httpx", "matplotlib", "copier", "yaml", "jinja2")


@dataclass(frozen=True)
class Sizes:
    runs: int
    warmup: int
    requests: int  # scheduling_latency (also 7 and 8): sequential requests per endpoint per run
    documents: int  # api_latency_under_cpu_load: documents analysed per run
    document_bytes: int
    upload_concurrency: int
    probe_interval: float
    idle_probe_seconds: float
    tasks: int  # task_throughput: tasks per run
    task_concurrency: int
    copy_runs: int  # template_time: `copier copy` runs per variant
    celery_tasks: int
    celery_rounds: int  # celery_throughput.py: rounds of its 1-vs-2-worker drains
    celery_quiet_wait: float  # celery_throughput.py: longest wait for a quiet machine before a drain
    progress_seconds: float  # task_control_costs: how long the progress-reporting task runs
    timeout: float  # per measurement


FULL = Sizes(
    runs=5, warmup=200, requests=2000, documents=200, document_bytes=512 * 1024, upload_concurrency=4,
    probe_interval=0.005, idle_probe_seconds=2.0, tasks=10_000, task_concurrency=8, copy_runs=5,
    celery_tasks=10_000, celery_rounds=3, celery_quiet_wait=45.0, progress_seconds=4.0,
    timeout=600.0,
)  # fmt: skip
SMOKE = Sizes(
    runs=2, warmup=5, requests=30, documents=6, document_bytes=16 * 1024, upload_concurrency=2,
    probe_interval=0.01, idle_probe_seconds=0.2, tasks=40, task_concurrency=4, copy_runs=1,
    celery_tasks=20, celery_rounds=1, celery_quiet_wait=0.0, progress_seconds=0.5,
    timeout=60.0,
)  # fmt: skip


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the machinery, not the numbers")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results", help="where the report goes")
    parser.add_argument("--work", type=Path, default=BENCH_DIR / ".work", help="renders, venvs, logs")
    parser.add_argument("--runs", type=int, help="repetitions of each measurement (default 5; smoke 2)")
    parser.add_argument(
        "--only",
        default="1,2,3,4,5,6,7,8",
        help="comma-separated metrics to measure, by number (1-8) or name (scheduling_latency, "
        "api_latency_under_cpu_load, task_throughput, lambda_latency, template_time, image_sizes, "
        "task_control_costs, observability_cost); the others are reported as not measured",
    )
    parser.add_argument(
        "--reuse",
        type=Path,
        help="take the metrics --only leaves out from this earlier results.json (same --work, for the plot)",
    )
    return parser.parse_args(argv)


# -- its own environment ----------------------------------------------------------------------


def ensure_environment(options: argparse.Namespace) -> None:
    """Re-run this script in <work>/venv when httpx, matplotlib or copier are missing here."""
    missing = [name for name in NEEDED if not _importable(name)]
    if not missing:
        return
    if os.environ.get("BENCH_BOOTSTRAPPED"):
        sys.exit(f"still missing after installing bench/requirements.txt: {missing}")
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    if not Path(uv).exists() and shutil.which(uv) is None:
        sys.exit(
            "bench/run.py needs uv (pip install -r requirements-test.txt) or: pip install -r bench/requirements.txt"
        )
    venv = options.work.resolve() / "venv"
    python = venv / "bin" / "python"
    print(f"installing bench/requirements.txt into {venv} ({', '.join(missing)} missing here)", flush=True)
    if not python.exists():
        # The host's packages stay visible: the deployment part uses the test tools installed there
        # (pytest, moto, boto3; see .ci/install-deploy.sh), and only what is missing is installed.
        subprocess.run(
            [uv, "venv", "--quiet", "--system-site-packages", "--python", sys.executable, str(venv)], check=True
        )
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--compile-bytecode",
            "--python",
            str(python),
            "-r",
            str(BENCH_DIR / "requirements.txt"),
        ],
        check=True,
    )
    env = {**os.environ, "BENCH_BOOTSTRAPPED": "1", "BENCH_UV": uv, "BENCH_HOST_PYTHON": sys.executable}
    env.pop("VIRTUAL_ENV", None)
    os.execve(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]], env)


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# -- the run ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    options.work = options.work.resolve()
    options.output = options.output.resolve()
    ensure_environment(options)
    from benchmark import BenchmarkRun
    from metrics import parse_only

    sizes = SMOKE if options.smoke else FULL
    if options.runs:
        sizes = Sizes(**{**asdict(sizes), "runs": options.runs})
    try:
        only = parse_only(options.only)
    except ValueError as error:
        sys.exit(str(error))
    started = time.perf_counter()
    reuse = options.reuse.resolve() if options.reuse else None
    bench = BenchmarkRun(
        sizes=sizes, smoke=options.smoke, work=options.work, output=options.output, only=only, reuse=reuse
    )
    bench.run()
    print(f"wrote {bench.report_path} and {bench.plot_path} in {time.perf_counter() - started:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH_DIR))
    sys.exit(main())
