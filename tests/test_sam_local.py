"""template.yaml run by SAM CLI itself: `sam build` builds the function's image from the template's
Metadata, then `sam local invoke` and `sam local start-api` run that function as the template
declares it (environment, parameters' defaults, the HTTP API's routes) under the emulator SAM puts
on top of the image. Background tasks take the SQS path against moto's server mode, as in
tests/test_lambda_runtime.py; SAM does not emulate the SQS event source mapping, so the test
receives the message and invokes the function with the SQS event itself.

Two things differ from a user's `sam local invoke`, each for a reason of SAM CLI's:

- AWS_ENDPOINT_URL (pointing the SDK at moto) is added to the function's environment in the
  template `sam build` wrote: SAM's --env-vars only override variables the template declares,
  and pointing the SDK at moto is no business of the user's template.
- moto listens on the address of Docker's default bridge, not on loopback: SAM runs its
  containers on that bridge (`--docker-network host` does not give them the host's network).

The function runs with the template's AuthMode default (api_key), its ApiKeys parameter given
the test caller's key with --parameter-overrides, as `sam deploy` would pass it.

SAM CLI is installed on first use into its own virtual environment under .cache/sam-cli/.
Nothing is pulled: the image SAM builds on is local, and `sam build` uses the base images
tests/baseimages.py makes.
"""

import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from . import lambda_events as events
from . import local_aws
from .baseimages import BaseImageUnavailable, docker, ensure_images, image_defaults
from .images import (
    API_KEYS_ENV,
    DEPLOYED_VARIANTS,
    TEST_API_KEY,
    docker_engine_problem,
    http,
    prepare_project,
    wait_until,
)
from .local_aws import CREDENTIALS, REGION, LocalAws, local_stack
from .rendering import REPO_ROOT, free_port

ENGINE_PROBLEM = docker_engine_problem()
pytestmark = [
    pytest.mark.docker,
    pytest.mark.lambda_runtime,
    pytest.mark.skipif(ENGINE_PROBLEM is not None, reason=f"Docker tests skipped: {ENGINE_PROBLEM}"),
    # One worker builds the project once for both tests.
    pytest.mark.xdist_group("sam-local"),
    pytest.mark.heavy(150),
]

SAM_CLI_VERSION = "1.170.0"
SAM_CLI_CACHE = REPO_ROOT / ".cache" / "sam-cli"
# The python runner's variant of the Lambda runtime tests: its image layers are already cached.
VARIANT = DEPLOYED_VARIANTS[0]
FUNCTION = "Function"
SAM_REPOSITORY = "copier-fastapi-tasks-test/sam-local"
SAM_TIMEOUT = 300
# The template's parameters as `sam deploy` would be given them: the test caller's key.
PARAMETER_OVERRIDES = ("--parameter-overrides", f"ParameterKey=ApiKeys,ParameterValue={API_KEYS_ENV['API_KEYS']}")
AUTHORIZED = events.bearer(TEST_API_KEY)


def sam_cli() -> Path:
    """The `sam` executable of a virtual environment of its own, made once per machine."""
    venv = SAM_CLI_CACHE / SAM_CLI_VERSION
    sam = venv / "bin" / "sam"
    installed = venv / ".installed"
    SAM_CLI_CACHE.mkdir(parents=True, exist_ok=True)
    with (SAM_CLI_CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not installed.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            result = subprocess.run(
                [
                    str(venv / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    f"aws-sam-cli=={SAM_CLI_VERSION}",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            assert result.returncode == 0, f"installing aws-sam-cli failed:\n{result.stdout}{result.stderr}"
            installed.touch()
    return sam


def bridge_address() -> str:
    """The host's address on Docker's default bridge: what containers on it reach the host at."""
    network = json.loads(docker("network", "inspect", "bridge").stdout)[0]
    for config in network["IPAM"]["Config"] or []:
        if config.get("Gateway"):
            return str(config["Gateway"])
    interface = network["Options"].get("com.docker.network.bridge.name", "docker0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        siocgifaddr = 0x8915
        request = struct.pack("256s", interface.encode()[:15])
        return socket.inet_ntoa(fcntl.ioctl(probe.fileno(), siocgifaddr, request)[20:24])


@dataclass
class SamProject:
    """A rendered project built by `sam build`, with the template SAM's local commands run."""

    root: Path
    sam: Path
    template: Path
    rapid_image: str
    env: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.sam), *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=SAM_TIMEOUT,
            check=False,
        )

    def env_vars(self, aws: LocalAws, name: str) -> Path:
        """An --env-vars file: the template's Refs to the queue and the table, as moto has them."""
        path = self.root / f"{name}.env.json"
        variables = {"TASK_QUEUE_URL": aws.queue_url, "TASK_STORE_URL": f"dynamodb://{aws.table}"}
        path.write_text(json.dumps({FUNCTION: variables}))
        return path

    def invoke(self, event: dict[str, Any], env_vars: Path) -> dict[str, Any]:
        """`sam local invoke` with `event`; the function's answer."""
        event_file = self.root / "event.json"
        event_file.write_text(json.dumps(event))
        result = self.run(
            "local",
            "invoke",
            FUNCTION,
            "--template-file",
            str(self.template),
            "--event",
            str(event_file),
            "--env-vars",
            str(env_vars),
            *PARAMETER_OVERRIDES,
            "--layer-cache-basedir",
            str(self.root / ".layers"),
        )
        assert result.returncode == 0, result.stderr[-6000:]
        lines = result.stdout.strip().splitlines()
        assert lines, result.stderr[-6000:]
        answer = json.loads(lines[-1])
        assert isinstance(answer, dict), answer
        assert "errorType" not in answer, (answer, result.stderr[-6000:])
        return answer


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with local_aws.moto_server(bridge_address()) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def sam_project(tmp_path_factory: pytest.TempPathFactory, moto_endpoint: str) -> Iterator[SamProject]:
    sam = sam_cli()
    root = tmp_path_factory.mktemp("sam-local") / VARIANT.id
    try:
        prepare_project(VARIANT, root)
        ensure_images(list(image_defaults(root / "Dockerfile.lambda").values()))
    except BaseImageUnavailable as why:
        pytest.skip(str(why))
    tag = VARIANT.id.replace(".", "")
    env = {
        **os.environ,
        **CREDENTIALS,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        # SAM asks STS for the account id before every local invocation: moto answers.
        "AWS_ENDPOINT_URL_STS": moto_endpoint,
        "SAM_CLI_TELEMETRY": "0",
    }
    # The one change to the template: a tag of the test's own instead of `function:latest`,
    # which a developer's own SAM project may be using.
    source = root / "template.yaml"
    assert source.read_text().count("DockerTag: latest") == 1
    source.write_text(source.read_text().replace("DockerTag: latest", f"DockerTag: copier-fastapi-tasks-test-{tag}"))
    project = SamProject(root, sam, root / "sam-local.yaml", f"{SAM_REPOSITORY}:rapid-x86_64", env)

    started = time.monotonic()
    built = project.run("build", "--template-file", str(source))
    assert built.returncode == 0, (built.stdout + built.stderr)[-6000:]
    print(f"\n{VARIANT.id}: sam build {time.monotonic() - started:.0f} s")
    template = yaml.safe_load((root / ".aws-sam" / "build" / "template.yaml").read_text())
    function = template["Resources"][FUNCTION]["Properties"]
    image = function["ImageUri"]
    assert image == f"function:copier-fastapi-tasks-test-{tag}", function

    # The same image under a repository of the test's own: SAM names the emulator image it builds
    # on top after the repository, and a developer's own `function:rapid-*` must not be touched.
    function["ImageUri"] = f"{SAM_REPOSITORY}:{tag}"
    docker("tag", image, function["ImageUri"])
    function.setdefault("Environment", {}).setdefault("Variables", {})["AWS_ENDPOINT_URL"] = moto_endpoint
    project.template.write_text(yaml.safe_dump(template, sort_keys=False))
    try:
        yield project
    finally:
        # The built image stays, as the other tests' images do: its layers are the next build's cache.
        docker("image", "rm", project.rapid_image, function["ImageUri"], check=False)


def test_sam_local_invoke_serves_http_and_runs_the_task_from_sqs(sam_project: SamProject, moto_endpoint: str) -> None:
    aws = local_stack(moto_endpoint, sam_project.root, "sam-invoke")
    env_vars = sam_project.env_vars(aws, "invoke")

    started = time.monotonic()
    health = sam_project.invoke(events.http_api_v2("GET", "/health"), env_vars)
    print(
        f"\n{VARIANT.id}: sam local invoke (thin image build, container, cold start) {time.monotonic() - started:.0f} s"
    )
    assert health["statusCode"] == 200, health
    assert events.response_json(health) == {"status": "ok"}

    deploy = {"task_name": "Deploy", "assigned_to": "Grace"}
    accepted = sam_project.invoke(events.http_api_v2("POST", "/projects/7/tasks", deploy, headers=AUTHORIZED), env_vars)
    assert accepted["statusCode"] == 202, accepted
    task_id = events.response_json(accepted)["task_id"]

    sqs = aws.client("sqs")
    messages = wait_until(
        lambda: sqs.receive_message(QueueUrl=aws.queue_url, MaxNumberOfMessages=10).get("Messages"),
        10,
        what="the task's message in the queue",
    )
    assert [json.loads(m["Body"])["task_id"] for m in messages] == [task_id]
    ran = sam_project.invoke(events.sqs(messages, aws.queue_arn), env_vars)
    assert ran == {"batchItemFailures": []}

    status = sam_project.invoke(events.http_api_v2("GET", f"/tasks/{task_id}", headers=AUTHORIZED), env_vars)
    body = events.response_json(status)
    assert (body["state"], body["attempts"]) == ("succeeded", 1), body
    assert body["result"] == {"project_id": 7, "logged": "created 'Deploy'"}


def test_sam_local_start_api_routes_the_http_api_to_the_function(sam_project: SamProject, moto_endpoint: str) -> None:
    aws = local_stack(moto_endpoint, sam_project.root, "sam-api")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = sam_project.root / "start-api.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [
                str(sam_project.sam),
                "local",
                "start-api",
                "--template-file",
                str(sam_project.template),
                "--env-vars",
                str(sam_project.env_vars(aws, "start-api")),
                *PARAMETER_OVERRIDES,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                # One container for all the requests, started by the first.
                "--warm-containers",
                "LAZY",
                "--layer-cache-basedir",
                str(sam_project.root / ".layers"),
            ],
            cwd=sam_project.root,
            env=sam_project.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        health = wait_until(lambda: http("GET", f"{url}/health", timeout=120), 120, interval=0.5, what="start-api")
        assert (health.status, health.body) == (200, {"status": "ok"}), log_path.read_text()[-6000:]

        # /ready has a route of its own in the HTTP API, open like /health.
        ready = http("GET", f"{url}/ready", timeout=60)
        assert ready.status == 200, (ready.status, ready.body)

        # AuthMode api_key (the default): the function checks the key ApiKeys gave it.
        refused = http("GET", f"{url}/tasks/no-such-task")
        assert refused.status == 401, (refused.status, refused.body)
        missing = http("GET", f"{url}/tasks/no-such-task", api_key=TEST_API_KEY)
        assert missing.status == 404, (missing.status, missing.body)
        assert missing.body["error"]["code"] == "not_found"

        deploy = {"task_name": "Deploy", "assigned_to": "Grace"}
        assert http("POST", f"{url}/projects/7/tasks", deploy).status == 401
        accepted = http("POST", f"{url}/projects/7/tasks", deploy, api_key=TEST_API_KEY)
        assert accepted.status == 202, (accepted.status, accepted.body, log_path.read_text()[-6000:])
        status = http("GET", f"{url}{accepted.body['status_url']}", api_key=TEST_API_KEY)
        assert (status.status, status.body["state"]) == (200, "queued"), status.body
        queued = aws.client("sqs").receive_message(QueueUrl=aws.queue_url, MaxNumberOfMessages=10).get("Messages")
        assert [json.loads(m["Body"])["task_id"] for m in queued or []] == [accepted.body["task_id"]]

    finally:
        server.send_signal(signal.SIGINT)  # SAM removes its warm containers on Ctrl-C
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        for container in _function_containers(sam_project):
            docker("rm", "--force", container, check=False)


def _function_containers(project: SamProject) -> list[str]:
    listed = docker(
        "ps",
        "--quiet",
        "--filter",
        "label=sam.cli.container.type=lambda",
        "--filter",
        f"ancestor={project.rapid_image}",
    )
    return listed.stdout.decode().split()
