"""Deployment numbers of the rendered service, one command:

    python3 bench/deploy_bench.py [--runs 3]

- image sizes: the container image (Dockerfile) and the Lambda image (Dockerfile.lambda), for
  both task runners, built with tests/images.py exactly as the Docker tests build them;
- time from `docker run` to the first 200 from /health (median of --runs containers);
- Lambda: cold start (import of the handler module + the first event, in a fresh process) and the
  response time of an endpoint whose background task sleeps 1 s, stock Mangum (FastAPI's
  BackgroundTasks, `Mangum(app)`) against the rendered handler (lambda_handler.py, TASK_BACKEND=sqs,
  the task sent to SQS and its record written to DynamoDB, both moto's server on loopback).

Writes bench/results/deploy.md and deploy.json. Needs a Docker Engine and what
.ci/install-deploy.sh installs. Nothing asserts a timing.
"""

import argparse
import json
import statistics
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.images import DEPLOYED_VARIANTS, Container, build_image, http, image_tag, prepare_project, wait_until  # noqa: E402
from tests.local_aws import local_stack, moto_server  # noqa: E402
from tests.rendering import run, tool  # noqa: E402

WORK = BENCH_DIR / ".work" / "deploy"
RESULTS = BENCH_DIR / "results"
PACKAGE = "example_service"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}

# The stock way: FastAPI's BackgroundTasks behind Mangum, whose default lifespan="auto" runs the
# app's startup and shutdown around every invocation. The task runs before the handler returns.
STOCK_MODULE = """
import time
from fastapi import BackgroundTasks, FastAPI
from mangum import Mangum

app = FastAPI()

@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}

@app.post("/work", status_code=202)
def work(background: BackgroundTasks) -> dict[str, bool]:
    background.add_task(time.sleep, 1.0)
    return {"accepted": True}

handler = Mangum(app)
"""

# One fresh process per measurement: the handler module's import and first event are the cold
# start; then the median of five invocations of the endpoint with a 1 s task.
PROBE = """
import json, sys, time
started = time.perf_counter()
kind = sys.argv[1]
if kind == "stock":
    import stock_mangum as module
    handler = module.handler
    work_path = "/work"
else:
    from {package} import lambda_handler as module
    handler = module.handler
imported = time.perf_counter()
first = handler(EVENT("GET", "/health"), None)
answered = time.perf_counter()
assert first["statusCode"] == 200, first
if kind == "rendered":
    # The 1 s task needs an endpoint: the same handler class around the app plus one route.
    from fastapi import APIRouter
    from {package}.app import create_app
    from {package}.tasks import TaskAccepted, Tasks, task

    @task(name="bench.sleep_one")
    def sleep_one() -> None:
        time.sleep(1.0)

    router = APIRouter()

    @router.post("/work", status_code=202)
    def work(tasks: Tasks) -> TaskAccepted:
        return tasks.add_task(sleep_one)

    app = create_app()
    app.include_router(router)
    handler = module.LambdaService(app)
timings = []
for _ in range(5):
    t = time.perf_counter()
    response = handler(EVENT("POST", "/work"), None)
    timings.append(time.perf_counter() - t)
    assert response["statusCode"] == 202, response
timings.sort()
print(json.dumps({{"import_s": imported - started, "first_event_s": answered - imported,
                  "task_response_s": timings[2]}}))
"""

EVENT_FUNCTION = """
import uuid
def EVENT(method, path):
    return {"version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
            "headers": {"host": "api.example.com"},
            "requestContext": {"http": {"method": method, "path": path, "sourceIp": "192.0.2.1"},
                               "requestId": uuid.uuid4().hex, "stage": "$default"},
            "body": None, "isBase64Encoded": False}
"""


def median(values: list[float]) -> float:
    return statistics.median(values)


def startup_seconds(image: str, runs: int) -> float:
    """Median time from `docker run` to the first 200 from /health."""
    times = []
    for _ in range(runs):
        started = time.monotonic()
        container = Container.start(image, options=("--publish", "127.0.0.1::8000"))
        try:
            url = f"http://127.0.0.1:{container.published_port(8000)}/health"
            wait_until(lambda url=url: http("GET", url, timeout=1).status == 200, 60, 0.01, "/health 200")
            times.append(time.monotonic() - started)
        finally:
            container.remove()
    return median(times)


def lambda_numbers(project: Path, runs: int) -> dict[str, dict[str, float]]:
    synced = run([tool("uv"), "sync", "--quiet"], cwd=project, env={"UV_PYTHON_DOWNLOADS": "never"})
    assert synced.returncode == 0, synced.stderr
    (project / "stock_mangum.py").write_text(STOCK_MODULE)
    probe = project / "lambda_probe.py"
    probe.write_text(EVENT_FUNCTION + textwrap.dedent(PROBE).format(package=PACKAGE))
    results: dict[str, dict[str, float]] = {}
    with moto_server() as endpoint:
        # The queue and table as the rendered template.yaml declares them, as in the Lambda tests.
        aws = local_stack(endpoint, project, "bench")
        rendered_env = {
            **AWS_ENV,
            "AWS_ENDPOINT_URL": endpoint,
            "TASK_BACKEND": "sqs",
            "TASK_QUEUE_URL": aws.queue_url,
            "TASK_STORE_URL": f"dynamodb://{aws.table}",
            "LOG_LEVEL": "WARNING",
        }
        for kind, env in (("stock", AWS_ENV), ("rendered", rendered_env)):
            samples = []
            for _ in range(runs):
                measured = run([str(project / ".venv" / "bin" / "python"), str(probe), kind], cwd=project, env=env)
                assert measured.returncode == 0, measured.stdout + measured.stderr[-3000:]
                samples.append(json.loads(measured.stdout.strip().splitlines()[-1]))
            results[kind] = {key: median([sample[key] for sample in samples]) for key in samples[0]}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    report: dict[str, Any] = {"images": [], "lambda": {}}
    for variant in DEPLOYED_VARIANTS:
        project = WORK / variant.id
        if not project.exists():
            prepare_project(variant, project)
        for dockerfile, kind in (("Dockerfile", "container"), ("Dockerfile.lambda", "lambda")):
            built = build_image(project, dockerfile, image_tag(variant, kind))
            entry: dict[str, Any] = {"variant": variant.id, "image": kind, "size_mb": round(built.size_mb, 1)}
            if kind == "container":
                entry["run_to_health_s"] = round(startup_seconds(built.tag, args.runs), 3)
            report["images"].append(entry)
            print(entry, flush=True)
    report["lambda"] = lambda_numbers(WORK / DEPLOYED_VARIANTS[0].id, args.runs)
    print(report["lambda"], flush=True)

    lines = [
        "# Deployment numbers",
        "",
        f"`python3 bench/deploy_bench.py --runs {args.runs}` (medians; 2 cores; classic Docker builder).",
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
        "| Lambda handler (python runner) | import (ms) | first event (ms) | response, 1 s background task (ms) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for kind, label in (("stock", "stock Mangum + BackgroundTasks"), ("rendered", "rendered (SQS offload)")):
        numbers = report["lambda"][kind]
        lines.append(
            f"| {label} | {numbers['import_s'] * 1000:.0f} | {numbers['first_event_s'] * 1000:.0f} "
            f"| {numbers['task_response_s'] * 1000:.0f} |"
        )
    (RESULTS / "deploy.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "deploy.json").write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
