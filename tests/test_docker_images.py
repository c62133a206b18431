"""The container image (Dockerfile), built from the file users get and run on a real Docker Engine.

Which variants get an image of their own. Each distinct Dockerfile is built once:
- python_version x task_runner decide the Dockerfile's text (base images, the Rust stages), so
  each pair is built: 3.11 on Debian bookworm and 3.13 on trixie; 3.14 on forky with the Rust
  runner only (its Dockerfile is the one whose Rust toolchain comes from another release,
  trixie's rust image; the Python runner's differs from 3.13's only in the image names), its
  uv.lock written in the suite image (no 3.14 here), and only with CFT_FULL_MATRIX=1: the CI
  budget has no room for it. 3.12 is not: no Debian release
  ships it and no other Python can be downloaded here to make a stand-in for python:3.12-slim;
  its Dockerfile differs from the 3.11 one only in those base image names (tests/test_variants.py
  checks that the rest of the project is the same), and hadolint still checks it.
- deploy_target 'container' and 'both' render the same Dockerfile; 'both' adds the Lambda
  modules, template.yaml and the `lambda` dependency groups to the context, which this build
  does not install (`--no-default-groups`). The image is built from 'both', the superset.
- include_examples changes only which modules the context has; built with the examples, which
  the task checks below need.
- task_queue 'celery' adds Celery and Redis to the locked dependencies and needs a broker to
  serve; its image is not built here.

The image runs with AUTH_MODE=api_key: every container here is given API_KEYS (the test
caller's key, tests/images.py) and sends it, but the one that checks the image refuses to start
without.
"""

import time

import pytest

from .baseimages import docker
from .images import (
    API_KEYS_ENV,
    TEST_API_KEY,
    Container,
    ImageBuilds,
    docker_engine_problem,
    http,
    iter_accepted,
    multipart,
    wait_until,
)
from .rendering import FULL_MATRIX, Variant

ENGINE_PROBLEM = docker_engine_problem()
pytestmark = [
    pytest.mark.docker,
    pytest.mark.heavy(120),
    pytest.mark.skipif(ENGINE_PROBLEM is not None, reason=f"Docker tests skipped: {ENGINE_PROBLEM}"),
]

BASE = {"deploy_target": "both", "task_queue": "none", "include_examples": True}
IMAGE_VARIANTS = [
    Variant({**BASE, "python_version": python_version, "task_runner": task_runner})
    for python_version in ("3.11", "3.13")
    for task_runner in ("python", "rust")
] + [Variant({**BASE, "python_version": "3.14", "task_runner": "rust"})]
# The 3.14 build adds minutes that the CI budget has no room for: a release runs it.
FULL_MATRIX_ONLY = {"3.14"}


def image_variant(variant: Variant) -> object:
    if variant.answers["python_version"] in FULL_MATRIX_ONLY and not FULL_MATRIX:
        why = f"Python {variant.answers['python_version']}'s image is built with CFT_FULL_MATRIX=1 (a release)"
        return pytest.param(variant, id=variant.id, marks=pytest.mark.skip(reason=why))
    return pytest.param(variant, id=variant.id)


IMAGE_PARAMS = [image_variant(v) for v in IMAGE_VARIANTS]
# The uid the Dockerfile's runtime stage creates and runs as.
APP_UID = "10001"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> ImageBuilds:
    return ImageBuilds(tmp_path_factory.mktemp("images"), "Dockerfile", "container")


def start_service(image: str, **env: str) -> tuple[Container, str]:
    container = Container.start(image, env={**API_KEYS_ENV, **env}, options=("--publish", "127.0.0.1::8000"))
    return container, f"http://127.0.0.1:{container.published_port(8000)}"


def task_state(base_url: str, task_id: str) -> str:
    answer = http("GET", f"{base_url}/tasks/{task_id}", api_key=TEST_API_KEY)
    assert answer.status == 200, answer.body
    return str(answer.body["state"])


def register(base_url: str, n: int) -> list[str]:
    responses = [
        http(
            "POST",
            f"{base_url}/register",
            {"email": f"user{i}@example.com", "name": f"User {i}"},
            api_key=TEST_API_KEY,
        )
        for i in range(n)
    ]
    return list(iter_accepted(responses))


def upload_csv(base_url: str, rows: int) -> str:
    content = b"".join(b"%d,%d.5,%d\n" % (i, i, i * 7 % 13) for i in range(rows))
    body, content_type = multipart({"uploaded_by": "tester"}, "file", "numbers.csv", content, "text/csv")
    uploaded = http("POST", f"{base_url}/documents/upload", data=body, content_type=content_type, api_key=TEST_API_KEY)
    (task_id,) = iter_accepted([uploaded])
    return task_id


# Signs a token with a fresh key of each kind and verifies it, as the JWT authenticator does.
JWT_ROUND_TRIP = """
import importlib.util, jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
assert importlib.util.find_spec("pycparser") is None, "pycparser is in the image"
keys = {"RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES256": ec.generate_private_key(ec.SECP256R1())}
for algorithm, key in keys.items():
    token = jwt.encode({"sub": "caller"}, key, algorithm=algorithm)
    assert jwt.decode(token, key.public_key(), algorithms=[algorithm]) == {"sub": "caller"}
print(" ".join(keys))
"""


@pytest.mark.parametrize("variant", IMAGE_PARAMS)
def test_the_image_serves_runs_tasks_and_runs_as_non_root(variant: Variant, images: ImageBuilds) -> None:
    _, built = images.get(variant)
    print(f"\n{variant.id}: image {built.size_mb:.0f} MB, built in {built.seconds:.0f} s")

    # Fail closed: the image runs with AUTH_MODE=api_key, and without keys it does not start.
    keyless = Container.start(built.tag)
    try:
        exit_code = keyless.wait(timeout=60)
        logs = keyless.logs()
        assert exit_code != 0, logs[-3000:]
        assert "API_KEYS" in logs, logs[-3000:]
        assert "Traceback" not in logs, logs[-3000:]
    finally:
        keyless.remove()

    started = time.monotonic()
    container, base_url = start_service(built.tag)
    try:
        wait_until(lambda: http("GET", f"{base_url}/health", timeout=1).status == 200, 30, what="/health 200")
        print(f"{variant.id}: /health answered 200 {time.monotonic() - started:.2f} s after docker run")

        # Without a key, or with a wrong one, nothing but /health and /ready answers.
        ship_it = {"task_name": "Ship it", "assigned_to": "Ada"}
        for api_key in (None, "not-the-key-of-anyone-here"):
            refused = http("POST", f"{base_url}/projects/101/tasks", ship_it, api_key=api_key)
            assert refused.status == 401, (refused.status, refused.body)
            challenge = {name.lower(): value for name, value in refused.headers.items()}.get("www-authenticate", "")
            assert challenge.startswith("Bearer"), refused.headers
            assert refused.body["error"]["code"], refused.body
            assert http("GET", f"{base_url}/tasks", api_key=api_key).status == 401
        assert http("GET", f"{base_url}/ready").status == 200

        accepted = http("POST", f"{base_url}/projects/101/tasks", ship_it, api_key=TEST_API_KEY)
        (task_id,) = iter_accepted([accepted])
        wait_until(lambda: task_state(base_url, task_id) == "succeeded", 20, what="task succeeded")
        activity = http("GET", f"{base_url}/projects/101/activity", api_key=TEST_API_KEY)
        entries = activity.body["entries"]
        assert any(entry["activity"] == "created 'Ship it'" for entry in entries), activity.body

        assert container.inspect("{{.Config.User}}") == f"{APP_UID}:{APP_UID}"
        # The server process itself (PID 1, exec form): its real and effective uid.
        uids = container.exec("awk", "/^Uid:/ {print $2, $3}", "/proc/1/status").split()
        assert uids == [APP_UID, APP_UID], uids
        assert "example_service.serve" in container.exec("cat", "/proc/1/cmdline")
        # AUTH_MODE=jwt checks RS256 and ES256 signatures with cryptography, whose bindings come
        # compiled: the image leaves out pycparser (cffi's C parser), and nothing misses it.
        assert container.exec("python", "-c", JWT_ROUND_TRIP) == "RS256 ES256"

        # Docker's own view, from the image's HEALTHCHECK (first probe after its 10 s interval).
        wait_until(lambda: container.inspect("{{.State.Health.Status}}") == "healthy", 40, 0.5, "healthy")
    finally:
        container.remove()


@pytest.mark.parametrize("variant", IMAGE_PARAMS)
def test_sigterm_finishes_or_reports_every_task_and_a_restart_runs_the_rest(
    variant: Variant, images: ImageBuilds
) -> None:
    _, built = images.get(variant)
    volume = f"copier-fastapi-tasks-test-state-{variant.id.replace('.', '')}"
    state = ("--volume", f"{volume}:/app/var/state")
    first = second = None
    try:
        # The welcome e-mails cannot be written (the outbox, made at startup, is then made
        # read-only for the app's user): they fail and wait to be retried with backoff, so they
        # are in flight at SIGTERM. A short drain deadline leaves them unfinished on purpose.
        # (An outbox that cannot be made at all stops the service at startup instead.)
        first = Container.start(
            built.tag,
            env={
                **API_KEYS_ENV,
                "OUTBOX_DIR": "/tmp/outbox",
                "TASK_DRAIN_TIMEOUT": "2",
                "TASK_CONCURRENCY": "2",
            },
            options=("--publish", "127.0.0.1::8000", *state),
        )
        base_url = f"http://127.0.0.1:{first.published_port(8000)}"
        wait_until(lambda: http("GET", f"{base_url}/health", timeout=1).status == 200, 30, what="/health 200")
        docker("exec", "--user", "0", first.id, "chmod", "0500", "/tmp/outbox")
        emails = register(base_url, 4)
        documents = [upload_csv(base_url, 40_000) for _ in range(3)]
        accepted = emails + documents
        wait_until(lambda: all(task_state(base_url, e) == "retrying" for e in emails), 20, what="e-mails retrying")

        first.stop(timeout=60)
        assert first.inspect("{{.State.ExitCode}}") == "0", first.logs()[-3000:]
        logs = first.json_logs()

        def logged(message: str) -> set[str]:
            return {line["task_id"] for line in logs if line.get("message") == message and "task_id" in line}

        reported = {
            task_id
            for line in logs
            if line.get("message", "").startswith("drain deadline passed")
            for task_id in line["unfinished_task_ids"]
        }
        stopped = [line for line in logs if line.get("message") == "service stopped"]
        assert stopped and stopped[0]["drain_complete"] is False, stopped
        # Nothing silently lost: every accepted task finished (succeeded, or failed for good as a
        # logged dead letter; an e-mail may spend its five attempts before the stop) or is named
        # in the drain's report.
        finished = logged("task succeeded") | logged("task failed; kept as dead letter")
        assert set(accepted) <= finished | reported, (accepted, finished, reported)
        assert reported & set(emails), reported

        # The tasks were stored before their 202 and their runner retired on the way out: a new
        # container on the same volume (with somewhere to write e-mails) runs the rest.
        second = Container.start(
            built.tag,
            env={**API_KEYS_ENV, "OUTBOX_DIR": "/tmp/outbox"},
            options=("--publish", "127.0.0.1::8000", *state),
        )
        base_url = f"http://127.0.0.1:{second.published_port(8000)}"
        wait_until(lambda: http("GET", f"{base_url}/health", timeout=1).status == 200, 30, what="/health 200")
        wait_until(
            lambda: all(task_state(base_url, task_id) == "succeeded" for task_id in reported),
            60,
            0.2,
            "every task the drain reported succeeded after the restart",
        )
    finally:
        for container in (first, second):
            if container is not None:
                container.remove()
        docker("volume", "rm", "--force", volume, check=False)
