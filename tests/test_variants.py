"""Every variant renders cleanly, passes ruff, and passes its own test suite.

The matrix is derived from copier.yml (choices of the shape questions, minus what the validators
refuse), never hand-listed. Every variant is rendered and linted. Variants on this interpreter's
Python version run their whole suite (mypy, pytest, cargo); variants on other versions are
checked to differ from their twin only in version-bearing files, and a rotation of them per
version (README.md lists it; CFT_FULL_MATRIX=1 runs them all) runs mypy and the fast tests on
that Python: natively where pyenv has it, else in an image of the Debian release that ships it.
"""

import os
import re
from pathlib import Path
from typing import NoReturn

import pytest

from .baseimages import DEBIAN_PYTHON, BaseImageUnavailable, docker, suite_image
from .conftest import RenderCache
from .images import docker_engine_problem
from .rendering import (
    CACHE_ROOT,
    FAST_TESTS,
    FULL_MATRIX,
    LOCAL_PYTHON,
    REPO_ROOT,
    SHAPE_QUESTIONS,
    Variant,
    all_variants,
    local_interpreter,
    project_env,
    project_pytest,
    python_versions,
    rotation,
    run,
    shape_key,
    sync_project,
    tool,
    unrendered_jinja,
    walk_files,
)


def grouped(variants: list[Variant]) -> list[object]:
    """Parametrise by variant, keeping each variant's tests on one xdist worker (one render each),
    marked with the seconds its group takes (tests/conftest.py starts the longest first)."""
    return [
        pytest.param(v, id=v.id, marks=[pytest.mark.xdist_group(v.id), pytest.mark.heavy(group_seconds(v))])
        for v in variants
    ]


def group_seconds(variant: Variant) -> int:
    """About how long a variant's tests take on a fresh 2-core machine (2026-12 CI runs): the
    full suite, a representative's contract suite, the fast suite here or on another Python,
    or lints only."""
    if variant.id in SLOW_SUITES:
        return 300
    if variant.id in REPRESENTATIVES:
        return 200
    version = str(variant.answers["python_version"])
    if version == LOCAL_PYTHON:
        return 60
    if local_interpreter(version) is None and IMAGE_SUITE_BY_DEFAULT and variant == image_default_shape(version):
        return 300  # the suite image is built first: Debian packages, minutes
    return 80 if variant in ROTATION.get(str(variant.answers["python_version"]), []) else 0


VARIANTS = all_variants()
ROTATION = rotation()
# Versions with no interpreter here run their suites in an image of the Debian release that
# ships them (tests/baseimages.py::suite_image).
IMAGE_SUITE_VERSIONS = set(DEBIAN_PYTHON.values())
# An image run is slow (the whole dependency set installed and the crate built in the image:
# minutes each), so without CFT_FULL_MATRIX=1 each such version runs one shape of its rotation
# there, the one that runs the most of the code (both targets, the examples, the Rust runner),
# and the others skip saying how to run them. False: none of them without CFT_FULL_MATRIX=1.
# (3.14's costs about 5 minutes of one worker on a fresh machine, the suite image's build
# included; its first run found the examples' e-mail header failure, fixed since.)
IMAGE_SUITE_BY_DEFAULT = True


def image_default_shape(version: str) -> Variant:
    return max(
        ROTATION[version],
        key=lambda v: (v.answers["deploy_target"] == "both", v.answers["include_examples"], v.answers["task_runner"]),
    )


ENGINE_PROBLEM = docker_engine_problem()
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


def representative_key(variant: Variant) -> tuple[str, str, str]:
    a = variant.answers
    return (a["task_runner"], a["task_queue"], a.get("task_store", "sqlite"))


def representatives() -> dict[tuple[str, str, str], Variant]:
    """One local variant per (task_runner, task_queue, task_store): these also run the
    real-server tests and the contract suite.

    The slow tests start real uvicorn processes and exercise the runner and the store, which
    deploy_target and include_examples do not change; running them once per runner, queue and
    store keeps the matrix affordable without leaving a runner or a store untested. The one
    chosen deploys to both targets with the examples where it can, so it has every backend and
    every task of the variants it stands for.
    """
    chosen: dict[tuple[str, str, str], Variant] = {}
    for variant in LOCAL_VARIANTS:
        key = representative_key(variant)
        if key not in chosen or (variant.answers["include_examples"] and variant.answers["deploy_target"] == "both"):
            chosen[key] = variant
    return chosen


REPRESENTATIVE_OF = representatives()
REPRESENTATIVES = {variant.id for variant in REPRESENTATIVE_OF.values()}
# The representatives that also run the slow tests (real uvicorn processes, a browser, replicas
# killed): one per runner on SQLite and the PostgreSQL store's with the Python runner. Those tests
# start servers on the in-process runner (TASK_BACKEND=local, whatever the shape's default), so a
# Celery shape would only run them again; Celery's real worker tests are fast-tier (`celery`),
# and the Rust runner on PostgreSQL still runs the contract suite.
SLOW_SUITES = {
    variant.id
    for (runner, queue, store), variant in REPRESENTATIVE_OF.items()
    if queue == "none" and (store == "sqlite" or runner == "python")
}


def crate_checker_ids() -> set[str]:
    """One local variant per distinct Rust crate: these run cargo test, fmt and clippy.

    The crate (rust/) renders the same for every deploy target, queue and store; only
    include_examples changes it (the analysis module). A representative is chosen where there is
    one, as it builds the crate anyway.
    """
    chosen: dict[bool, Variant] = {}
    for variant in LOCAL_VARIANTS:
        if variant.answers["task_runner"] != "rust":
            continue
        examples = bool(variant.answers["include_examples"])
        if examples not in chosen or variant.id in REPRESENTATIVES:
            chosen[examples] = variant
    return {variant.id for variant in chosen.values()}


CRATE_CHECKERS = crate_checker_ids()


def test_the_matrix_covers_every_choice() -> None:
    for question in ("python_version", "deploy_target", "task_runner", "task_queue", "include_examples"):
        seen = {v.answers[question] for v in VARIANTS}
        assert len(seen) >= 2, f"{question} has only {seen} in the matrix"
    stores = {v.answers.get("task_store", "sqlite") for v in VARIANTS}
    assert stores == {"sqlite", "postgres"}, stores
    assert any(v.answers.get("task_store") == "postgres" for v in VARIANTS if v.id in REPRESENTATIVES)


def test_each_representative_has_every_backend_and_task_of_the_variants_it_stands_for() -> None:
    for variant in LOCAL_VARIANTS:
        representative = REPRESENTATIVE_OF[representative_key(variant)].answers
        assert representative["deploy_target"] in ("both", variant.answers["deploy_target"]), variant.id
        assert representative["include_examples"] or not variant.answers["include_examples"], variant.id


def test_the_rotation_gives_every_question_each_of_its_values_on_every_version() -> None:
    assert list(ROTATION) == python_versions()
    for version, shapes in ROTATION.items():
        assert {v.answers["python_version"] for v in shapes} == {version}
        for position, question in enumerate(q for q in SHAPE_QUESTIONS if q != "python_version"):
            seen = {shape_key(v)[position] for v in shapes}
            every = {v.answers[question] for v in VARIANTS}
            assert seen == every, f"Python {version}'s rotation gives {question} only {seen}"


def readme_rotation() -> dict[str, list[str]]:
    """The rotation table in README.md: version -> shape ids without their Python part."""
    text = (REPO_ROOT / "README.md").read_text()
    table = text.split("<!-- python-rotation", 1)[1].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines() if re.match(r"^\| \d+\.\d+ \|", line)]
    return {row.split("|")[1].strip(): re.findall(r"`([^`]+)`", row.split("|")[2]) for row in rows}


def test_readme_lists_the_rotation_the_code_runs() -> None:
    in_code = {version: [v.id.split("-", 1)[1] for v in shapes] for version, shapes in ROTATION.items()}
    assert readme_rotation() == in_code


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


def suite_selection(variant: Variant) -> list[str]:
    """The pytest arguments that pick what `variant`'s own suite runs here.

    Most shapes leave out the slow tests (real servers) and the contract suite: a representative
    of their runner, queue and store runs both, on every backend their shape has (it deploys to
    both targets), from the same rendered test and runner code. A representative with Celery or
    PostgreSQL runs the contract suite only on what its shape adds (the `celery` backend, the
    `postgres` store, by their marks): its in-process and SQS runs on SQLite and DynamoDB are the
    queue-less SQLite representative's of the same runner, to the line.
    """
    if variant.id not in REPRESENTATIVES:
        return list(FAST_TESTS)
    added = added_backends(variant)
    if variant.id in SLOW_SUITES:
        marks = []
    elif "celery" in added:
        # A Celery shape's slow tests that start its worker are marked `celery` as well (the
        # marker exists only in Celery shapes: pytest refuses an unknown one in -m).
        marks = ["-m", "not slow or celery"]
    else:
        marks = ["-m", "not slow"]
    # -k matches marker names as well as the names of a test and its folders (`contract`).
    keywords = ["-k", f"not contract or {' or '.join(added)}"] if added else []
    return marks + keywords


def added_backends(variant: Variant) -> list[str]:
    """The contract runs a shape adds to its runner's queue-less SQLite ones, by their marks."""
    answers = variant.answers
    return ["celery"] * (answers["task_queue"] == "celery") + ["postgres"] * (answers.get("task_store") == "postgres")


def collected_contract_ids(project: Path, selection: list[str]) -> list[str]:
    """The contract suite's test ids that `selection` picks in `project`."""
    listing = run(
        [tool("uv"), "run", "--no-sync", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *selection],
        cwd=project,
        env=project_env(LOCAL_PYTHON),
    )
    assert listing.returncode == 0, listing.stdout[-3000:] + listing.stderr[-3000:]
    return [line for line in listing.stdout.splitlines() if line.startswith("tests/platform/contract/")]


@pytest.mark.parametrize("variant", grouped(LOCAL_VARIANTS))
def test_project_suite_passes(rendered: RenderCache, variant: Variant, tmp_path: Path) -> None:
    project = rendered.working_copy(variant, tmp_path)
    sync_project(project)
    typed = run([tool("uv"), "run", "--no-sync", "mypy"], cwd=project, env=project_env(LOCAL_PYTHON))
    assert typed.returncode == 0, typed.stdout[-4000:]

    selection = suite_selection(variant)
    if variant.id in REPRESENTATIVES:
        # The selection leans on the contract folder's name and the backends' marks: a rename
        # must not leave a representative running none of its contract suite, or the wrong runs.
        contract = collected_contract_ids(project, selection)
        assert contract, f"{variant.id} selects none of the contract suite"
        if added := added_backends(variant):
            assert all(any(part in test_id.split("[", 1)[1] for part in added) for test_id in contract), contract
    print(f"{variant.id}: {project_pytest(project, tmp_path / 'pytest', *selection)}")

    if variant.id in CRATE_CHECKERS:
        assert (project / "rust" / "Cargo.toml").exists()
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


def other_version_variants() -> list[Variant]:
    """The variants whose suites run on a Python version other than the local one.

    The rotation (tests/rendering.py::rotation, listed in README.md): per version a few shapes that
    together give every question each of its values. With CFT_FULL_MATRIX=1, every shape.
    """
    if FULL_MATRIX:
        return [v for v in VARIANTS if v.answers["python_version"] != LOCAL_PYTHON]
    return [v for version, shapes in ROTATION.items() if version != LOCAL_PYTHON for v in shapes]


def not_here(why: str) -> NoReturn:
    """Skip, saying why; on CI, where every interpreter and the Docker Engine are installed, fail."""
    if os.environ.get("CI"):
        pytest.fail(f"{why}, and CI must run it")
    pytest.skip(why)


@pytest.mark.parametrize("variant", grouped(other_version_variants()))
def test_project_suite_passes_on_its_own_python(rendered: RenderCache, variant: Variant, tmp_path: Path) -> None:
    """mypy and the fast tests, natively where the interpreter is installed, else in an image."""
    version = str(variant.answers["python_version"])
    python = local_interpreter(version)
    if python is None:
        if version not in IMAGE_SUITE_VERSIONS:
            not_here(f"Python {version} is not installed on this machine, so this variant's suite was not run here")
        if not FULL_MATRIX and not IMAGE_SUITE_BY_DEFAULT:
            pytest.skip(f"Python {version} runs only in an image here, which is slow: CFT_FULL_MATRIX=1 runs it")
        if not FULL_MATRIX and variant != image_default_shape(version):
            pytest.skip(
                f"Python {version} runs only in an image here, which is slow: by default only "
                f"{image_default_shape(version).id} runs there; CFT_FULL_MATRIX=1 runs this suite too"
            )
        if ENGINE_PROBLEM is not None:
            not_here(f"Python {version} is not installed here and its image cannot run: {ENGINE_PROBLEM}")
        project = rendered.working_copy(variant, tmp_path)
        print(f"{variant.id}: {image_suite(project, version)}")
        return
    project = rendered.working_copy(variant, tmp_path)
    sync_project(project, python)
    typed = run([tool("uv"), "run", "--no-sync", "mypy"], cwd=project, env=project_env(python))
    assert typed.returncode == 0, typed.stdout[-4000:]
    print(f"{variant.id}: {project_pytest(project, tmp_path / 'pytest', *FAST_TESTS, python=python)}")


def image_suite(project: Path, version: str) -> str:
    """mypy and the fast tests of `project` in the suite image of Python `version` (its last line)."""
    try:
        image = suite_image(version, Path(tool("uv")))
    except BaseImageUnavailable as why:
        not_here(str(why))
    cache = CACHE_ROOT / f"suite-image-{version}"
    cache.mkdir(parents=True, exist_ok=True)
    script = (
        "uv sync --quiet && uv run --no-sync mypy"
        " && uv run --no-sync pytest -q -p no:cacheprovider --basetemp=/tmp/pytest -m 'not slow'"
    )
    result = docker(
        "run",
        "--rm",
        f"--volume={project}:/project",
        f"--volume={cache}:/cache",
        "--workdir=/project",
        "--env=UV_CACHE_DIR=/cache/uv",
        "--env=UV_LINK_MODE=copy",
        "--env=UV_PYTHON_DOWNLOADS=never",
        f"--env=UV_PYTHON=python{version}",
        "--env=UV_PROJECT_ENVIRONMENT=/tmp/venv",
        # One target directory per xdist worker, as natively (rendering.py::project_env).
        f"--env=CARGO_TARGET_DIR=/cache/cargo-target-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}",
        image,
        "sh",
        "-c",
        script,
        check=False,
    )
    output = result.stdout.decode(errors="replace")
    assert result.returncode == 0, output[-6000:] + result.stderr.decode(errors="replace")[-3000:]
    assert " passed" in output, output[-3000:]
    return output.strip().splitlines()[-1]
