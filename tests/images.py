"""Build the rendered projects' images and run their containers: for the Docker tests and bench/.

Every build uses the classic builder (this Docker Engine has no BuildKit frontend image to pull)
and the base images tests/baseimages.py makes, tagged with the names the Dockerfiles' build
arguments default to, so what is built is the file users get, unchanged.
"""

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .baseimages import BaseImageUnavailable, docker, ensure_images, image_defaults, suite_image
from .rendering import Variant, local_interpreter, render_variant, run, tool

IMAGE_REPOSITORY = "copier-fastapi-tasks-test"

# Both images run with AUTH_MODE=api_key and refuse to start without keys: the tests (and bench/)
# start them with this caller's key and send it on every request but /health and /ready.
TEST_CALLER = "tester"
TEST_API_KEY = "copier-fastapi-tasks-test-key"
API_KEYS_ENV = {"API_KEYS": f"{TEST_CALLER}={TEST_API_KEY}"}

# One `deploy_target: both` variant per runner: the Lambda runtime tests run their Lambda images,
# and bench/deployment.py measures both of their images.
DEPLOYED_VARIANTS = [
    Variant(
        {
            "python_version": "3.11",
            "deploy_target": "both",
            "task_runner": task_runner,
            "task_queue": "none",
            "include_examples": True,
        }
    )
    for task_runner in ("python", "rust")
]


def docker_engine_problem() -> str | None:
    """Why the Docker tests cannot run here, or None when an engine answers."""
    if shutil.which("docker") is None:
        return "no docker CLI on this machine"
    result = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, check=False)
    if result.returncode != 0:
        return "no Docker Engine answers (docker version failed)"
    return None


def prepare_project(variant: Variant, destination: Path) -> Path:
    """Render `variant` and lock it, as `copier copy` does with its post-copy task.

    The renders of the test suite skip the post-copy tasks, and the Dockerfiles install from
    uv.lock (`uv sync --locked`), so the lock is written here the same way the task writes it.
    """
    if destination.exists():
        shutil.rmtree(destination)
    render_variant(variant.answers, destination)
    version = str(variant.answers["python_version"])
    python = local_interpreter(version)
    if python is None:
        # uv locks only with an interpreter the project accepts: the suite image has one.
        lock_in_image(destination, version)
        return destination
    locked = run(
        [tool("uv"), "lock", "--quiet", "--python", python], cwd=destination, env={"UV_PYTHON_DOWNLOADS": "never"}
    )
    assert locked.returncode == 0, locked.stdout + locked.stderr
    return destination


def lock_in_image(project: Path, version: str) -> None:
    """`uv lock` the project in the suite image of Python `version` (BaseImageUnavailable: none)."""
    image = suite_image(version, Path(tool("uv")))
    locked = docker(
        "run",
        "--rm",
        f"--volume={project}:/project",
        "--workdir=/project",
        "--env=UV_PYTHON_DOWNLOADS=never",
        f"--env=UV_PYTHON=python{version}",
        image,
        "uv",
        "lock",
        "--quiet",
        check=False,
    )
    assert locked.returncode == 0, (locked.stdout + locked.stderr).decode(errors="replace")[-4000:]


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    dockerfile: str
    seconds: float
    size_bytes: int

    @property
    def size_mb(self) -> float:
        return self.size_bytes / 1_000_000


def build_image(project: Path, dockerfile: str, tag: str) -> BuiltImage:
    """`docker build` one of the project's Dockerfiles, after making the base images it names."""
    ensure_images(list(image_defaults(project / dockerfile).values()))
    started = time.monotonic()
    result = docker("build", "--file", str(project / dockerfile), "--tag", tag, str(project), check=False)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace")
        raise AssertionError(f"docker build -f {dockerfile} failed:\n{output[-6000:]}")
    size = int(docker("image", "inspect", "--format", "{{.Size}}", tag).stdout)
    return BuiltImage(tag=tag, dockerfile=dockerfile, seconds=seconds, size_bytes=size)


class ImageBuilds:
    """Each variant's image of one kind, built on first use; or why it cannot be built here.

    Tests of one variant share the build; a failed build fails them all at once with its reason
    instead of being retried, and a missing base image skips them with one line.
    """

    def __init__(self, root: Path, dockerfile: str, kind: str) -> None:
        self.root = root
        self.dockerfile = dockerfile
        self.kind = kind
        self._built: dict[str, tuple[Path, BuiltImage] | str | Exception] = {}

    def get(self, variant: Variant) -> tuple[Path, BuiltImage]:
        """The rendered project and its built image."""
        if variant.id not in self._built:
            try:
                project = prepare_project(variant, self.root / variant.id)
                image = build_image(project, self.dockerfile, image_tag(variant, self.kind))
                self._built[variant.id] = (project, image)
            except BaseImageUnavailable as why:
                self._built[variant.id] = str(why)
            except Exception as error:
                self._built[variant.id] = error
                raise
        built = self._built[variant.id]
        # Imported here: bench/ uses this module's other helpers where pytest is not installed.
        import pytest

        if isinstance(built, str):
            pytest.skip(built)
        if isinstance(built, Exception):
            pytest.fail(f"the image could not be built: {built}")
        return built


def image_tag(variant: Variant, kind: str) -> str:
    return f"{IMAGE_REPOSITORY}/{variant.id.replace('.', '')}:{kind}"


class Container:
    """A running container, removed (with its anonymous volumes) on close."""

    def __init__(self, container_id: str) -> None:
        self.id = container_id

    @classmethod
    def start(
        cls, image: str, *args: str, env: dict[str, str] | None = None, options: tuple[str, ...] = ()
    ) -> "Container":
        env_args = [f"--env={name}={value}" for name, value in (env or {}).items()]
        started = docker("run", "--detach", *env_args, *options, image, *args)
        return cls(started.stdout.decode().strip())

    def inspect(self, template: str) -> str:
        return docker("inspect", "--format", template, self.id).stdout.decode().strip()

    def published_port(self, container_port: int) -> int:
        mapping = docker("port", self.id, str(container_port)).stdout.decode().splitlines()[0]
        return int(mapping.rsplit(":", 1)[1])

    def processes(self) -> list[tuple[str, str]]:
        """The container's processes as (uid, command line) pairs."""
        # docker top needs the pid column to map the processes into the container.
        listed = docker("top", self.id, "-eo", "pid,uid,args").stdout.decode().splitlines()[1:]
        return [(uid, args) for _, uid, args in (line.split(None, 2) for line in listed)]

    def wait(self, timeout: float) -> int:
        """The container's exit code once it stopped on its own (fails after `timeout` seconds)."""
        waited = subprocess.run(["docker", "wait", self.id], capture_output=True, timeout=timeout, check=True)
        return int(waited.stdout.decode().strip())

    def exec(self, *command: str) -> str:
        return docker("exec", self.id, *command).stdout.decode().strip()

    def logs(self) -> str:
        result = docker("logs", self.id)
        return (result.stdout + result.stderr).decode(errors="replace")

    def json_logs(self) -> list[dict[str, Any]]:
        """The service's JSON log lines (anything else the container printed is left out)."""
        lines = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return lines

    def stop(self, timeout: int) -> None:
        docker("stop", "--time", str(timeout), self.id)

    def remove(self) -> None:
        docker("rm", "--force", "--volumes", self.id, check=False)


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str]


def http(
    method: str,
    url: str,
    body: Any = None,
    *,
    data: bytes | None = None,
    content_type: str | None = None,
    timeout: float = 10,
    api_key: str | None = None,
) -> Response:
    """One HTTP request with the standard library; JSON in and out. With `api_key`, sent as
    `Authorization: Bearer <api_key>`."""
    headers = {}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    if body is not None:
        data = json.dumps(body).encode()
        content_type = "application/json"
    if content_type is not None:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            raw, status, answer_headers = answer.read(), answer.status, dict(answer.headers)
    except urllib.error.HTTPError as error:
        raw, status, answer_headers = error.read(), error.code, dict(error.headers)
    try:
        parsed: Any = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        parsed = raw.decode(errors="replace")
    return Response(status=status, body=parsed, headers=answer_headers)


def wait_until(condition: Any, timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    """Call `condition` until it returns something truthy (returned), or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except (OSError, urllib.error.URLError) as error:
            last_error = error
        else:
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout} s (last error: {last_error})")


def multipart(
    fields: dict[str, str], file_field: str, filename: str, content: bytes, content_type: str
) -> tuple[bytes, str]:
    """A multipart/form-data body (the document upload example) and its Content-Type."""
    boundary = "copier-fastapi-tasks-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def rie_binary(cache: Path) -> Path:
    """The AWS Lambda Runtime Interface Emulator, from the aws-sam-cli wheel (samcli/local/rapid/).

    Downloads the wheel alone (no dependencies) with pip once per cache folder.
    """
    target = cache / "aws-lambda-rie"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    wheels = cache / "wheels"
    downloaded = run(
        [
            shutil.which("pip") or "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(wheels),
            "aws-sam-cli",
        ],
        cwd=cache,
    )
    assert downloaded.returncode == 0, downloaded.stdout + downloaded.stderr
    (wheel,) = wheels.glob("aws_sam_cli-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        target.write_bytes(archive.read("samcli/local/rapid/aws-lambda-rie-x86_64"))
    target.chmod(0o755)
    return target


def iter_accepted(responses: list[Response]) -> Iterator[str]:
    for response in responses:
        assert response.status == 202, (response.status, response.body)
        yield str(response.body["task_id"])
