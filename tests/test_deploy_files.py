"""The deployment files every variant renders pass their linters: hadolint on each Dockerfile,
cfn-lint on each SAM template. No Docker Engine needed; the images themselves are built in
test_docker_images.py and test_lambda_runtime.py.

Linted once per distinct rendered file (many variants render the same text).
"""

import re
import shutil
from pathlib import Path

import pytest

from .conftest import RenderCache
from .rendering import all_variants, run

VARIANTS = all_variants()
DEPLOY_FILES = ("Dockerfile", "Dockerfile.lambda", "template.yaml")


def distinct_files(rendered: RenderCache, name: str) -> dict[str, Path]:
    """One rendered copy of each distinct text of `name` across the matrix."""
    by_text: dict[str, Path] = {}
    for variant in VARIANTS:
        path = rendered.get(variant) / name
        if path.exists():
            by_text.setdefault(path.read_text(), path)
    return by_text


def linter(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: .ci/install-deploy.sh installs it")
    return found


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.lambda"])
def test_every_dockerfile_passes_hadolint(rendered: RenderCache, name: str) -> None:
    files = distinct_files(rendered, name)
    assert files, f"no variant renders {name}"
    for path in files.values():
        result = run([linter("hadolint"), "--no-color", str(path)], cwd=path.parent)
        assert result.returncode == 0, f"{path}:\n{result.stdout}{result.stderr}"


def test_every_sam_template_passes_cfn_lint(rendered: RenderCache) -> None:
    files = distinct_files(rendered, "template.yaml")
    assert files
    for path in files.values():
        result = run([linter("cfn-lint"), str(path)], cwd=path.parent)
        assert result.returncode == 0, f"{path}:\n{result.stdout}{result.stderr}"


def test_which_variants_render_which_deployment_files(rendered: RenderCache) -> None:
    expected = {
        "container": {"Dockerfile"},
        "lambda": {"Dockerfile.lambda", "template.yaml"},
        "both": {"Dockerfile", "Dockerfile.lambda", "template.yaml"},
    }
    for variant in VARIANTS:
        project = rendered.get(variant)
        present = {name for name in DEPLOY_FILES if (project / name).exists()}
        assert present == expected[variant.answers["deploy_target"]], variant.id
        assert (project / ".dockerignore").exists()
        package = project / "src" / "example_service"
        has_lambda = variant.answers["deploy_target"] != "container"
        assert (package / "lambda_handler.py").exists() == has_lambda
        assert (package / "tasks" / "runner" / "sqs.py").exists() == has_lambda
        assert (package / "tasks" / "store" / "dynamodb.py").exists() == has_lambda


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.lambda"])
def test_dockerfiles_keep_to_what_this_engine_and_users_need(rendered: RenderCache, name: str) -> None:
    for path in distinct_files(rendered, name).values():
        text = path.read_text()
        # No BuildKit-only syntax: the classic builder (and engines without buildx) build it too.
        assert not re.search(r"^#\s*syntax=", text, re.MULTILINE), path
        assert "--mount" not in text, path
        # The base images are build arguments with public defaults, and nothing test-only leaks in.
        defaults = dict(re.findall(r"^ARG (\w+_IMAGE)=(\S+)$", text, re.MULTILINE))
        assert defaults["PYTHON_IMAGE"].startswith("python:"), defaults
        assert all(re.fullmatch(r"(python|rust):[\w.-]+", image) for image in defaults.values()), defaults
        assert "ca-certificates.crt" not in text and "CAINFO" not in text, path
        if name == "Dockerfile":
            assert re.search(r"^USER 10001:10001$", text, re.MULTILINE), path
        else:
            # Lambda picks the user itself, and `sam local` cannot build on an image with a USER.
            assert not re.search(r"^USER ", text, re.MULTILINE), path
        entrypoint = re.search(r"^ENTRYPOINT (.+)$", text, re.MULTILINE)
        assert entrypoint and entrypoint.group(1).startswith("["), "ENTRYPOINT must be exec form"


def test_uvicorn_outlasts_the_task_drain(rendered: RenderCache) -> None:
    for path in distinct_files(rendered, "Dockerfile").values():
        text = path.read_text()
        drain = re.search(r"TASK_DRAIN_TIMEOUT=(\d+)", text)
        graceful = re.search(r'"--timeout-graceful-shutdown", "(\d+)"', text)
        assert drain and graceful, path
        assert float(graceful.group(1)) > float(drain.group(1)), path
        assert "HEALTHCHECK" in text and "/health" in text


def test_the_sam_template_wires_queue_dead_letters_and_partial_batches(rendered: RenderCache) -> None:
    for path in distinct_files(rendered, "template.yaml").values():
        text = path.read_text()
        assert "FunctionResponseTypes: [ReportBatchItemFailures]" in text
        assert "deadLetterTargetArn: !GetAtt TaskDeadLetterQueue.Arn" in text
        assert "PackageType: Image" in text and "Dockerfile: Dockerfile.lambda" in text
        assert "TASK_BACKEND: sqs" in text and 'TASK_STORE_URL: !Sub "dynamodb://${TaskTable}"' in text
        # Least privilege: no wildcard actions or resources, no broad managed policies.
        assert not re.search(r"Action:\s*['\"]?\w*:?\*", text), path
        assert "Resource: '*'" not in text and 'Resource: "*"' not in text
        assert "Type: SQS" not in text, "an SQS event would attach AWSLambdaSQSQueueExecutionRole"
