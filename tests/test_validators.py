"""Bad answers are refused with a message a person understands, and nothing is rendered."""

import tomllib
from pathlib import Path

import pytest

from .rendering import SMALLEST, refused_variants, render_variant

GOOD = SMALLEST

BAD_IDENTITIES = [
    ({"project_name": ""}, "project_name must not be empty"),
    ({"project_name": "   "}, "project_name must not be empty"),
    ({"project_name": "1st Service"}, "must start with an ASCII letter"),
    ({"project_name": "Serv\u0456ce"}, "must start with an ASCII letter"),  # Cyrillic i, a confusable
    ({"project_name": "x" * 65}, "at most 64 characters"),
    ({"project_slug": "My Service"}, "project_slug must be a distribution name"),
    ({"project_slug": "my--service"}, "project_slug must be a distribution name"),
    ({"project_slug": "-service"}, "project_slug must be a distribution name"),
    ({"project_slug": "service\n"}, "project_slug must be a distribution name"),
    ({"package_name": "my-service"}, "package_name must be a Python identifier"),
    ({"package_name": "2fast"}, "package_name must be a Python identifier"),
    ({"package_name": "caf\u00e9"}, "package_name must be a Python identifier"),
    ({"package_name": "class"}, "is a Python keyword"),
    ({"package_name": "async"}, "is a Python keyword"),
    ({"package_name": "json"}, "would shadow the standard-library module"),
    ({"package_name": "asyncio"}, "would shadow the standard-library module"),
    ({"package_name": "fastapi"}, "would shadow a dependency"),
    ({"package_name": "tests"}, "would shadow a dependency"),
    ({"package_name": "a" * 49}, "at most 48 characters"),
    ({"author_email": "not-an-email"}, "author_email must be an address"),
    ({"author_email": "a@b"}, "author_email must be an address"),
    ({"author_email": "a b@example.com"}, "author_email must be an address"),
    ({"author_name": ""}, "author_name must not be empty"),
    ({"author_name": 'Say "hi"'}, "without double quotes"),
    ({"description": "line one\nline two"}, "description must be a single line"),
]

# More hostile answers: look-alikes, invisible characters, names Python or the project already
# uses, and characters that would break the files the answers are rendered into.
HOSTILE_IDENTITIES = [
    # Non-ASCII confusables and invisible characters.
    ({"project_name": "\u0395xample Service"}, "must start with an ASCII letter"),  # Greek Epsilon
    ({"project_name": "Example\u00a0Service"}, "must start with an ASCII letter"),  # no-break space
    ({"project_name": "Example\u200bService"}, "must start with an ASCII letter"),  # zero-width space
    ({"project_slug": "\u0455ervice"}, "project_slug must be a distribution name"),  # Cyrillic dze
    ({"project_slug": "ser\uff56ice"}, "project_slug must be a distribution name"),  # fullwidth v
    ({"package_name": "\uff50kg"}, "package_name must be a Python identifier"),  # fullwidth p
    ({"package_name": "pkg\u0430"}, "package_name must be a Python identifier"),  # Cyrillic a
    ({"author_email": "team@ex\u0430mple.com"}, "author_email must be an address"),
    # Whitespace only, or whitespace where a name cannot have it.
    ({"project_name": "\t"}, "project_name must not be empty"),
    ({"author_name": " \t "}, "author_name must not be empty"),
    ({"package_name": " "}, "package_name must be a Python identifier"),
    ({"project_slug": " service"}, "project_slug must be a distribution name"),
    # Leading digits and leading underscores.
    ({"project_slug": "9lives"}, "project_slug must be a distribution name"),
    ({"package_name": "_private"}, "starting with a letter"),
    ({"package_name": "__main__"}, "starting with a letter"),
    # Over-long.
    ({"project_slug": "a" * 65}, "at most 64 characters"),
    ({"author_name": "x" * 101}, "at most 100 characters"),
    ({"description": "x" * 201}, "at most 200 characters"),
    # Keywords (soft ones too) and standard-library names.
    ({"package_name": "match"}, "is a Python keyword"),
    ({"package_name": "none"}, "is a Python keyword"),
    ({"package_name": "typing"}, "would shadow the standard-library module"),
    ({"package_name": "logging"}, "would shadow the standard-library module"),
    # Names the generated project or Python itself already imports.
    ({"package_name": "httpx2"}, "would shadow a dependency"),
    ({"package_name": "pydantic_core"}, "would shadow a dependency"),
    ({"package_name": "sitecustomize"}, "is imported by Python itself at every start-up"),
    # Characters that would make the rendered pyproject.toml invalid.
    ({"description": "first\rsecond"}, "description must not contain control characters"),
    ({"description": "bell\x07"}, "description must not contain control characters"),
    ({"author_name": "Ops \\ Platform"}, "author_name must not contain backslashes"),
    ({"author_name": "Ops\rPlatform"}, "author_name must not contain control characters"),
]

INVALID_CHOICES = [
    ({"python_version": "3.10"}, "python_version"),
    ({"deploy_target": "kubernetes"}, "deploy_target"),
    ({"task_runner": "go"}, "task_runner"),
    ({"task_queue": "rq"}, "task_queue"),
]


@pytest.mark.parametrize(
    ("answers", "message"), BAD_IDENTITIES, ids=lambda x: repr(x)[:40] if isinstance(x, dict) else None
)
def test_a_bad_identity_answer_is_refused_and_nothing_is_rendered(
    tmp_path: Path, answers: dict[str, str], message: str
) -> None:
    destination = tmp_path / "project"
    result = render_variant({**GOOD, **answers}, destination, check=False)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert not destination.exists() or not any(destination.iterdir())


@pytest.mark.parametrize(
    ("answers", "message"),
    HOSTILE_IDENTITIES,
    ids=lambda x: ascii(x)[:40] if isinstance(x, dict) else None,
)
def test_a_hostile_identity_answer_is_refused_and_nothing_is_rendered(
    tmp_path: Path, answers: dict[str, str], message: str
) -> None:
    destination = tmp_path / "project"
    result = render_variant({**GOOD, **answers}, destination, check=False)
    assert result.returncode != 0
    output = result.stderr + result.stdout
    assert message in output
    assert "Validation error for question" in output
    assert not destination.exists() or not any(destination.iterdir())


@pytest.mark.parametrize(("answers", "question"), INVALID_CHOICES, ids=lambda x: str(x)[:40])
def test_an_answer_outside_the_choices_is_refused_and_nothing_is_rendered(
    tmp_path: Path, answers: dict[str, str], question: str
) -> None:
    destination = tmp_path / "project"
    result = render_variant({**GOOD, **answers}, destination, check=False)
    assert result.returncode != 0
    assert f"Invalid choice for '{question}'" in result.stderr + result.stdout
    assert not destination.exists() or not any(destination.iterdir())


def test_answers_that_only_look_unusual_are_accepted(tmp_path: Path) -> None:
    """The validators refuse what breaks, not what is merely unusual."""
    destination = tmp_path / "project"
    answers = {
        "project_name": "Service 2.0_beta-1",
        "project_slug": "service-2-0",
        "package_name": "service_2_0",
        "description": 'Quotes " and back\\slashes \\ and \u00fcnicode \u2713 are fine here',
        "author_name": "Zo\u00eb O'Brien-M\u00fcller",
    }
    render_variant({**GOOD, **answers}, destination)
    pyproject = tomllib.loads((destination / "pyproject.toml").read_text())
    assert pyproject["project"]["description"] == answers["description"]
    assert pyproject["project"]["authors"][0]["name"] == answers["author_name"]
    assert (destination / "src" / "service_2_0" / "main.py").exists()


def test_every_refused_combination_says_why() -> None:
    refused = refused_variants()
    assert refused, "celery on lambda-only must be refused"
    for variant, message in refused:
        assert variant.answers["task_queue"] == "celery"
        assert variant.answers["deploy_target"] == "lambda"
        assert "Lambda" in message


def test_celery_on_lambda_is_refused_by_copier_itself(tmp_path: Path) -> None:
    destination = tmp_path / "project"
    result = render_variant({**GOOD, "deploy_target": "lambda", "task_queue": "celery"}, destination, check=False)
    assert result.returncode != 0
    assert "needs long-running worker processes" in result.stderr + result.stdout
    assert not destination.exists() or not any(destination.iterdir())


@pytest.mark.parametrize(
    "answers",
    [{"deploy_target": "lambda"}, {"deploy_target": "both"}, {"task_queue": "celery"}],
    ids=["lambda", "both", "celery"],
)
def test_the_postgres_store_where_copier_does_not_ask_for_it_is_refused(
    tmp_path: Path, answers: dict[str, str]
) -> None:
    destination = tmp_path / "project"
    result = render_variant({**GOOD, **answers, "task_store": "postgres"}, destination, check=False)
    assert result.returncode != 0
    assert "task_store 'postgres' is for deploy_target 'container' with task_queue 'none'" in (
        result.stderr + result.stdout
    )
    assert not destination.exists() or not any(destination.iterdir())


def test_good_answers_render(tmp_path: Path) -> None:
    render_variant(GOOD, tmp_path / "project")
    assert (tmp_path / "project" / "src" / "example_service" / "main.py").exists()
