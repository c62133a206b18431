"""Deployment numbers of the rendered service (metrics 4 and 6), one command:

    python3 bench/deployment.py [--runs 3]

- image sizes (image_sizes.py): the container image (Dockerfile) and the Lambda image
  (Dockerfile.lambda), for both task runners, built with tests/images.py exactly as the Docker
  tests build them;
- time from `docker run` to the first 200 from /health (median of --runs containers);
- Lambda (lambda_latency.py): cold start and the response time of an endpoint whose background
  task sleeps 1 s, stock Mangum against the rendered handler.

Writes bench/results/deploy.md and deploy.json. Needs a Docker Engine and what
.ci/install-deploy.sh installs. Nothing asserts a timing.

bench/run.py gets these numbers from here: a full run runs this command as it is and reads the
deploy.json it writes; a smoke run cannot afford image builds, so it measures the Lambda numbers
once (lambda_latency.py; no Docker needed) and reads the sizes of images already built here.
"""

import argparse
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import image_sizes
import lambda_latency
from processes import host_python, last_line
from repository import BENCH_DIR, REPO_ROOT

from tests.images import DEPLOYED_VARIANTS, build_image, docker_engine_problem, image_tag, prepare_project

WORK = BENCH_DIR / ".work" / "deploy"
RESULTS = BENCH_DIR / "results"
DEPLOY_JSON = RESULTS / "deploy.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    report: dict[str, Any] = {"images": [], "lambda": {}}
    for variant in DEPLOYED_VARIANTS:
        project = WORK / variant.id
        # Rendered again every run: a render kept from an earlier run would measure old code.
        prepare_project(variant, project)
        for dockerfile, kind in image_sizes.DOCKERFILES:
            built = build_image(project, dockerfile, image_tag(variant, kind))
            entry: dict[str, Any] = {"variant": variant.id, "image": kind, "size_mb": round(built.size_mb, 1)}
            if kind == "container":
                entry["run_to_health_s"] = round(image_sizes.container_startup_seconds(built.tag, args.runs), 3)
            report["images"].append(entry)
            print(entry, flush=True)
    report["lambda"] = lambda_latency.measure(WORK / DEPLOYED_VARIANTS[0].id, args.runs)
    print(report["lambda"], flush=True)
    lines = markdown(report, args.runs)
    (RESULTS / "deploy.md").write_text("\n".join(lines) + "\n")
    DEPLOY_JSON.write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(lines))


def markdown(report: dict[str, Any], runs: int) -> list[str]:
    """deploy.md: the images table and the Lambda table."""
    lines = [
        "# Deployment numbers",
        "",
        f"`python3 bench/deployment.py --runs {runs}` (medians; 2 cores; classic Docker builder).",
        "",
        "| variant | image | size (MB) | docker run -> /health 200 (s) |",
        "| --- | --- | ---: | ---: |",
    ]
    for entry in report["images"]:
        health = entry.get("run_to_health_s")
        lines.append(
            f"| {entry['variant']} | {entry['image']} | {entry['size_mb']} | {'' if health is None else health} |"
        )
    lines += [
        "",
        "| Lambda handler (python runner) | import (ms) | first event: POST scheduling a task (ms) "
        "| response, 1 s background task (ms) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for kind, label in (("stock", "stock Mangum + BackgroundTasks"), ("rendered", "rendered (SQS offload)")):
        numbers = report["lambda"][kind]
        lines.append(
            f"| {label} | {numbers['import_s'] * 1000:.0f} | {numbers['first_event_s'] * 1000:.0f} "
            f"| {numbers['task_response_s'] * 1000:.0f} |"
        )
    return lines + import_profile_table(report["lambda"].get("import_profile"))


def import_profile_table(profiles: dict[str, list[list[Any]]] | None) -> list[str]:
    """The import profiles of both handler modules side by side (lambda_latency.import_profile)."""
    if not profiles:
        return []
    stock, rendered = profiles["stock"], profiles["rendered"]
    lines = [
        "",
        "Import of the handler module, `python -X importtime`: self time summed per top-level package (ms), "
        "the top ten of each (the rendered module's own includes making the app and starting it: the store, "
        "the SQS client).",
        "",
        "| # | stock Mangum | ms | rendered handler | ms |",
        "| ---: | --- | ---: | --- | ---: |",
    ]
    for number in range(max(len(stock), len(rendered))):
        left = stock[number] if number < len(stock) else ("", "")
        right = rendered[number] if number < len(rendered) else ("", "")
        lines.append(f"| {number + 1} | {left[0]} | {left[1]} | {right[0]} | {right[1]} |")
    return lines


# -- for bench/run.py -------------------------------------------------------------------------


def full_run(logs: Path, runs: int, timeout: float) -> dict[str, Any]:
    """Run this command as it is; its JSON, or {"missing": why}."""
    problem = docker_engine_problem()
    if problem:
        return {"missing": problem, "absent": True}
    started = time.time()
    log = logs / "deployment.log"
    with log.open("w") as out:
        try:
            result = subprocess.run(
                [host_python(), str(Path(__file__).resolve()), "--runs", str(runs)],
                cwd=REPO_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"missing": f"failed: bench/deployment.py did not finish within {timeout:.0f}s"}
    if result.returncode != 0 or not DEPLOY_JSON.exists() or DEPLOY_JSON.stat().st_mtime < started:
        return {"missing": f"failed: bench/deployment.py exited {result.returncode}: {last_line(log)}"}
    report: dict[str, Any] = json.loads(DEPLOY_JSON.read_text())
    report["source"] = f"bench/deployment.py --runs {runs}"
    image_sizes.add_base_sizes(report, WORK / DEPLOYED_VARIANTS[0].id)
    return report


def smoke_run(
    lambda_part: subprocess.Popen[str] | dict[str, Any], work: Path, logs: Path, project: Path | None, timeout: float
) -> dict[str, Any]:
    """The smoke run's numbers: the Lambda part it ran (lambda_latency.start_smoke_run), the sizes
    of images already built."""
    report: dict[str, Any] = {
        "images": [],
        "source": "smoke: Lambda measured once; image sizes of images already built",
    }
    report.update(lambda_latency.finish_smoke_run(lambda_part, work, logs, timeout))
    image_sizes.add_built_sizes(report, project)
    return report


if __name__ == "__main__":
    main()
