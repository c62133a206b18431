"""A local stand-in for a deployed stack's queue pair and task table, on moto's server mode.

The tables and queues are made from the rendered template.yaml's own definitions, so a table the
code cannot use fails here. Used by tests/test_lambda_runtime.py and bench/deployment.py.
"""

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import yaml

from .images import http, wait_until
from .rendering import free_port

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}


@dataclass
class LocalAws:
    """moto's server on a loopback port, with the queue, dead-letter queue and table of a stack."""

    endpoint: str
    queue_url: str
    queue_arn: str
    table: str

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION, **_lower_keys(CREDENTIALS))


def _lower_keys(credentials: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in credentials.items()}


@contextlib.contextmanager
def moto_server(host: str = "127.0.0.1") -> Iterator[str]:
    """moto's server mode (local SQS and DynamoDB) on a free port of `host`; yields its endpoint."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "--host", host, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://{host}:{port}"
    try:
        wait_until(lambda: http("GET", f"{endpoint}/moto-api/").status < 500, 30, what="moto server")
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


def sam_resources(project: Path) -> dict[str, Any]:
    """template.yaml's Resources, with CloudFormation's !Ref/!GetAtt/!Sub tags read as plain values."""

    class CloudFormationLoader(yaml.SafeLoader):
        pass

    def any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node)
        return loader.construct_mapping(node)  # type: ignore[arg-type]

    CloudFormationLoader.add_multi_constructor("!", any_tag)
    template = yaml.load((project / "template.yaml").read_text(), Loader=CloudFormationLoader)
    return dict(template["Resources"])


def local_stack(endpoint: str, project: Path, name: str) -> LocalAws:
    """The queue pair and the table as template.yaml declares them (its table definition is used
    as is, so a table the code cannot use fails here)."""
    resources = sam_resources(project)
    table_properties = {
        key: value
        for key, value in resources["TaskTable"]["Properties"].items()
        if key in {"AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "BillingMode"}
    }
    aws = LocalAws(endpoint=endpoint, queue_url="", queue_arn="", table=f"{name}-tasks")
    dynamodb = aws.client("dynamodb")
    dynamodb.create_table(TableName=aws.table, **table_properties)
    sqs = aws.client("sqs")
    dead_letters = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dead_letter_arn = sqs.get_queue_attributes(QueueUrl=dead_letters, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    queue_properties = resources["TaskQueue"]["Properties"]
    redrive = {"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": "3"}
    aws.queue_url = sqs.create_queue(
        QueueName=f"{name}-tasks",
        Attributes={
            "VisibilityTimeout": str(queue_properties["VisibilityTimeout"]),
            "RedrivePolicy": json.dumps(redrive),
        },
    )["QueueUrl"]
    aws.queue_arn = sqs.get_queue_attributes(QueueUrl=aws.queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return aws
