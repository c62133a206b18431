"""compose.yaml (task_queue: celery), run for real: Redis, the API and its Celery workers.

The file users get is started unchanged with docker-compose (or `docker compose`), on a host port
of its own (API_PORT): the API must hand each task to Redis and a worker container must run it.
Then the workers are scaled to two, and the whole stack is stopped the way `docker compose stop`
stops it. Nothing can be pulled here, so `redis:7` and the Dockerfile's base images are the
stand-ins tests/baseimages.py makes (cached by the engine after the first run).

One variant is enough: the compose file differs between celery variants only in names (and, with
include_examples, the var/ volume the examples need), and the image it builds is the Dockerfile
tests/test_docker_images.py already covers for every runner. The python runner is the quickest
build, and 3.11 has a Debian-made base image.

The tests share one running stack and run in file order, on one xdist worker (the last one
stops the stack). The image runs with AUTH_MODE=api_key: every Compose command is given API_KEYS
in its environment, as a user's shell or .env gives it, and the API is called with that key.
"""

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .baseimages import BaseImageUnavailable, ensure_images, image_defaults
from .images import (
    API_KEYS_ENV,
    TEST_API_KEY,
    Container,
    docker_engine_problem,
    http,
    iter_accepted,
    multipart,
    prepare_project,
    wait_until,
)
from .rendering import Variant, free_port

VARIANT = Variant(
    {
        "python_version": "3.11",
        "deploy_target": "container",
        "task_runner": "python",
        "task_queue": "celery",
        "include_examples": True,
    }
)
PACKAGE = "example_service"
REDIS_IMAGE = "redis:7"
# Generous bounds, never expectations: a cold build downloads every locked dependency.
BUILD_AND_START_TIMEOUT = 900
COMMAND_TIMEOUT = 180
TASK_TIMEOUT = 60


def compose_command() -> list[str] | None:
    """The Compose CLI: the `docker compose` plugin, else the standalone `docker-compose`."""
    if shutil.which("docker") is not None:
        plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if plugin.returncode == 0:
            return ["docker", "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone is not None else None


COMPOSE = compose_command()


def _why_skip() -> str | None:
    engine_problem = docker_engine_problem()
    if engine_problem is not None:
        return engine_problem
    if COMPOSE is None:
        return "neither `docker compose` nor `docker-compose` is installed (.ci/install-deploy.sh installs it)"
    return None


SKIP_REASON = _why_skip()
pytestmark = [
    pytest.mark.docker,
    # One stack for the module: its tests must not be spread over xdist workers.
    pytest.mark.xdist_group("compose"),
    pytest.mark.heavy(290),
    pytest.mark.skipif(SKIP_REASON is not None, reason=f"compose tests skipped: {SKIP_REASON}"),
]


@dataclass(frozen=True)
class Stack:
    """One compose project, started from a rendered project's compose.yaml."""

    project: Path
    name: str
    api_port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def compose(self, *args: str, timeout: float = COMMAND_TIMEOUT, api_port: bool = True) -> str:
        """Run one Compose command in the project; fail with its output unless it succeeded."""
        result = self.run(*args, timeout=timeout, api_port=api_port)
        assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
        return result.stdout

    def run(
        self, *args: str, timeout: float = COMMAND_TIMEOUT, api_port: bool = True, api_keys: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """One Compose command in the project, whatever its outcome."""
        assert COMPOSE is not None
        # DOCKER_BUILDKIT=0: this engine has no BuildKit frontend image to pull. API_PORT and
        # API_KEYS are read by every command, not only `up`: one without them would see another
        # port and recreate the api container, or refuse to run.
        env = {**os.environ, "DOCKER_BUILDKIT": "0"}
        env.pop("API_PORT", None)
        env.pop("API_KEYS", None)
        if api_port:
            env["API_PORT"] = str(self.api_port)
        if api_keys:
            env.update(API_KEYS_ENV)
        return subprocess.run(
            [*COMPOSE, "--project-name", self.name, *args],
            cwd=self.project,
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )

    def containers(self, service: str) -> list[Container]:
        """The service's containers (as `compose ps` lists them: the v2 plugin, running ones only)."""
        return [Container(line) for line in self.compose("ps", "--quiet", service).split()]

    def start(self) -> None:
        """`up --build`, then wait for the API; on failure print the compose logs, then raise."""
        try:
            self.compose("up", "--detach", "--build", timeout=BUILD_AND_START_TIMEOUT)
            (api,) = self.containers("api")

            def healthy() -> bool:
                # An API that failed to start is reported at once, not after the wait.
                assert api.inspect("{{.State.Running}}") == "true", "the api container exited"
                return http("GET", f"{self.base_url}/health", timeout=2).status == 200

            wait_until(healthy, 60, 0.2, "/health 200")
            # Ready: the API reaches Redis as its task store and as the broker.
            wait_until(lambda: http("GET", f"{self.base_url}/ready", timeout=5).status == 200, 60, 0.2, "/ready 200")
        except BaseException:
            print(f"\ncompose logs of {self.name}:\n{self.logs()}")
            raise

    def down(self) -> None:
        # Volumes too (redis-data, app-var): nothing of a run stays behind but the built image,
        # kept for the engine's layer cache. The timeout bounds `down` after a failed test.
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "30")

    def logs(self) -> str:
        try:
            return self.compose("logs", "--no-color", "--timestamps", timeout=60)[-20000:]
        except (AssertionError, subprocess.TimeoutExpired) as error:
            return f"(no compose logs: {error})"


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Render, lock, `up --build`: the stack with a healthy API; always taken down after."""
    try:
        project = prepare_project(VARIANT, tmp_path_factory.mktemp("compose") / VARIANT.id)
        # What `up --build` would otherwise try (and fail) to pull: redis:7 and the FROM images.
        ensure_images([*image_defaults(project / "Dockerfile").values(), REDIS_IMAGE])
    except BaseImageUnavailable as why:
        pytest.skip(str(why))
    stack = Stack(project=project, name=f"cft-compose-{secrets.token_hex(4)}", api_port=free_port())
    try:
        stack.start()
        yield stack
    finally:
        stack.down()


@pytest.fixture
def stack(running_stack: Stack, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """The module's stack; its compose logs are printed after a test that failed."""
    failed_before = request.session.testsfailed
    yield running_stack
    if request.session.testsfailed > failed_before:
        print(f"\ncompose logs of {running_stack.name}:\n{running_stack.logs()}")


def task_status(stack: Stack, task_id: str) -> dict[str, object]:
    answer = http("GET", f"{stack.base_url}/tasks/{task_id}", api_key=TEST_API_KEY)
    assert answer.status == 200, answer.body
    return dict(answer.body)


def wait_succeeded(stack: Stack, task_ids: list[str]) -> dict[str, dict[str, object]]:
    """Every task's record once all of them read `succeeded` (fail at once on `failed`)."""

    def all_succeeded() -> dict[str, dict[str, object]] | None:
        records = {task_id: task_status(stack, task_id) for task_id in task_ids}
        failed = {task_id: record for task_id, record in records.items() if record["state"] == "failed"}
        assert not failed, failed
        return records if all(record["state"] == "succeeded" for record in records.values()) else None

    records: dict[str, dict[str, object]] = wait_until(all_succeeded, TASK_TIMEOUT, 0.2, "tasks succeeded")
    return records


def schedule_project_task(stack: Stack, project_id: int, name: str) -> str:
    accepted = http(
        "POST",
        f"{stack.base_url}/projects/{project_id}/tasks",
        {"task_name": name, "assigned_to": "Ada"},
        api_key=TEST_API_KEY,
    )
    (task_id,) = iter_accepted([accepted])
    return task_id


def exec_in(container: Container, *command: str) -> subprocess.CompletedProcess[str]:
    """`docker exec`, bounded: a command that hangs (a broker that never answers) fails the test."""
    return subprocess.run(
        ["docker", "exec", container.id, *command], capture_output=True, text=True, timeout=60, check=False
    )


def succeeded_by(containers: list[Container]) -> dict[str, set[str]]:
    """Which container logged each task's `task succeeded` line: task id -> container ids."""
    ran: dict[str, set[str]] = {}
    for container in containers:
        for line in container.json_logs():
            if line.get("message") == "task succeeded" and "task_id" in line:
                ran.setdefault(line["task_id"], set()).add(container.id)
    return ran


def test_users_get_the_api_on_port_8000_unless_api_port_says_otherwise(stack: Stack) -> None:
    def published(api_port: bool = True) -> list[str]:
        config = yaml.safe_load(stack.compose("config", api_port=api_port))
        # v1 prints the port as a number, the v2 plugin as a string.
        return [str(port["published"]) for port in config["services"]["api"]["ports"]]

    assert published(api_port=False) == ["8000"]
    assert published() == [str(stack.api_port)]


def test_the_stack_needs_api_keys_and_the_api_a_key(stack: Stack) -> None:
    # Without API_KEYS (neither in the environment nor in .env), Compose refuses to start the
    # stack and says what to set.
    keyless = stack.run("config", api_keys=False)
    assert keyless.returncode != 0, keyless.stdout
    assert "API_KEYS" in keyless.stderr, keyless.stderr
    # Every service gets them: the workers check the settings as the API does.
    config = yaml.safe_load(stack.compose("config"))
    for service in ("api", "worker"):
        assert config["services"][service]["environment"]["API_KEYS"] == API_KEYS_ENV["API_KEYS"], service

    assert http("GET", f"{stack.base_url}/tasks").status == 401
    assert http("GET", f"{stack.base_url}/tasks", api_key="not-the-key-of-anyone-here").status == 401
    assert http("GET", f"{stack.base_url}/tasks", api_key=TEST_API_KEY).status == 200


def test_a_task_is_run_by_the_worker_container_through_redis(stack: Stack) -> None:
    task_id = schedule_project_task(stack, 101, "Ship it")
    record = wait_succeeded(stack, [task_id])[task_id]

    assert record["name"] == f"{PACKAGE}.examples.jobs.record_project_activity", record
    assert record["attempts"] == 1, record
    assert record["error"] is None, record
    assert record["result"] == {"project_id": 101, "logged": "created 'Ship it'"}, record
    assert record["started_at"] is not None and record["finished_at"] is not None, record
    # Which process ran it: the worker logged it (the API has no runner of its own with Celery).
    (api,) = stack.containers("api")
    (worker,) = stack.containers("worker")
    assert set(succeeded_by([api, worker])) == {task_id}
    assert succeeded_by([worker])[task_id] == {worker.id}


def test_the_api_reads_what_the_worker_wrote_and_the_worker_what_the_api_stored(stack: Stack) -> None:
    # The activity log is written by the task in the worker and read by an endpoint of the API.
    task_id = schedule_project_task(stack, 202, "Review the compose file")
    wait_succeeded(stack, [task_id])
    activity = http("GET", f"{stack.base_url}/projects/202/activity", api_key=TEST_API_KEY)
    assert activity.status == 200, activity.body
    entries = activity.body["entries"]
    assert any(entry["activity"] == "created 'Review the compose file'" for entry in entries), activity.body

    # An upload is stored by the API and analysed by the worker.
    rows = b"".join(b"%d,%d\n" % (i, i * 3) for i in range(500))
    body, content_type = multipart({"uploaded_by": "tester"}, "file", "numbers.csv", rows, "text/csv")
    uploaded = http(
        "POST", f"{stack.base_url}/documents/upload", data=body, content_type=content_type, api_key=TEST_API_KEY
    )
    (upload_id,) = iter_accepted([uploaded])
    result = wait_succeeded(stack, [upload_id])[upload_id]["result"]
    assert isinstance(result, dict) and result["filename"] == "numbers.csv", result
    assert result["lines"] == 500, result


def test_scaled_to_two_workers_both_take_tasks_from_redis(stack: Stack) -> None:
    stack.compose("up", "--detach", "--scale", "worker=2")
    workers = stack.containers("worker")
    assert len(workers) == 2, [worker.id for worker in workers]
    for worker in workers:
        assert worker.inspect("{{.State.Running}}") == "true", worker.logs()[-3000:]

    # Both workers answer Celery's ping through the broker, by their node names (celery@ the
    # container's hostname, its short id).
    expected_nodes = {f"celery@{worker.id[:12]}" for worker in workers}

    def both_answer() -> bool:
        ping = ["celery", "-A", f"{PACKAGE}.worker", "inspect", "ping", "--json", "--timeout", "3"]
        answer = exec_in(workers[0], *ping)
        # Celery exits non-zero while no node replied at all.
        return answer.returncode == 0 and set(json.loads(answer.stdout)) == expected_nodes

    wait_until(both_answer, 60, 1, "both workers answer Celery's ping")

    task_ids = [schedule_project_task(stack, 300 + n, f"Task {n}") for n in range(8)]
    records = wait_succeeded(stack, task_ids)
    assert all(record["attempts"] == 1 for record in records.values()), records
    ran = succeeded_by(workers)
    assert set(task_ids) <= set(ran), ran
    spread = {worker.id[:12]: sum(worker.id in ran[task_id] for task_id in task_ids) for worker in workers}
    print(f"\ntasks run per worker container: {spread}")


def test_every_healthcheck_passes(stack: Stack) -> None:
    """Each container's own healthcheck command, run now rather than after its first interval.

    The worker's is compose.yaml's (Celery's ping to its own node name, escaped `$$HOSTNAME`),
    the api's the Dockerfile's HEALTHCHECK, redis's compose.yaml's again.
    """
    for service in ("api", "worker", "redis"):
        for container in stack.containers(service):
            kind, *command = json.loads(container.inspect("{{json .Config.Healthcheck.Test}}"))
            shell = ["/bin/sh", "-c", *command] if kind == "CMD-SHELL" else command
            checked = exec_in(container, *shell)
            output = checked.stdout + checked.stderr
            assert checked.returncode == 0, f"{service} {container.id[:12]}: {shell}\n{output[-2000:]}"


def test_stop_ends_every_service_cleanly(stack: Stack) -> None:
    """`stop` sends SIGTERM: every process shuts down itself (exit 0) within its grace period."""
    containers = {service: stack.containers(service) for service in ("api", "worker", "redis")}
    # Without a --timeout: each service gets the stop_grace_period the file gives it.
    stack.compose("stop", timeout=COMMAND_TIMEOUT)
    exit_codes = {
        f"{service}:{container.id[:12]}": container.inspect("{{.State.ExitCode}}")
        for service, service_containers in containers.items()
        for container in service_containers
    }
    assert set(exit_codes.values()) == {"0"}, exit_codes
