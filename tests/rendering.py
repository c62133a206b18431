"""The one helper that renders a variant of the template, and the variant matrix.

Renders with the real `copier` CLI from the working tree (uncommitted changes included), so the
tests exercise exactly what `copier copy` gives users.
"""

import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
COPIER_YML = REPO_ROOT / "copier.yml"
# The questions that change the shape of the project, in the order copier asks them.
SHAPE_QUESTIONS = ("python_version", "deploy_target", "task_runner", "task_queue", "include_examples")
# Shape questions copier asks only for some answers to those (their `when:`): each adds its
# other choices to the variants where it is asked, and keeps its default (left out of the
# answers, so the other variants' ids stay as they were) everywhere else.
CONDITIONAL_SHAPE_QUESTIONS = ("task_store",)
# Every test render uses the same identity, so Rust builds share one cargo target directory.
IDENTITY = {"project_name": "Example Service", "author_name": "Test Team", "author_email": "team@example.com"}
LOCAL_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
# The smallest, quickest variant: for tests about copier itself rather than about a shape.
SMALLEST = {
    "python_version": LOCAL_PYTHON,
    "deploy_target": "container",
    "task_runner": "python",
    "task_queue": "none",
    "include_examples": False,
}
# CFT_FULL_MATRIX=1 (for a release): every shape's suite on every offered Python version, not
# only the rotation below.
FULL_MATRIX = os.environ.get("CFT_FULL_MATRIX", "") not in ("", "0")
# Build caches kept between runs on one machine, outside the repository (copier copies the
# working tree of the repository for every render).
CACHE_ROOT = Path(os.environ.get("CFT_CACHE_DIR", Path.home() / ".cache" / "copier-fastapi-tasks"))
CARGO_TARGET = CACHE_ROOT / "cargo-target"

# Left-over Jinja: {{ }}, {% %} or {# #}, but not GitHub Actions' ${{ }} expressions nor
# CloudFormation's dynamic references ({{resolve:...}}, template.yaml).
UNRENDERED_JINJA = re.compile(r"(?<!\$)\{\{(?!resolve:)|\{%|%\}|\{#|#\}")
# Grafana's legend templates ({{label}}, ops/grafana-dashboard.json, copied as it is): their own
# syntax, the only one Grafana has for a series' name.
GRAFANA_LEGEND = re.compile(r'^\s*"legendFormat": "')


@dataclass(frozen=True)
class Variant:
    answers: Mapping[str, Any]

    @property
    def id(self) -> str:
        a = self.answers
        examples = "examples" if a["include_examples"] else "bare"
        store = f"-{a['task_store']}" if a.get("task_store", "sqlite") != "sqlite" else ""
        return f"py{a['python_version']}-{a['deploy_target']}-{a['task_runner']}-{a['task_queue']}{store}-{examples}"

    def with_answers(self, **changes: Any) -> "Variant":
        return Variant({**self.answers, **changes})


def load_questions() -> dict[str, Any]:
    return dict(yaml.safe_load(COPIER_YML.read_text()))


def _choices(question: Mapping[str, Any]) -> list[Any]:
    if question.get("type") == "bool":
        return [True, False]
    choices = question["choices"]
    return list(choices.values()) if isinstance(choices, dict) else list(choices)


def refusal(answers: Mapping[str, Any], questions: Mapping[str, Any] | None = None) -> str | None:
    """What copier.yml's validators say about this combination of shape answers (None: fine)."""
    questions = questions or load_questions()
    environment = jinja2.Environment(autoescape=False)
    for name in SHAPE_QUESTIONS:
        validator = questions[name].get("validator")
        if validator:
            message = environment.from_string(validator).render(**answers).strip()
            if message:
                return message
    return None


def asked(name: str, answers: Mapping[str, Any], questions: Mapping[str, Any]) -> bool:
    """Whether copier asks question `name` given these answers (its `when:`)."""
    when = questions[name].get("when", True)
    if isinstance(when, bool):
        return when
    rendered = jinja2.Environment(autoescape=False).from_string(str(when)).render(**answers)
    return rendered.strip().lower() not in ("", "false", "0", "none")


def all_variants() -> list[Variant]:
    """Every combination of the shape questions' choices that the validators accept, and each
    conditional shape question's other choices where it is asked."""
    questions = load_questions()
    variants = []
    for combination in itertools.product(*(_choices(questions[name]) for name in SHAPE_QUESTIONS)):
        answers = dict(zip(SHAPE_QUESTIONS, combination, strict=True))
        if refusal(answers, questions) is None:
            variants.append(Variant(answers))
            for name in CONDITIONAL_SHAPE_QUESTIONS:
                if asked(name, answers, questions):
                    default = questions[name]["default"]
                    choices = [c for c in _choices(questions[name]) if c != default]
                    variants += [Variant({**answers, name: choice}) for choice in choices]
    return variants


def python_versions() -> list[str]:
    """The python_version choices, oldest first."""
    return [str(version) for version in _choices(load_questions()["python_version"])]


def shape_key(variant: Variant) -> tuple[Any, ...]:
    """The answers of a variant but its Python version: what the rotation varies."""
    return tuple(variant.answers[name] for name in SHAPE_QUESTIONS if name != "python_version")


def rotation() -> dict[str, list[Variant]]:
    """Per Python version, the few shapes whose suites run on it when it is not the local one.

    Each version's shapes together give every question every one of its values (so a dependency
    or a part that does not work on that version fails a suite), in as few shapes as can do that.
    Among the sets that do, each version takes the first (in matrix order) that shares the
    fewest shapes with the versions before it, so the versions between them run many shapes.
    Fixed by copier.yml alone, never by the machine: README.md lists the result.
    """
    questions = load_questions()
    values = {name: _choices(questions[name]) for name in SHAPE_QUESTIONS if name != "python_version"}
    variants = all_variants()
    chosen: dict[str, list[Variant]] = {}
    used: set[tuple[Any, ...]] = set()
    for version in python_versions():
        shapes = [v for v in variants if v.answers["python_version"] == version]
        best: tuple[Variant, ...] | None = None
        for size in range(max(len(vs) for vs in values.values()), len(shapes) + 1):
            covering = [
                combination
                for combination in itertools.combinations(shapes, size)
                if all({v.answers[name] for v in combination} == set(vs) for name, vs in values.items())
            ]
            if covering:
                best = min(covering, key=lambda combination: sum(shape_key(v) in used for v in combination))
                break
        assert best is not None, f"no set of Python {version} shapes covers every answer"
        chosen[version] = list(best)
        used |= {shape_key(v) for v in best}
    return chosen


def refused_variants() -> list[tuple[Variant, str]]:
    questions = load_questions()
    refused = []
    for combination in itertools.product(*(_choices(questions[name]) for name in SHAPE_QUESTIONS)):
        answers = dict(zip(SHAPE_QUESTIONS, combination, strict=True))
        message = refusal(answers, questions)
        if message is not None:
            refused.append((Variant(answers), message))
    return refused


def copier(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real copier CLI, with no prompts."""
    result = subprocess.run(
        [sys.executable, "-m", "copier", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "COPIER_LOG_LEVEL": "WARNING"},
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"copier {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def data_args(answers: Mapping[str, Any]) -> list[str]:
    args = []
    for name, value in answers.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ["--data", f"{name}={text}"]
    return args


def render_variant(
    answers: Mapping[str, Any],
    destination: Path,
    *,
    template: Path = REPO_ROOT,
    vcs_ref: str = "HEAD",
    skip_tasks: bool = True,
    check: bool = True,
    data_file: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Render the template with these answers into `destination`.

    The test identity is filled in, unless the answers come from `data_file` (a preset), whose
    own identity is kept; `answers` then override single values of the preset.
    """
    args = ["copy", "--trust", "--defaults", "--quiet"]
    if skip_tasks:
        args.append("--skip-tasks")
    # HEAD renders the working tree, uncommitted changes included; without it copier would
    # render the newest tag.
    args += ["--vcs-ref", vcs_ref]
    if data_file is not None:
        args += ["--data-file", str(data_file), *data_args(answers)]
    else:
        args += data_args({**IDENTITY, **answers})
    return copier(*args, str(template), str(destination), check=check)


def unrendered_jinja(project: Path) -> list[str]:
    """Paths and lines of the rendered project where template syntax survived."""
    found = []
    for path in sorted(project.rglob("*")):
        if ".git" in path.parts or ".venv" in path.parts:
            continue
        relative = path.relative_to(project)
        if UNRENDERED_JINJA.search(str(relative)):
            found.append(f"{relative}: file name")
        if path.is_file() and path.suffix == ".jinja":
            found.append(f"{relative}: .jinja file")
        if path.is_file():
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                continue
            for number, line in enumerate(text.splitlines(), 1):
                if path.suffix == ".json" and GRAFANA_LEGEND.match(line):
                    continue
                if UNRENDERED_JINJA.search(line):
                    found.append(f"{relative}:{number}: {line.strip()}")
    return found


def run(
    command: list[str], cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )


def tool(name: str) -> str:
    """A console script installed beside this interpreter (ruff, uv), or on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} is not installed; run .ci/run or pip install -r requirements-test.txt")
    return found


def walk_files(project: Path) -> Iterator[Path]:
    for path in sorted(project.rglob("*")):
        if path.is_file() and not {".git", ".venv", "__pycache__"} & set(path.parts):
            yield path


def local_interpreter(version: str) -> str | None:
    """A working python`version` here: on PATH, or one pyenv installed but has not activated."""
    candidates = [shutil.which(f"python{version}")]
    candidates += [str(path) for path in sorted(Path.home().glob(f".pyenv/versions/{version}*/bin/python{version}"))]
    for candidate in filter(None, candidates):
        # A pyenv shim exists for every installed version but fails for inactive ones.
        if subprocess.run([candidate, "-c", "pass"], capture_output=True, check=False).returncode == 0:
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def project_env(python: str) -> dict[str, str]:
    """The environment to build and test a rendered project with the interpreter `python`."""
    return {
        "UV_PYTHON": python,
        "UV_PYTHON_DOWNLOADS": "never",
        "VIRTUAL_ENV": "",
        # One target directory per xdist worker: cargo locks its own build, but maturin copies
        # the built library out afterwards, and two workers sharing a directory race there.
        "CARGO_TARGET_DIR": str(CARGO_TARGET / os.environ.get("PYTEST_XDIST_WORKER", "main")),
    }


def sync_project(project: Path, python: str = LOCAL_PYTHON) -> None:
    """`uv sync` the rendered project (builds the Rust crate where there is one)."""
    synced = run([tool("uv"), "sync", "--quiet"], cwd=project, env=project_env(python))
    assert synced.returncode == 0, synced.stdout + synced.stderr


# The fast tests without the contract suite. The contract suite runs every backend through every
# point of the task contract and waits out heartbeats, outages and retries (minutes per shape):
# the representatives of each runner, queue and store run it (tests/test_variants.py), and the
# other runs of the same code (the other shapes, other Python versions, presets, updates) check
# what their shape or version changes: rendering, typing, wiring and the fast tests.
FAST_TESTS = ("-m", "not slow", "--ignore=tests/platform/contract")


def project_pytest(project: Path, basetemp: Path, *args: str, python: str = LOCAL_PYTHON) -> str:
    """Run the rendered project's own pytest; fail unless it passed and ran at least one test.

    pytest exits 5 when it collected nothing: that is a failure here, not a pass. Each run gets
    its own --basetemp: pytest prunes its shared temp folders under concurrently running sessions.
    """
    tests = run(
        [tool("uv"), "run", "--no-sync", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={basetemp}", *args],
        cwd=project,
        env=project_env(python),
    )
    assert tests.returncode == 0, tests.stdout[-6000:] + tests.stderr[-3000:]
    assert " passed" in tests.stdout
    return tests.stdout.strip().splitlines()[-1]
