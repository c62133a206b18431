"""Every variant renders cleanly, passes ruff, and passes its own test suite.

The matrix is derived from copier.yml (choices of the shape questions, minus what the validators
refuse), never hand-listed. Every variant is rendered and linted. Variants on this interpreter's
Python version run their whole suite (mypy, pytest, cargo); variants on other versions are
checked to differ from their twin only in version-bearing files, and a sample of them runs its
suite on that interpreter where the machine has one (and in the Docker images).
"""

from pathlib import Path

import pytest

from .conftest import RenderCache
from .rendering import (
    LOCAL_PYTHON,
    Variant,
    all_variants,
    local_interpreter,
    project_env,
    project_pytest,
    run,
    sync_project,
    tool,
    unrendered_jinja,
    walk_files,
)


def grouped(variants: list[Variant]) -> list[object]:
    """Parametrise by variant, keeping each variant's tests on one xdist worker (one render each)."""
    return [pytest.param(v, id=v.id, marks=pytest.mark.xdist_group(v.id)) for v in variants]


VARIANTS = all_variants()
LOCAL_VARIANTS = [v for v in VARIANTS if v.answers["python_version"] == LOCAL_PYTHON]
# Files allowed to differ between two variants that differ only in python_version.
VERSION_BEARING = {
    "pyproject.toml",
    ".copier-answers.yml",
    ".python-version",
    "Dockerfile",
    "Dockerfile.lambda",
    "README.md",
}


def representative_ids() -> set[str]:
    """One local variant per (task_runner, task_queue, task_store): these also run the
    real-server tests.

    The slow tests start real uvicorn processes and exercise the runner and the store, which
    deploy_target and include_examples do not change; running them once per runner, queue and
    store keeps the matrix affordable without leaving a runner or a store untested.
    """
    chosen: dict[tuple[str, str, str], Variant] = {}
    for variant in LOCAL_VARIANTS:
        a = variant.answers
        key = (a["task_runner"], a["task_queue"], a.get("task_store", "sqlite"))
        if key not in chosen or (variant.answers["include_examples"] and variant.answers["deploy_target"] == "both"):
            chosen[key] = variant
    return {variant.id for variant in chosen.values()}


REPRESENTATIVES = representative_ids()


def test_the_matrix_covers_every_choice() -> None:
    for question in ("python_version", "deploy_target", "task_runner", "task_queue", "include_examples"):
        seen = {v.answers[question] for v in VARIANTS}
        assert len(seen) >= 2, f"{question} has only {seen} in the matrix"
    stores = {v.answers.get("task_store", "sqlite") for v in VARIANTS}
    assert stores == {"sqlite", "postgres"}, stores
    assert any(v.answers.get("task_store") == "postgres" for v in VARIANTS if v.id in REPRESENTATIVES)


@pytest.mark.parametrize("variant", grouped(VARIANTS))
def test_renders_without_leftover_template_syntax(rendered: RenderCache, variant: Variant) -> None:
    project = rendered.get(variant)
    assert unrendered_jinja(project) == []
    assert (project / ".copier-answers.yml").read_text().count("_commit") == 1


@pytest.mark.parametrize("variant", grouped(VARIANTS))
def test_passes_ruff(rendered: RenderCache, variant: Variant) -> None:
    project = rendered.get(variant)
    for command in (["check", "--no-cache", "."], ["format", "--no-cache", "--check", "."]):
        result = run([tool("ruff"), *command], cwd=project)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variant", grouped([v for v in VARIANTS if v.answers["python_version"] != LOCAL_PYTHON]))
def test_other_python_versions_change_only_version_bearing_files(rendered: RenderCache, variant: Variant) -> None:
    project = rendered.get(variant)
    twin = rendered.get(variant.with_answers(python_version=LOCAL_PYTHON))
    mine = {p.relative_to(project) for p in walk_files(project)}
    theirs = {p.relative_to(twin) for p in walk_files(twin)}
    assert mine == theirs
    differing = {str(rel) for rel in mine if (project / rel).read_bytes() != (twin / rel).read_bytes()}
    assert differing <= VERSION_BEARING | {str(p) for p in mine if ".github" in str(p)}, differing


@pytest.mark.parametrize("variant", grouped(LOCAL_VARIANTS))
def test_project_suite_passes(rendered: RenderCache, variant: Variant, tmp_path: Path) -> None:
    project = rendered.get(variant)
    sync_project(project)
    typed = run([tool("uv"), "run", "--no-sync", "mypy"], cwd=project, env=project_env(LOCAL_PYTHON))
    assert typed.returncode == 0, typed.stdout[-4000:]

    selection = [] if variant.id in REPRESENTATIVES else ["-m", "not slow"]
    print(f"{variant.id}: {project_pytest(project, tmp_path / 'pytest', *selection)}")

    if (project / "rust" / "Cargo.toml").exists():
        manifest = ["--manifest-path", "rust/Cargo.toml"]
        for cargo_command in (
            ["test", "--quiet", *manifest],
            ["fmt", "--check", *manifest],
            # The python feature puts the PyO3 layer (src/lib.rs) under the lints too.
            ["clippy", "--quiet", "--all-targets", "--features", "python", *manifest, "--", "-D", "warnings"],
        ):
            # PyO3's build script asks this interpreter how to build (VIRTUAL_ENV is blanked).
            python = {"PYO3_PYTHON": str(project / ".venv" / "bin" / "python")}
            cargo = run(["cargo", *cargo_command], cwd=project, env={**project_env(LOCAL_PYTHON), **python})
            assert cargo.returncode == 0, cargo.stdout[-4000:] + cargo.stderr[-4000:]


def other_version_samples() -> list[Variant]:
    """Per other Python version, one variant per runner (the richest shape, without Celery).

    Their code equals the local-version twin's but for version-bearing files (checked above), so
    a sample per runner shows the code runs on that interpreter without tripling the matrix.
    """
    samples = []
    for variant in VARIANTS:
        a = variant.answers
        if (
            a["python_version"] != LOCAL_PYTHON
            and a["deploy_target"] == "both"
            and a["task_queue"] == "none"
            and a["include_examples"]
        ):
            samples.append(variant)
    return samples


@pytest.mark.parametrize("variant", grouped(other_version_samples()))
def test_project_suite_passes_on_its_own_python(rendered: RenderCache, variant: Variant, tmp_path: Path) -> None:
    version = variant.answers["python_version"]
    python = local_interpreter(version)
    if python is None:
        pytest.skip(f"Python {version} is not installed on this machine, so this variant's suite was not run here")
    project = rendered.get(variant)
    sync_project(project, python)
    print(f"{variant.id}: {project_pytest(project, tmp_path / 'pytest', '-m', 'not slow', python=python)}")
