"""`copier update` from each older tag to the working tree keeps local edits and runs migrations."""

import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest

from .rendering import (
    FAST_TESTS,
    IDENTITY,
    REPO_ROOT,
    copier,
    project_pytest,
    render_variant,
    run,
    sync_project,
    walk_files,
)

# The tagged versions an update starts from, by their commits (named here so the test works in a
# clone that did not fetch tags): v0.1.0, the first; v0.2.0, the last before the shared attempt
# lifecycle, callers and the Jinja-free Python templates. The working tree is tagged v0.3.0.
BASELINES = {
    "v0.1.0": "49759b5365aae72b123516adcbe2a3c2e2ae3d3a",
    "v0.2.0": "ffe26fb4ca89aedf10bc3e21a86924f6f0830e7f",
}
NEW = "v0.3.0"
ANSWERS = {
    **IDENTITY,
    "python_version": "3.11",
    "deploy_target": "container",
    "task_runner": "python",
    "task_queue": "none",
    "include_examples": True,
}


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout


def commit_all(cwd: Path, message: str) -> None:
    git("add", "--all", cwd=cwd)
    git(
        "-c",
        "user.name=Test",
        "-c",
        "user.email=test@example.com",
        "commit",
        "--quiet",
        "--allow-empty",
        "-m",
        message,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def template_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of this repository with the baselines tagged and v0.3.0 = the working tree."""
    repo = tmp_path_factory.mktemp("template") / "repo"
    git("clone", "--quiet", "--no-tags", str(REPO_ROOT), str(repo), cwd=REPO_ROOT)
    for tag, commit in BASELINES.items():
        git("tag", tag, commit, cwd=repo)
    # Lay the working tree (uncommitted changes included, ignored files excluded) over HEAD.
    listed = git("ls-files", "--cached", "--others", "--exclude-standard", "-z", cwd=REPO_ROOT)
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        target = repo / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif target.exists():
            target.unlink()
    commit_all(repo, "working tree")
    git("tag", NEW, cwd=repo)
    return repo


def old_project_with_local_edits(template_repo: Path, destination: Path, baseline: str) -> None:
    render_variant(ANSWERS, destination, template=template_repo, vcs_ref=baseline)
    git("init", "--quiet", "--initial-branch=main", cwd=destination)
    commit_all(destination, f"generated from {baseline}")
    # What a user does after generating: customise a module, add their own code, run the service
    # (which leaves a task in the database, where v0.1.0 kept it or where later versions do).
    main = destination / "src" / "example_service" / "main.py"
    main.write_text(main.read_text() + 'app.title = "Customised locally"\n')
    (destination / "src" / "example_service" / "custom.py").write_text('"""Our own code."""\n\nANSWER = 42\n')
    database = destination / "var" / ("tasks.db" if baseline == "v0.1.0" else "state/tasks.db")
    database.parent.mkdir(parents=True)
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE marker (task_id TEXT)")
        db.execute("INSERT INTO marker VALUES ('accepted-before-update')")
    commit_all(destination, "local edits")


class Updated(NamedTuple):
    project: Path
    result: subprocess.CompletedProcess[str]
    baseline: str


@pytest.fixture(scope="module", params=sorted(BASELINES))
def updated(template_repo: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Updated:
    project = tmp_path_factory.mktemp("updated") / "service"
    old_project_with_local_edits(template_repo, project, request.param)
    result = copier(
        "update", "--trust", "--defaults", "--skip-tasks", "--conflict", "inline", "--vcs-ref", NEW, cwd=project
    )
    return Updated(project, result, request.param)


def test_update_reaches_the_new_version_without_conflicts(
    updated: Updated,
) -> None:
    project = updated.project
    answers = (project / ".copier-answers.yml").read_text()
    assert f"_commit: {NEW}" in answers
    leftovers = [str(p.relative_to(project)) for p in walk_files(project) if p.suffix == ".rej"]
    assert leftovers == []
    markers = run(["git", "grep", "-l", "-E", "^(<<<<<<<|>>>>>>>) "], cwd=project)
    assert markers.stdout == "", f"conflict markers in: {markers.stdout}"


def test_local_edits_survive_the_update(updated: Updated) -> None:
    project = updated.project
    assert 'app.title = "Customised locally"' in (project / "src" / "example_service" / "main.py").read_text()
    assert (project / "src" / "example_service" / "custom.py").read_text().endswith("ANSWER = 42\n")


def test_the_task_database_is_where_the_new_version_looks(
    updated: Updated,
) -> None:
    # From v0.1.0 the v0.2.0 migration moves it; from v0.2.0 it is there already.
    project = updated.project
    assert not (project / "var" / "tasks.db").exists()
    with sqlite3.connect(project / "var" / "state" / "tasks.db") as db:
        assert db.execute("SELECT task_id FROM marker").fetchall() == [("accepted-before-update",)]
    said = "moved var/tasks.db to var/state/tasks.db" in updated.result.stdout + updated.result.stderr
    assert said == (updated.baseline == "v0.1.0")


def test_an_updated_project_equals_a_fresh_copy_plus_the_local_edits(
    updated: Updated, template_repo: Path, tmp_path: Path
) -> None:
    project = updated.project
    fresh = tmp_path / "fresh"
    render_variant(ANSWERS, fresh, template=template_repo, vcs_ref=NEW)
    ignore = {".git", "var"}
    mine = {str(p.relative_to(project)) for p in walk_files(project) if not ignore & set(p.relative_to(project).parts)}
    theirs = {str(p.relative_to(fresh)) for p in walk_files(fresh)}
    assert mine - theirs == {"src/example_service/custom.py"}
    assert theirs - mine == set()
    differing = {name for name in mine & theirs if (project / name).read_bytes() != (fresh / name).read_bytes()}
    assert differing == {"src/example_service/main.py"}


def test_the_updated_project_passes_its_tests(updated: Updated, tmp_path: Path) -> None:
    project = updated.project
    sync_project(project)
    project_pytest(project, tmp_path / "bt", *FAST_TESTS)
