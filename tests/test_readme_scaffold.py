"""README's scaffold command, the form for a clone of this repository, works as written.

The line is taken from README.md (after its `scaffold-from-clone` marker) and run unchanged with
bash in the root of a fresh `git clone` of this repository: copier renders the defaults (the Rust
runner, built by `uv run`), the post-copy hook locks and commits, and uvicorn starts. The port
comes from UVICORN_PORT, which uvicorn's CLI reads, so the line itself is not edited.
"""

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from .rendering import CARGO_TARGET, COPIER_YML, REPO_ROOT, free_port, local_interpreter, tool

README = REPO_ROOT / "README.md"
MARKER = "<!-- scaffold-from-clone"
# Rendering, locking and building the crate before uvicorn answers: minutes on a loaded machine.
START_TIMEOUT = 900.0


def scaffold_line() -> str:
    block = README.read_text().split(MARKER, 1)[1].split("```console\n", 1)[1]
    line = block.split("```", 1)[0].strip()
    assert "\n" not in line, f"the scaffold block should be one line: {line!r}"
    return line


def default_python() -> str:
    """The interpreter of the default `python_version`, which `--defaults` renders for.

    A user's uv finds it on PATH or downloads it; here nothing is downloaded, and pyenv's shim for
    an inactive version fails, so its folder goes first on PATH, as an activated Python would.
    """
    version = str(yaml.safe_load(COPIER_YML.read_text())["python_version"]["default"])
    python = local_interpreter(version)
    assert python is not None, f"Python {version} (python_version's default) is not installed here"
    return python


def test_the_scaffold_line_works_from_a_clone(tmp_path: Path) -> None:
    clone = tmp_path / "copier-fastapi-tasks"
    # What a user clones: the committed tree of this checkout's HEAD.
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AUTH_", "API_KEYS", "JWT_", "VIRTUAL_ENV"))},
        "UVICORN_PORT": str(port),
        "UV_PYTHON_DOWNLOADS": "never",
        "CARGO_TARGET_DIR": str(CARGO_TARGET / "readme-scaffold"),
        # uv and uvx from the test environment, and the default Python, as a user's PATH has them.
        "PATH": os.pathsep.join([str(Path(tool("uv")).parent), str(Path(default_python()).parent), os.environ["PATH"]]),
    }
    log_path = tmp_path / "scaffold.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            ["bash", "-c", scaffold_line()],
            cwd=clone,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        answered = None
        # No proxy: the service is on loopback.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with opener.open(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    answered = response.status
                break
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        assert answered == 200, (
            f"the service never answered /health (exit {process.poll()}):\n{log_path.read_text()[-4000:]}"
        )
        project = tmp_path / "my-service"
        assert (project / ".copier-answers.yml").exists()
        assert (project / "uv.lock").exists(), "the post-copy hook did not lock the project"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
