"""`--trust` buys exactly what README says: the scripts in hooks/, and only these commands.

README promises that after `copier copy` the post-copy task runs `uv lock`, makes a first git commit
when the folder is not inside a repository, and prints the next steps; and that `copier update`
runs the migrations in hooks/migrations/. Checked two ways: copier.yml's `_tasks` and
`_migrations` only ever run a script from hooks/ with copier's own Python, and a real `copier copy`
with recording stand-ins for `uv` and `git` (and for tools a task must never reach for) on PATH
runs exactly the promised commands, in the new project's folder, and writes nothing elsewhere.
"""

import ast
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from .rendering import COPIER_YML, IDENTITY, REPO_ROOT, SMALLEST, render_variant

HOOKS = REPO_ROOT / "hooks"
SCRIPT_PREFIX = "{{ _copier_conf.src_path }}/hooks/"
ANSWERS = SMALLEST
# Tools a post-copy task must never run: installers, downloaders, builders, privilege.
FORBIDDEN_TOOLS = ("pip", "pip3", "curl", "wget", "cargo", "rustup", "docker", "npm", "apt-get", "sudo", "uvx")
# Modules that would let a hook script reach the network.
NETWORK_MODULES = {"socket", "urllib", "http", "requests", "httpx", "ftplib", "smtplib", "ssl"}


def copier_yml() -> dict[str, Any]:
    return dict(yaml.safe_load(COPIER_YML.read_text()))


def hook_commands() -> list[tuple[str, list[str]]]:
    config = copier_yml()
    entries = [("_tasks", task) for task in config.get("_tasks", [])]
    entries += [(f"_migrations {m.get('version')}", m) for m in config.get("_migrations", [])]
    commands = []
    for where, entry in entries:
        command = entry["command"] if isinstance(entry, dict) else entry
        assert isinstance(command, list), f"{where}: a string command goes through a shell; use a list"
        commands.append((where, command))
    return commands


def test_every_task_and_migration_runs_a_script_from_hooks_with_copiers_python() -> None:
    commands = hook_commands()
    assert commands, "copier.yml has no _tasks or _migrations: update README's Trust section"
    for where, command in commands:
        assert command[0] == "{{ _copier_python }}", where
        assert command[1].startswith(SCRIPT_PREFIX), f"{where} runs {command[1]!r}, not a script in hooks/"
        script = HOOKS / command[1].removeprefix(SCRIPT_PREFIX)
        assert script.resolve().is_relative_to(HOOKS.resolve()), where
        assert script.is_file(), f"{where}: {script} does not exist"
        # Arguments are answers passed as data, never more code or another program.
        for argument in command[2:]:
            assert argument.startswith("{{ ") and argument.endswith(" }}"), f"{where}: {argument!r}"


def test_every_script_in_hooks_is_one_that_copier_yml_runs() -> None:
    referenced = {HOOKS / command[1].removeprefix(SCRIPT_PREFIX) for _, command in hook_commands()}
    present = {path for path in HOOKS.rglob("*.py")}
    assert present == referenced, "a script in hooks/ that nothing runs, or one that is missing"


def test_migrations_run_after_the_update_and_are_named_after_their_version() -> None:
    for migration in copier_yml().get("_migrations", []):
        version = str(migration["version"])
        assert migration.get("when") == "{{ _stage == 'after' }}", version
        script = Path(migration["command"][1]).name
        assert script.startswith(version.replace(".", "_") + "_"), (version, script)


def test_post_copy_runs_only_on_copy() -> None:
    [task] = copier_yml()["_tasks"]
    assert task["when"] == "{{ _copier_operation == 'copy' }}"


def subprocess_programs(tree: ast.AST) -> list[str]:
    """The program (first list element) of every subprocess call written as a list literal."""
    programs = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.List):
            first = node.args[0].elts[0] if node.args[0].elts else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                programs.append(first.value)
    return programs


@pytest.mark.parametrize("script", sorted(HOOKS.rglob("*.py")), ids=lambda path: path.name)
def test_hook_scripts_reach_no_network_and_run_no_shell(script: Path) -> None:
    tree = ast.parse(script.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported & NETWORK_MODULES == set()
    source = script.read_text()
    assert "shell=True" not in source
    assert "os.system" not in source
    assert set(subprocess_programs(tree)) <= {"uv", "git"}


def make_shims(directory: Path, log: Path, real_git: str) -> None:
    """Stand-ins that record their arguments, folder and caller; `git` then runs the real git."""
    directory.mkdir()
    template = (
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "caller = open(f'/proc/{os.getppid()}/cmdline', 'rb').read().replace(b'\\0', b' ').decode()\n"
        f"with open({str(log)!r}, 'a') as log:\n"
        "    log.write(json.dumps({'tool': os.path.basename(sys.argv[0]), 'args': sys.argv[1:],"
        " 'cwd': os.getcwd(), 'caller': caller}) + '\\n')\n"
    )
    programs = {
        "uv": template + "sys.exit(0)\n",
        "git": template + f"os.execv({real_git!r}, [{real_git!r}, *sys.argv[1:]])\n",
        **{tool: template + "sys.exit(97)\n" for tool in FORBIDDEN_TOOLS},
    }
    for name, text in programs.items():
        path = directory / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)


def recorded(log: Path, cwd: Path) -> list[list[str]]:
    """Commands a hook script ran, all of them in `cwd`.

    Copier itself runs git too (to read the template and look at the destination); those calls
    come from the copier process, not from a script in hooks/, and are not counted.
    """
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    forbidden = [call for call in calls if call["tool"] in FORBIDDEN_TOOLS]
    assert forbidden == [], f"a tool nothing here may run was run: {forbidden}"
    assert [call for call in calls if call["tool"] == "uv" and "/hooks/" not in call["caller"]] == []
    # Copier runs the scripts from its own clone of the template: match the folder, not the path.
    by_hooks = [call for call in calls if "/hooks/" in call["caller"]]
    assert {Path(call["cwd"]) for call in by_hooks} <= {cwd}, "a hook ran a command in another folder"
    return [[call["tool"], *call["args"]] for call in by_hooks]


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


@pytest.fixture
def shimmed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH starts with the recording stand-ins; returns the log they write."""
    real_git = shutil.which("git")
    assert real_git is not None, "git is needed for this test"
    log = tmp_path / "calls.jsonl"
    make_shims(tmp_path / "shims", log, real_git)
    monkeypatch.setenv("PATH", f"{tmp_path / 'shims'}{os.pathsep}{os.environ['PATH']}")
    # Keep the user's git configuration (hooks, templates, signing) out of the task's commit.
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    return log


def test_copy_runs_exactly_the_commands_readme_promises(tmp_path: Path, shimmed: Path) -> None:
    project = tmp_path / "work" / "service"
    project.parent.mkdir()
    before = files_under(tmp_path)
    result = render_variant(ANSWERS, project, skip_tasks=False)

    assert recorded(shimmed, project) == [
        ["uv", "lock", "--quiet"],
        ["git", "rev-parse", "--is-inside-work-tree"],
        ["git", "init", "--quiet", "--initial-branch=main"],
        ["git", "add", "--all"],
        [
            "git",
            "-c",
            f"user.name={IDENTITY['author_name']}",
            "-c",
            f"user.email={IDENTITY['author_email']}",
            "commit",
            "--quiet",
            "-m",
            "Scaffold from copier-fastapi-tasks",
        ],
    ]
    assert "Next steps" in result.stdout
    # Nothing was written outside the new project (and the stand-ins' own log).
    written = {path for path in files_under(tmp_path) - before if not path.is_relative_to(project)}
    assert written == {shimmed}


def test_copy_into_an_existing_repository_leaves_the_repository_alone(tmp_path: Path, shimmed: Path) -> None:
    outer = tmp_path / "monorepo"
    outer.mkdir()
    subprocess.run(["git", "init", "--quiet", str(outer)], check=True)
    project = outer / "services" / "service"
    project.parent.mkdir()
    result = render_variant(ANSWERS, project, skip_tasks=False)

    assert recorded(shimmed, project) == [
        ["uv", "lock", "--quiet"],
        ["git", "rev-parse", "--is-inside-work-tree"],
    ]
    assert "already inside a git repository" in result.stdout
    assert not (project / ".git").exists()


def test_skip_tasks_runs_nothing_in_the_project(tmp_path: Path, shimmed: Path) -> None:
    project = tmp_path / "service"
    render_variant(ANSWERS, project, skip_tasks=True)
    assert recorded(shimmed, project) == []
