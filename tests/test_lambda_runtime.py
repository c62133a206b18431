"""The Lambda image (Dockerfile.lambda) under AWS's Runtime Interface Emulator, with the real
runtime interface client (awslambdaric) inside, fed the events API Gateway, an ALB and SQS send.

Background tasks take the SQS path against moto's server mode (SQS and DynamoDB on a loopback
port, started here): the HTTP invocation stores the record in DynamoDB and sends the message; the
SQS invocation runs it; a third invocation reads its status. The containers share the host's
network so that they reach moto on 127.0.0.1.

Built variants: python_version 3.11 with both task runners (the runner changes the build: the
Rust crate is compiled in); the 3.13 builds are the container tests' (same steps up to the
service's wheel). deploy_target 'lambda' renders the same Dockerfile.lambda as 'both' (only
comment lines differ); include_examples adds three ENV lines and the examples the task checks use.

The image runs with AUTH_MODE=api_key: a function without API_KEYS does not start, HTTP events
without the key are answered 401, and with AUTH_MODE=jwt behind API Gateway's JWT authorizer
(what template.yaml sets with AuthMode=jwt) the caller comes from the claims in the event.
"""

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import lambda_events as events
from . import local_aws
from .images import (
    API_KEYS_ENV,
    DEPLOYED_VARIANTS,
    TEST_API_KEY,
    TEST_CALLER,
    Container,
    ImageBuilds,
    docker_engine_problem,
    http,
    rie_binary,
    wait_until,
)
from .local_aws import CREDENTIALS, REGION, local_stack
from .rendering import REPO_ROOT, Variant, free_port

ENGINE_PROBLEM = docker_engine_problem()
pytestmark = [
    pytest.mark.docker,
    pytest.mark.heavy(60),
    pytest.mark.lambda_runtime,
    pytest.mark.skipif(ENGINE_PROBLEM is not None, reason=f"Docker tests skipped: {ENGINE_PROBLEM}"),
]

PACKAGE = "example_service"
# An unprivileged uid with no entry in the image, like the one Lambda runs functions as.
LAMBDA_UID = 993
AWS_ENV = {"AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION}
AUTHORIZED = events.bearer(TEST_API_KEY)
# A caller who sees every caller's tasks (AUTH_ADMIN_CALLERS), such as those no request scheduled.
ADMIN_API_KEY = "copier-fastapi-tasks-admin-key"
WITH_AN_ADMIN = {"API_KEYS": f"{API_KEYS_ENV['API_KEYS']},ops={ADMIN_API_KEY}", "AUTH_ADMIN_CALLERS": "ops"}


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    with local_aws.moto_server() as endpoint:
        yield endpoint


class LambdaContainer:
    """The Lambda image run by the Runtime Interface Emulator, invoked over its local API."""

    def __init__(self, image: str, rie: Path, env: dict[str, str]) -> None:
        port, runtime_api_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{port}/2015-03-31/functions/function/invocations"
        # As AWS documents for local tests: the emulator mounted in, as the entry point, running
        # the image's own command through the runtime interface client.
        self.container = Container.start(
            image,
            "--runtime-interface-emulator-address",
            f"127.0.0.1:{port}",
            "--runtime-api-address",
            f"127.0.0.1:{runtime_api_port}",
            "python",
            "-m",
            "awslambdaric",
            f"{PACKAGE}.lambda_handler.handler",
            env=env,
            options=(
                # As Lambda runs it: a user the image does not know, a read-only root file system
                # and a writable /tmp.
                "--user",
                f"{LAMBDA_UID}:{LAMBDA_UID}",
                "--read-only",
                "--tmpfs",
                "/tmp",
                "--network",
                "host",
                "--volume",
                f"{rie.parent}:/aws-lambda:ro",
                "--entrypoint",
                "/aws-lambda/aws-lambda-rie",
            ),
        )

    def invoke_raw(self, event: dict[str, Any]) -> Any:
        """What the emulator answers, an error included."""
        return wait_until(lambda: http("POST", self.url, event, timeout=60), 20, what="invocation answered")

    def invoke(self, event: dict[str, Any]) -> tuple[dict[str, Any], float]:
        started = time.perf_counter()
        answer = self.invoke_raw(event)
        elapsed = time.perf_counter() - started
        assert answer.status == 200, (answer.status, answer.body, self.container.logs()[-3000:])
        assert isinstance(answer.body, dict), answer.body
        assert "errorType" not in answer.body, (answer.body, self.container.logs()[-3000:])
        return answer.body, elapsed

    def close(self) -> None:
        self.container.remove()


@pytest.fixture(scope="module")
def lambda_images(tmp_path_factory: pytest.TempPathFactory) -> ImageBuilds:
    return ImageBuilds(tmp_path_factory.mktemp("lambda-images"), "Dockerfile.lambda", "lambda")


@pytest.fixture(scope="module")
def rie() -> Path:
    return rie_binary(REPO_ROOT / ".cache" / "rie")


@pytest.mark.parametrize("variant", DEPLOYED_VARIANTS, ids=lambda v: v.id)
def test_http_events_of_every_kind_reach_the_app(variant: Variant, lambda_images: ImageBuilds, rie: Path) -> None:
    _, built = lambda_images.get(variant)
    print(f"\n{variant.id}: Lambda image {built.size_mb:.0f} MB, built in {built.seconds:.0f} s")
    function = LambdaContainer(built.tag, rie, env={**AWS_ENV, **API_KEYS_ENV})
    try:
        # The emulator starts the runtime on the first invocation: that one is the cold start.
        health, cold = function.invoke(events.http_api_v2("GET", "/health"))
        print(f"{variant.id}: cold start (runtime start, import, first event) {cold * 1000:.0f} ms")
        for make_event in (events.http_api_v2, events.rest_api_v1, events.alb):
            answer, _ = function.invoke(make_event("GET", "/health"))
            assert answer["statusCode"] == 200, answer
            assert events.response_json(answer) == {"status": "ok"}
            for headers in (None, events.bearer("not-the-key-of-anyone-here")):
                refused, _ = function.invoke(make_event("GET", "/tasks/no-such-task", headers=headers))
                assert refused["statusCode"] == 401, refused
                assert events.response_json(refused)["error"]["code"], refused
            missing, _ = function.invoke(make_event("GET", "/tasks/no-such-task", headers=AUTHORIZED))
            assert missing["statusCode"] == 404, missing
            assert events.response_json(missing)["error"]["code"] == "not_found"
        assert health["statusCode"] == 200
        # The app started once for all those invocations (Mangum's lifespan would start it per event).
        started = [line for line in function.container.json_logs() if line.get("message") == "service started"]
        assert len(started) == 1, started
        # The function's runtime ran as that user (nothing in the image needed root or a name).
        processes = function.container.processes()
        assert any(args.startswith("python -m awslambdaric") for _, args in processes), processes
        assert {uid for uid, _ in processes} == {str(LAMBDA_UID)}, processes
    finally:
        function.close()


@pytest.mark.parametrize("variant", DEPLOYED_VARIANTS, ids=lambda v: v.id)
def test_the_function_fails_closed_and_takes_callers_from_api_gateways_jwt_authorizer(
    variant: Variant, lambda_images: ImageBuilds, rie: Path
) -> None:
    _, built = lambda_images.get(variant)
    # The image's AUTH_MODE=api_key without API_KEYS: the function does not start (its init
    # fails with the setting named), so no request reaches an unprotected app.
    keyless = LambdaContainer(built.tag, rie, env=AWS_ENV)
    try:
        answer = keyless.invoke_raw(events.http_api_v2("GET", "/health"))
        # The emulator answers 502 when the runtime exits during its init (Lambda: an error).
        errored = answer.status != 200 or (isinstance(answer.body, dict) and "errorType" in answer.body)
        assert errored, (answer.status, answer.body)
        logs = keyless.container.logs()
        assert "invalid settings" in logs and "API_KEYS" in logs, logs[-3000:]
    finally:
        keyless.close()

    # What template.yaml sets with AuthMode=jwt: API Gateway's JWT authorizer verified the token
    # and passes its claims in the event; the function takes the caller from them.
    behind_authorizer = {"AUTH_MODE": "jwt", "JWT_API_GATEWAY_AUTHORIZER": "true"}
    function = LambdaContainer(built.tag, rie, env={**AWS_ENV, **behind_authorizer})
    try:
        health, _ = function.invoke(events.http_api_v2("GET", "/health"))
        assert health["statusCode"] == 200, health
        # A request that did not come through the authorizer has no claims: refused.
        refused, _ = function.invoke(events.http_api_v2("GET", "/tasks", headers=events.bearer("a.b.c")))
        assert refused["statusCode"] == 401, refused
        claims = {"sub": TEST_CALLER, "iss": "https://issuer.example.com/", "scope": "tasks:read"}
        listed, _ = function.invoke(events.http_api_v2("GET", "/tasks", jwt_claims=claims))
        assert listed["statusCode"] == 200, listed
        missing, _ = function.invoke(events.http_api_v2("GET", "/tasks/no-such-task", jwt_claims=claims))
        assert missing["statusCode"] == 404, missing
    finally:
        function.close()


@pytest.mark.parametrize("variant", DEPLOYED_VARIANTS, ids=lambda v: v.id)
def test_tasks_go_through_sqs_and_their_status_through_dynamodb(
    variant: Variant, lambda_images: ImageBuilds, rie: Path, moto_server: str
) -> None:
    project, built = lambda_images.get(variant)
    aws = local_stack(moto_server, project, variant.id.replace(".", ""))
    function = LambdaContainer(
        built.tag,
        rie,
        env={
            "TASK_BACKEND": "sqs",
            "TASK_QUEUE_URL": aws.queue_url,
            "TASK_STORE_URL": f"dynamodb://{aws.table}",
            "AWS_ENDPOINT_URL": aws.endpoint,
            **AWS_ENV,
            **WITH_AN_ADMIN,
            **CREDENTIALS,
        },
    )
    sqs = aws.client("sqs")
    deploy = {"task_name": "Deploy", "assigned_to": "Grace"}
    try:
        refused, _ = function.invoke(events.http_api_v2("POST", "/projects/7/tasks", deploy))
        assert refused["statusCode"] == 401, refused
        accepted, _ = function.invoke(events.http_api_v2("POST", "/projects/7/tasks", deploy, headers=AUTHORIZED))
        assert accepted["statusCode"] == 202, accepted
        task_id = events.response_json(accepted)["task_id"]
        status, _ = function.invoke(events.http_api_v2("GET", f"/tasks/{task_id}", headers=AUTHORIZED))
        assert events.response_json(status)["state"] == "queued"

        # What the event source mapping does: receive, invoke, delete all but the failures.
        messages = wait_until(
            lambda: sqs.receive_message(QueueUrl=aws.queue_url, MaxNumberOfMessages=10).get("Messages"),
            10,
            what="the task's message in the queue",
        )
        assert [json.loads(m["Body"])["task_id"] for m in messages] == [task_id]
        answer, _ = function.invoke(events.sqs(messages, aws.queue_arn))
        assert answer == {"batchItemFailures": []}
        status, _ = function.invoke(events.http_api_v2("GET", f"/tasks/{task_id}", headers=AUTHORIZED))
        body = events.response_json(status)
        assert (body["state"], body["attempts"]) == ("succeeded", 1), body
        assert body["result"] == {"project_id": 7, "logged": "created 'Deploy'"}

        # A repeated delivery of a finished task is skipped, not run again.
        again, _ = function.invoke(events.sqs(messages, aws.queue_arn))
        assert again == {"batchItemFailures": []}
        status, _ = function.invoke(events.http_api_v2("GET", f"/tasks/{task_id}", headers=AUTHORIZED))
        assert events.response_json(status)["attempts"] == 1

        # Partial batch response: only the failing messages go back to the queue.
        failing = {
            "task_id": "doc-that-is-not-there",
            "name": f"{PACKAGE}.examples.jobs.process_document",
            "args": ["missing.txt", "grace", "text/plain"],
            "kwargs": {},
        }
        for body_text in (json.dumps(failing), "not a task", json.dumps({"task_id": task_id, "name": "x"})):
            sqs.send_message(QueueUrl=aws.queue_url, MessageBody=body_text)
        batch = _receive_all(sqs, aws.queue_url, 3)
        answer, _ = function.invoke(events.sqs(batch, aws.queue_arn))
        by_body = {m["Body"]: m["MessageId"] for m in batch}
        returned = {failure["itemIdentifier"] for failure in answer["batchItemFailures"]}
        assert returned == {by_body[json.dumps(failing)], by_body["not a task"]}, answer
        # No request scheduled that one (its record has no caller): only an admin sees it.
        unowned = events.http_api_v2("GET", "/tasks/doc-that-is-not-there", headers=AUTHORIZED)
        assert function.invoke(unowned)[0]["statusCode"] == 404
        status, _ = function.invoke(
            events.http_api_v2("GET", "/tasks/doc-that-is-not-there", headers=events.bearer(ADMIN_API_KEY))
        )
        body = events.response_json(status)
        assert (body["state"], body["attempts"]) == ("retrying", 1), body
        assert body["error"].startswith("FileNotFoundError")
    finally:
        function.close()


def _receive_all(sqs: Any, queue_url: str, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    """Receive `count` messages (a receive may return fewer than are there)."""
    received: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(received) < count and time.monotonic() < deadline:
        received += sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        )
    assert len(received) == count, received
    return received
