"""The rendered README's curl commands work against a real uvicorn process.

This is what a person does after `copier copy`: start the service and paste the examples. It
runs with the settings' default AUTH_MODE=none (no key needed, and a warning at startup saying
so), as `uv run uvicorn` on a developer's machine does.
"""

import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from .rendering import LOCAL_PYTHON, free_port, project_env, render_variant, sync_project, tool

ANSWERS = {
    "python_version": LOCAL_PYTHON,
    "deploy_target": "both",
    "task_runner": "python",
    "task_queue": "none",
    "include_examples": True,
}


def readme_curl_commands(readme: str, port: int) -> list[str]:
    """The curl commands of the README's 'Try the examples' block, pointed at `port`."""
    block = readme.split("Try the examples", 1)[1].split("```console", 1)[1].split("```", 1)[0]
    joined = re.sub(r"\\\n\s*", " ", block)
    commands = []
    for line in joined.splitlines():
        line = line.split("  #", 1)[0].strip()
        if line.startswith("curl") and "…" not in line:
            commands.append(line.replace("127.0.0.1:8000", f"127.0.0.1:{port}"))
        elif line.startswith("echo"):
            commands.append(line)
    return commands


@pytest.fixture
def service(tmp_path: Path):  # type: ignore[no-untyped-def]
    project = tmp_path / "service"
    render_variant(ANSWERS, project)
    sync_project(project)
    # As a developer's shell has it: no AUTH_MODE or API_KEYS of the test run's own.
    env = {
        name: value
        for name, value in {**os.environ, **project_env(LOCAL_PYTHON)}.items()
        if not name.startswith(("AUTH_", "API_KEYS", "JWT_"))
    }
    port = free_port()
    log_path = tmp_path / "uvicorn.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [tool("uv"), "run", "--no-sync", "uvicorn", "example_service.main:app", "--port", str(port)],
            cwd=project,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    deadline = time.monotonic() + 30
    while subprocess.run(["curl", "-sf", f"http://127.0.0.1:{port}/health"], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "service did not start"
        assert process.poll() is None, f"service exited:\n{log_path.read_text()[-3000:]}"
        time.sleep(0.1)
    yield project, port, log_path
    process.terminate()
    process.wait(timeout=30)


def test_the_readme_examples_work_with_curl(service: tuple[Path, int, Path]) -> None:
    project, port, log_path = service
    # No key is needed here, and the service says loudly that it lets anyone in.
    assert "AUTH_MODE=none" in log_path.read_text(), log_path.read_text()[-3000:]
    commands = readme_curl_commands((project / "README.md").read_text(), port)
    task_ids = []
    for command in commands:
        result = subprocess.run(
            [*shlex.split(command), "-s", "-w", "\n%{http_code}"]
            if command.startswith("curl")
            else ["bash", "-c", command],
            cwd=project,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, (command, result.stderr)
        if command.startswith("curl") and "-X POST" in command:
            body, status = result.stdout.rsplit("\n", 1)
            assert status == "202", (command, body)
            task_ids.append(re.search(r'"task_id":"([0-9a-f]+)"', body).group(1))  # type: ignore[union-attr]
    assert len(task_ids) == 5

    deadline = time.monotonic() + 30
    for task_id in task_ids:
        while True:
            status = subprocess.run(
                ["curl", "-s", f"http://127.0.0.1:{port}/tasks/{task_id}"], capture_output=True, text=True
            ).stdout
            if '"state":"succeeded"' in status:
                break
            assert '"state":"failed"' not in status, status
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
    assert list((project / "var" / "outbox").glob("*.eml")), "the welcome e-mail was written"
