"""The deployment files every variant renders pass their linters: hadolint on each Dockerfile,
cfn-lint on each SAM template. No Docker Engine needed; the images themselves are built in
test_docker_images.py and test_lambda_runtime.py.

Linted once per distinct rendered file (many variants render the same text).
"""

import re
import shutil
from pathlib import Path

import pytest
import yaml

from .conftest import RenderCache
from .rendering import LOCAL_PYTHON, REPO_ROOT, all_variants, run

VARIANTS = all_variants()
# Every test here reads the whole matrix: on one xdist worker, its renders are made once (the
# worker's RenderCache) rather than once on each worker.
pytestmark = [pytest.mark.xdist_group("deploy-files"), pytest.mark.heavy(150)]
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
    # One run for all of them: loading cfn-lint's schemas takes seconds, linting one file does
    # not. Each problem it reports starts with the path of its file.
    result = run([linter("cfn-lint"), *map(str, files.values())], cwd=REPO_ROOT)
    assert result.returncode == 0, f"{result.stdout}{result.stderr}"


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


def test_which_variants_render_a_compose_file_and_what_it_runs(rendered: RenderCache) -> None:
    # compose.yaml does not depend on python_version: the local version's variants cover it.
    for variant in [v for v in VARIANTS if v.answers["python_version"] == LOCAL_PYTHON]:
        answers = variant.answers
        compose = rendered.get(variant) / "compose.yaml"
        postgres = answers.get("task_store") == "postgres"
        celery = answers["task_queue"] == "celery" and answers["deploy_target"] != "lambda"
        assert compose.exists() == (postgres or celery), variant.id
        if not postgres:
            continue
        services = yaml.safe_load(compose.read_text())["services"]
        assert set(services) == {"postgres", "api"}, variant.id
        api = services["api"]
        url = api["environment"]["TASK_STORE_URL"]
        assert url.startswith("postgresql://tasks:${POSTGRES_PASSWORD:?"), url
        assert url.endswith("@postgres:5432/tasks"), url
        assert api["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        assert "ports" not in services["postgres"], "the database is published on the host"


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


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.lambda"])
def test_both_images_need_callers_to_bring_a_key(rendered: RenderCache, name: str) -> None:
    for path in distinct_files(rendered, name).values():
        text = path.read_text()
        # Fail closed: AUTH_MODE=api_key, and no key baked in (without API_KEYS, no start).
        assert re.search(r"^\s+AUTH_MODE=api_key\b", text, re.MULTILINE), path
        assert not re.search(r"^\s*(ENV\s+)?API_KEYS=", text, re.MULTILINE), path


def test_the_sam_template_takes_api_keys_or_a_jwt_authorizer_from_parameters(rendered: RenderCache) -> None:
    from cfnlint.decode import decode  # cfn-lint's reader: CloudFormation's short tags as long form

    for path in distinct_files(rendered, "template.yaml").values():
        template, problems = decode(str(path))
        assert not problems, problems
        parameters = template["Parameters"]
        assert parameters["AuthMode"]["Default"] == "api_key", path
        assert parameters["AuthMode"]["AllowedValues"] == ["api_key", "jwt"], path
        assert parameters["ApiKeys"]["NoEcho"] is True and parameters["ApiKeys"]["Default"] == "", path
        assert {"ApiKeysSecret", "JwtIssuer", "JwtAudience"} <= set(parameters), path
        # CloudFormation refuses a stack whose mode lacks what it needs.
        assert set(template["Rules"]) == {"ApiKeyModeNeedsKeys", "JwtModeNeedsIssuerAndAudience"}, path
        assert template["Conditions"]["UseJwtAuthorizer"] == {"Fn::Equals": [{"Ref": "AuthMode"}, "jwt"]}, path

        function = template["Resources"]["Function"]["Properties"]
        variables = function["Environment"]["Variables"]
        assert variables["AUTH_MODE"] == {"Ref": "AuthMode"}, path
        assert variables["API_KEYS"]["Fn::If"][0] == "ApiKeysFromSecret", path
        assert variables["API_KEYS"]["Fn::If"][2] == {"Ref": "ApiKeys"}, path
        assert variables["JWT_API_GATEWAY_AUTHORIZER"] == {"Fn::If": ["UseJwtAuthorizer", "true", "false"]}, path
        assert function["Events"]["Http"]["Properties"]["ApiId"] == {"Ref": "HttpApi"}, path

        # The HTTP API: with AuthMode jwt its default route needs a token the JWT authorizer
        # verified; /health and /ready have routes of their own that need none.
        body = template["Resources"]["HttpApi"]["Properties"]["DefinitionBody"]
        default_route = body["paths"]["$default"]["x-amazon-apigateway-any-method"]
        assert default_route["security"] == {"Fn::If": ["UseJwtAuthorizer", [{"JwtAuthorizer": []}], []]}, path
        for open_path in ("/health", "/ready"):
            assert "security" not in body["paths"][open_path]["get"], path
        scheme_if = body["components"]["securitySchemes"]["Fn::If"]
        assert scheme_if[0] == "UseJwtAuthorizer" and scheme_if[2] == {}, path
        authorizer = scheme_if[1]["JwtAuthorizer"]["x-amazon-apigateway-authorizer"]
        assert authorizer["type"] == "jwt" and authorizer["identitySource"] == "$request.header.Authorization"
        assert authorizer["jwtConfiguration"]["issuer"] == {"Ref": "JwtIssuer"}, path
        assert "${HttpApi}" in path.read_text().split("ApiUrl:", 1)[1], path
