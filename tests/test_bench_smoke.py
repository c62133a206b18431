"""The benchmark command still works: `bench/run.py --smoke` writes its report and plot.

Tiny sizes, so this checks the machinery (rendering, installing, real uvicorn processes, the load
client, the Celery and deployment scripts, the report), never a timing.
"""

import contextlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .rendering import REPO_ROOT

pytestmark = [pytest.mark.xdist_group("bench-smoke"), pytest.mark.heavy(100)]

# Every metric row the report must carry (a label prefix each), whatever the machine has.
ROWS = [
    "1. POST endpoint that schedules one no-op task: latency p50 / p99 (Python runner)",
    "1. the same endpoint scheduling nothing: p50 / p99 (Python runner)",
    "1. **cost of scheduling one task** (difference): p50 / p99 (Python runner)",
    "1. POST endpoint that schedules one no-op task: latency p50 / p99 (Rust runner)",
    "1. the same endpoint scheduling nothing: p50 / p99 (Rust runner)",
    "1. **cost of scheduling one task** (difference): p50 / p99 (Rust runner)",
    "2. **GET /health p50 / p99 while",
    "2. GET /health p50 / p99, idle",
    "2. time from first upload until all",
    "3. **",
    "3. Celery, one worker",
    "3. PostgreSQL store, one replica",
    "3. PostgreSQL store, two replicas",
    "4. Lambda cold start",
    "4. Lambda response time with a 1 s background task",
    "5. `copier copy`",
    "5. the whole template test run",
    "7. **cost of an Idempotency-Key at p50**",
    "7. GET /health p50 / p99 while a task reports progress",
    "8. scheduling, metrics on and tracing off (the default): p50 / p99 (Python runner)",
    "8. scheduling with METRICS_ENABLED=false: p50 / p99 (Python runner)",
    "8. **metrics on ÷ off at p50**",
    "6. container image size = base image + the app's share (Python runner)",
    "6. container image size = base image + the app's share (Rust runner)",
    "6. Lambda image size = base image + the app's share (Python runner)",
    "6. Lambda image size = base image + the app's share (Rust runner)",
    "6. container: `docker run` until /health answers 200",
]


def absent_parts() -> dict[str, bool]:
    """Which parts of the benchmark this machine cannot run (so their rows may say "not measured")."""
    bench = REPO_ROOT / "bench"
    has_aws_tools = subprocess.run([sys.executable, "-c", "import boto3, moto"], capture_output=True).returncode == 0
    docker_engine = shutil.which("docker") is not None and (
        subprocess.run(["docker", "version"], capture_output=True).returncode == 0
    )
    sys.path.insert(0, str(bench))
    import postgres_throughput

    parts = {
        "rust": shutil.which("cargo") is None,
        "celery": shutil.which("redis-server") is None,
        # initdb and pg_ctl (Debian's postgresql package; .ci/install-postgres.sh), and when run
        # as root the `postgres` user to run the server as.
        "postgres": postgres_throughput.missing_postgres() is not None,
        "lambda": not has_aws_tools,
        "docker": not docker_engine,
    }
    # A smoke run builds no image: it reads the sizes of those already built (by the Docker tests
    # or an earlier bench/deployment.py run). Which ones exist is looked up before the run.
    if not parts["docker"]:
        import image_sizes

        # If the images cannot even be looked up, the run reports their rows as failed.
        with contextlib.suppress(Exception):
            for image in image_sizes.wanted_images():
                built = image_sizes.image_size_mb(image["tag"]) is not None
                parts[f"image {image['image']} {image['runner']}"] = not built
    return parts


def excused(metric: str, absent: dict[str, bool]) -> bool:
    """Whether this row may read "not measured": only when the tool its part needs is absent."""
    if "(Rust runner" in metric and absent["rust"]:
        return True
    if metric.startswith("3. Celery"):
        return absent["celery"]
    if metric.startswith("3. PostgreSQL store"):
        return absent["postgres"]
    if metric.startswith("4. "):
        return absent["lambda"]
    if metric.startswith("6. container: `docker run`"):
        return True  # the smoke run starts no containers; the full run does (bench/deployment.py)
    if metric.startswith("6. "):
        kind = "container" if metric.startswith("6. container") else "lambda"
        runner = "rust" if "(Rust runner" in metric else "python"
        return absent["docker"] or absent.get(f"image {kind} {runner}", True)
    # The whole test run is read from the last CI log, which a fresh machine does not have.
    return metric.startswith("5. the whole template test run")


def test_smoke_run_writes_the_report_and_the_plot(tmp_path: Path) -> None:
    absent = absent_parts()
    output = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "run.py"), "--smoke",
         "--output", str(output), "--work", str(tmp_path / "work")],
        cwd=REPO_ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"bench/run.py --smoke failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"

    report = (output / "BENCHMARKS.md").read_text()
    plot = output / "latency.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.stat().st_size > 10_000
    assert (output / "results.json").exists()

    rows = [line for line in report.splitlines() if re.match(r"\| \d\. ", line)]
    for label in ROWS:
        assert any(row.startswith(f"| {label}") for row in rows), f"no row {label!r} in:\n{report}"
    for header in ("stock baseline", "this template", "ratio"):
        assert header in report
    assert "Machine:" in report

    for row in rows:
        metric, stock, template, _ = (cell.strip() for cell in row.strip("|").split("|"))
        for cell in (stock, template):
            assert not cell.startswith("failed"), f"a part of the benchmark failed: {row}"
            if cell.startswith("not measured"):
                assert excused(metric, absent), f"only an absent tool excuses a row: {row}\n{absent}"
            else:
                assert "?" not in cell, f"a measured row without a value: {row}"
