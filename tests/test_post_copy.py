"""The post-copy task leaves a project ready to work in; --skip-tasks leaves a working project too."""

import subprocess
from pathlib import Path

from .rendering import SMALLEST, render_variant

ANSWERS = SMALLEST


def test_post_copy_locks_commits_and_prints_next_steps(tmp_path: Path) -> None:
    project = tmp_path / "service"
    result = render_variant(ANSWERS, project, skip_tasks=False)
    assert (project / "uv.lock").exists()
    log = subprocess.run(
        ["git", "log", "--format=%an <%ae> %s"], cwd=project, capture_output=True, text=True, check=True
    )
    assert log.stdout.strip() == "Test Team <team@example.com> Scaffold from copier-fastapi-tasks"
    status = subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True, check=True)
    assert status.stdout == "", "everything generated is committed"
    assert "uv run uvicorn example_service.main:app" in result.stdout


def test_skip_tasks_renders_without_lock_or_repository(tmp_path: Path) -> None:
    project = tmp_path / "service"
    render_variant(ANSWERS, project, skip_tasks=True)
    assert not (project / "uv.lock").exists()
    assert not (project / ".git").exists()
    assert (project / "pyproject.toml").exists()
