"""Metrics 4 and 6 from bench/deploy_bench.py (issue 4's script), which this module calls.

The full run runs `deploy_bench.py` as it is and reads the bench/results/deploy.json it writes.
A smoke run cannot afford image builds: it measures the Lambda numbers with deploy_bench's own
`lambda_numbers` (one run; no Docker needed) and reads the sizes of images already built on this
machine (by the Docker tests or an earlier deploy_bench run), if any.

Run as a script (`python bench/bench_deploy.py lambda --json F --work D`) it is the smoke run's
Lambda part, under the interpreter deploy_bench.py needs (boto3 and moto: .ci/install-deploy.sh).
"""

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
SCRIPT = BENCH_DIR / "deploy_bench.py"
DEPLOY_JSON = BENCH_DIR / "results" / "deploy.json"
for folder in (REPO_ROOT, BENCH_DIR):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def host_python() -> str:
    """The interpreter run.py was started with (deploy_bench needs its boto3 and moto)."""
    return os.environ.get("BENCH_HOST_PYTHON") or sys.executable


def docker_problem() -> str | None:
    from tests.images import docker_engine_problem

    return docker_engine_problem()


def wanted_images() -> list[dict[str, str]]:
    """deploy_bench's variants and the tags it builds them under."""
    from tests.images import DEPLOYED_VARIANTS, image_tag

    return [
        {
            "variant": variant.id,
            "runner": variant.answers["task_runner"],
            "image": kind,
            "tag": image_tag(variant, kind),
        }
        for variant in DEPLOYED_VARIANTS
        for kind in ("container", "lambda")
    ]


def image_size_mb(tag: str) -> float | None:
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Size}}", tag], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return None
    return int(result.stdout.strip()) / 1_000_000


def base_images(project: Path) -> dict[str, str]:
    """The runtime stage's base image of each Dockerfile of a rendered project (its default)."""
    from tests.baseimages import image_defaults

    bases: dict[str, str] = {}
    for dockerfile, kind in (("Dockerfile", "container"), ("Dockerfile.lambda", "lambda")):
        path = project / dockerfile
        if not path.exists():
            continue
        defaults = image_defaults(path)
        if "PYTHON_IMAGE" in defaults:  # the runtime stage's base (the others build the wheel)
            bases[kind] = defaults["PYTHON_IMAGE"]
    return bases


def add_base_sizes(report: dict[str, Any], project: Path | None) -> None:
    """Each image's base (as its Dockerfile names it) and the base's size, for the app's share."""
    if project is None:
        return
    bases = base_images(project)
    for entry in report.get("images", []):
        tag = bases.get(entry["image"])
        if tag:
            entry["base_image"] = tag
            entry["base_size_mb"] = image_size_mb(tag)


def full_run(logs: Path, runs: int, timeout: float) -> dict[str, Any]:
    """Run deploy_bench.py as it is; its JSON, or {"missing": why}."""
    if not SCRIPT.exists():
        return {"missing": "bench/deploy_bench.py is not in the repository yet"}
    problem = docker_problem()
    if problem:
        return {"missing": problem, "absent": True}
    started = time.time()
    log = logs / "deploy_bench.log"
    with log.open("w") as out:
        try:
            result = subprocess.run(
                [host_python(), str(SCRIPT), "--runs", str(runs)],
                cwd=REPO_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"missing": f"failed: bench/deploy_bench.py did not finish within {timeout:.0f}s"}
    if result.returncode != 0 or not DEPLOY_JSON.exists() or DEPLOY_JSON.stat().st_mtime < started:
        return {"missing": f"failed: bench/deploy_bench.py exited {result.returncode}: {last_line(log)}"}
    report: dict[str, Any] = json.loads(DEPLOY_JSON.read_text())
    report["source"] = f"bench/deploy_bench.py --runs {runs}"
    import deploy_bench

    from tests.images import DEPLOYED_VARIANTS

    add_base_sizes(report, deploy_bench.WORK / DEPLOYED_VARIANTS[0].id)
    return report


def start_smoke_lambda(work: Path, logs: Path) -> subprocess.Popen[str] | dict[str, Any]:
    """Start the smoke run's Lambda part in the background (the interpreter deploy_bench needs)."""
    if not SCRIPT.exists():
        return {"missing": "bench/deploy_bench.py is not in the repository yet"}
    check = subprocess.run(
        [host_python(), "-c", "import boto3, moto"], capture_output=True, text=True, check=False, timeout=60
    )
    if check.returncode != 0:
        return {"missing": "boto3 and moto are not installed (bash .ci/install-deploy.sh)", "absent": True}
    output = work / "lambda.json"
    output.unlink(missing_ok=True)
    log = (logs / "deploy_lambda.log").open("w")
    return subprocess.Popen(
        [host_python(), str(Path(__file__).resolve()), "lambda", "--json", str(output), "--work", str(work)],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def finish_smoke(
    process: subprocess.Popen[str] | dict[str, Any], work: Path, logs: Path, project: Path | None, timeout: float
) -> dict[str, Any]:
    """The smoke run's deploy numbers: the Lambda part it ran, the sizes of images already built."""
    report: dict[str, Any] = {
        "images": [],
        "source": "smoke: Lambda measured once; image sizes of images already built",
    }
    if isinstance(process, dict):
        report["lambda_missing"] = process["missing"]
    else:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        output = work / "lambda.json"
        if process.returncode == 0 and output.exists():
            report["lambda"] = json.loads(output.read_text())
        else:
            report["lambda_missing"] = f"failed: exited {process.returncode}: {last_line(logs / 'deploy_lambda.log')}"
    problem = docker_problem()
    if problem:
        report["images_missing"] = problem
        return report
    for entry in wanted_images():
        size = image_size_mb(entry["tag"])
        if size is None:
            entry["missing"] = "image not built on this machine yet (a smoke run builds none; deploy_bench.py does)"
        else:
            entry["size_mb"] = round(size, 1)
        report["images"].append(entry)
    add_base_sizes(report, project)
    return report


def last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        for line in reversed(lines):
            if "error" in line.lower():
                return line.strip()[:200]
        return lines[-1].strip()[:200] if lines else "no output"
    return "no log"


def smoke_lambda(output: Path, work: Path) -> None:
    """deploy_bench's Lambda measurement, once, on a fresh render of its first variant."""
    import deploy_bench

    from tests.images import DEPLOYED_VARIANTS, prepare_project

    variant = DEPLOYED_VARIANTS[0]
    project = work / variant.id
    shutil.rmtree(project, ignore_errors=True)
    prepare_project(variant, project)
    numbers = deploy_bench.lambda_numbers(project, 1)
    output.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the smoke run's Lambda part (see the module docstring)")
    parser.add_argument("part", choices=["lambda"])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    options = parser.parse_args()
    smoke_lambda(options.json, options.work)
