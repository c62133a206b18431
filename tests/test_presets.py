"""Every answer file in examples/ renders, passes ruff, and its service passes its own tests.

A preset for a Python version this machine lacks runs its suite with python_version set to the
local version (the code is the same: test_variants checks that only version-bearing files differ).
"""

from pathlib import Path

import pytest
import yaml

from .rendering import (
    FAST_TESTS,
    LOCAL_PYTHON,
    REPO_ROOT,
    project_pytest,
    render_variant,
    run,
    sync_project,
    tool,
    unrendered_jinja,
)

PRESETS = sorted((REPO_ROOT / "examples").glob("*.yml"))


def render_preset(preset: Path, destination: Path, **overrides: str) -> None:
    render_variant(overrides, destination, data_file=preset)


def test_there_are_presets() -> None:
    assert len(PRESETS) >= 3


@pytest.mark.heavy(80)
@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_renders_and_passes_its_checks(preset: Path, tmp_path: Path) -> None:
    answers = yaml.safe_load(preset.read_text())
    project = tmp_path / preset.stem
    render_preset(preset, project)
    assert unrendered_jinja(project) == []
    recorded = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert {key: recorded[key] for key in answers} == answers
    for command in (["check", "--no-cache", "."], ["format", "--no-cache", "--check", "."]):
        result = run([tool("ruff"), *command], cwd=project)
        assert result.returncode == 0, result.stdout

    if answers["python_version"] != LOCAL_PYTHON:
        project = tmp_path / f"{preset.stem}-local-python"
        render_preset(preset, project, python_version=LOCAL_PYTHON)
    sync_project(project)
    project_pytest(project, tmp_path / "bt", *FAST_TESTS)
