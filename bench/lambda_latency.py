"""Metric 4: the Lambda handler's cold start, and its response time with a 1 s background task.

Stock Mangum (FastAPI's BackgroundTasks, `Mangum(app)`) against the rendered handler
(lambda_handler.py, TASK_BACKEND=sqs: the task sent to SQS and its record written to DynamoDB,
both moto's server on loopback). Cold start is the import of the handler module plus the first
event, in a fresh process.

deployment.py measures it in a full run. A smoke run measures it once on its own, in the
background, by running this file as a script under the interpreter that has boto3 and moto
(.ci/install-deploy.sh):

    python3 bench/lambda_latency.py --json F --work D
"""

import argparse
import json
import shutil
import statistics
import subprocess
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

from processes import host_python, last_line
from report_cells import Table, ms, not_measured, ratio
from repository import REPO_ROOT

from tests.rendering import run, tool

NUMBER = 4
NAME = "lambda_latency"
PACKAGE = "example_service"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# The import profile lists this many packages.
IMPORT_PROFILE_TOP = 10

# The stock way: FastAPI's BackgroundTasks behind Mangum, whose default lifespan="auto" runs the
# app's startup and shutdown around every invocation. The task runs before the handler returns.
# /process/ takes a list of JSON objects and schedules a task with it, as the rendered example
# endpoint of that path does (which stores the task and sends it to SQS): the cold start's event.
STOCK_MODULE = """
import time
from typing import Any
from fastapi import BackgroundTasks, FastAPI
from mangum import Mangum

app = FastAPI()

def count_rows(rows: list[dict[str, Any]]) -> int:
    return len(rows)

@app.post("/process/", status_code=202)
def process(rows: list[dict[str, Any]], background: BackgroundTasks) -> dict[str, bool]:
    background.add_task(count_rows, rows)
    return {"accepted": True}

@app.post("/work", status_code=202)
def work(background: BackgroundTasks) -> dict[str, bool]:
    background.add_task(time.sleep, 1.0)
    return {"accepted": True}

handler = Mangum(app)
"""

# One fresh process per measurement: the handler module's import and its first event, a POST that
# schedules a task, are the cold start; then the median of five invocations of the endpoint with
# a 1 s task.
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
first = handler(EVENT("POST", "/process/", [{{"region": "north", "units": 3}}]), None)
answered = time.perf_counter()
assert first["statusCode"] == 202, first
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
import json, uuid
def EVENT(method, path, body=None):
    headers = {"host": "api.example.com"}
    if body is not None:
        headers["content-type"] = "application/json"
    return {"version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
            "headers": headers,
            "requestContext": {"http": {"method": method, "path": path, "sourceIp": "192.0.2.1"},
                               "requestId": uuid.uuid4().hex, "stage": "$default"},
            "body": None if body is None else json.dumps(body), "isBase64Encoded": False}
"""


def measure(project: Path, runs: int) -> dict[str, dict[str, float]]:
    """Stock and rendered numbers (medians of `runs` fresh processes) for a rendered, locked project."""
    from tests.local_aws import local_stack, moto_server

    # Bytecode compiled beforehand, everywhere, as in the Lambda image (UV_COMPILE_BYTECODE=1, the
    # service installed as a wheel) and in any pip-installed deployment of stock: the measured
    # processes may not write it (PYTHONDONTWRITEBYTECODE), and would then compile every module
    # from source on every cold start.
    synced = run(
        [tool("uv"), "sync", "--quiet", "--compile-bytecode"], cwd=project, env={"UV_PYTHON_DOWNLOADS": "never"}
    )
    assert synced.returncode == 0, synced.stderr
    (project / "stock_mangum.py").write_text(STOCK_MODULE)
    probe = project / "lambda_probe.py"
    probe.write_text(EVENT_FUNCTION + textwrap.dedent(PROBE).format(package=PACKAGE))
    python = str(project / ".venv" / "bin" / "python")
    compiled = run([python, "-m", "compileall", "-q", "src", "stock_mangum.py"], cwd=project)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
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
            # The handler module in the project's own venv, not the image: no key to send (the
            # settings' default; Dockerfile.lambda sets api_key).
            "AUTH_MODE": "none",
            # Set in every Lambda execution environment: the function counts into CloudWatch's
            # embedded metric format, and never loads prometheus_client.
            "AWS_LAMBDA_FUNCTION_NAME": "bench-cold-start",
        }
        profiles = {}
        for kind, env, module in (
            ("stock", AWS_ENV, "stock_mangum"),
            ("rendered", rendered_env, f"{PACKAGE}.lambda_handler"),
        ):
            samples = []
            for _ in range(runs):
                measured = run([str(project / ".venv" / "bin" / "python"), str(probe), kind], cwd=project, env=env)
                assert measured.returncode == 0, measured.stdout + measured.stderr[-3000:]
                samples.append(json.loads(measured.stdout.strip().splitlines()[-1]))
            results[kind] = {key: statistics.median([sample[key] for sample in samples]) for key in samples[0]}
            profiles[kind] = import_profile(project, module, env)
    return {**results, "import_profile": profiles}


def import_profile(project: Path, module: str, env: dict[str, str]) -> list[tuple[str, float]]:
    """Where the import of `module` spends its time: `python -X importtime`'s self times, summed
    per top-level package (ms), the largest first. One process, after the measured ones compiled
    the bytecode; importtime's own overhead inflates every figure a little, alike."""
    python = str(project / ".venv" / "bin" / "python")
    profiled = run([python, "-X", "importtime", "-c", f"import {module}"], cwd=project, env=env)
    assert profiled.returncode == 0, profiled.stderr[-3000:]
    totals: Counter[str] = Counter()
    for line in profiled.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if not line.startswith("import time:") or len(fields) != 3 or not fields[0].strip().isdigit():
            continue
        totals[fields[2].strip().split(".")[0]] += int(fields[0]) / 1000
    return [(name, round(spent, 1)) for name, spent in totals.most_common(IMPORT_PROFILE_TOP)]


# -- the smoke run's Lambda part --------------------------------------------------------------


def start_smoke_run(work: Path, logs: Path) -> subprocess.Popen[str] | dict[str, Any]:
    """Run this file as a script in the background (under the interpreter with boto3 and moto)."""
    check = subprocess.run(
        [host_python(), "-c", "import boto3, moto"], capture_output=True, text=True, check=False, timeout=60
    )
    if check.returncode != 0:
        return {"missing": "boto3 and moto are not installed (bash .ci/install-deploy.sh)", "absent": True}
    output = work / "lambda.json"
    output.unlink(missing_ok=True)
    log = (logs / "lambda_latency.log").open("w")
    return subprocess.Popen(
        [host_python(), str(Path(__file__).resolve()), "--json", str(output), "--work", str(work)],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def finish_smoke_run(process: subprocess.Popen[str] | dict[str, Any], work: Path, logs: Path, timeout: float) -> Any:
    """{"lambda": numbers} from the script started by start_smoke_run, or {"lambda_missing": why}."""
    if isinstance(process, dict):
        return {"lambda_missing": process["missing"]}
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    output = work / "lambda.json"
    if process.returncode == 0 and output.exists():
        return {"lambda": json.loads(output.read_text())}
    return {"lambda_missing": f"failed: exited {process.returncode}: {last_line(logs / 'lambda_latency.log')}"}


def measure_once(output: Path, work: Path) -> None:
    """The script: `measure` once, on a fresh render of deployment.py's first variant."""
    from tests.images import DEPLOYED_VARIANTS, prepare_project

    variant = DEPLOYED_VARIANTS[0]
    project = work / variant.id
    shutil.rmtree(project, ignore_errors=True)
    prepare_project(variant, project)
    numbers = measure(project, 1)
    output.write_text(json.dumps(numbers, indent=2) + "\n")


# -- in the report ----------------------------------------------------------------------------

ROWS = [
    "4. Lambda cold start: import of the handler module + first event, a POST scheduling a task "
    "(stock Mangum vs rendered handler)",
    "4. Lambda response time with a 1 s background task (stock Mangum vs rendered handler, SQS offload)",
]


def add_rows(table: Table, results: dict[str, Any], sizes: Any) -> None:
    deploy = results.get("deploy") or {}
    skipped = results.get("skipped", {}).get(str(NUMBER))
    why = skipped or deploy.get("missing") or deploy.get("lambda_missing")
    if not why and not deploy.get("lambda"):
        why = "bench/deployment.py did not run"
    numbers = deploy.get("lambda", {})
    stock, rendered = numbers.get("stock", {}), numbers.get("rendered", {})

    def cold(entry: dict[str, float]) -> str:
        imported, first = entry["import_s"] * 1000, entry["first_event_s"] * 1000
        return f"{ms(imported + first)} ms (import {ms(imported)} + first event {ms(first)})"

    if why:
        for label in ROWS:
            table.add(label, not_measured(why), not_measured(why), "—")
        return
    cold_ratio = ratio(rendered["import_s"] + rendered["first_event_s"], stock["import_s"] + stock["first_event_s"])
    table.add(ROWS[0], cold(stock), cold(rendered), cold_ratio)
    table.add(
        ROWS[1],
        f"{ms(stock['task_response_s'] * 1000)} ms",
        f"{ms(rendered['task_response_s'] * 1000)} ms",
        ratio(rendered["task_response_s"], stock["task_response_s"]),
    )


def headline(results: dict[str, Any], sizes: Any) -> list[str]:
    numbers = (results.get("deploy") or {}).get("lambda") or {}
    if "stock" not in numbers or "rendered" not in numbers or results.get("skipped", {}).get(str(NUMBER)):
        return []
    stock_ms = numbers["stock"]["task_response_s"] * 1000
    rendered_ms = numbers["rendered"]["task_response_s"] * 1000
    return [
        f"- Lambda, an endpoint with a 1 s background task: the response takes {ms(rendered_ms)} ms with the "
        f"rendered handler (task sent to SQS) vs {ms(stock_ms)} ms with stock Mangum, which runs the task "
        "before it returns."
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the smoke run's Lambda part (see the module docstring)")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    options = parser.parse_args()
    measure_once(options.json, options.work)
