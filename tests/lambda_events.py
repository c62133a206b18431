"""Lambda events as AWS sends them (the fields Mangum and the handler read), built for the tests.

Shapes follow AWS's documented samples: API Gateway HTTP API (payload format 2.0), REST API
(1.0), Application Load Balancer, and SQS. `headers` are added to the request's own (say
`bearer(key)`); `jwt_claims` is what an HTTP API's JWT authorizer verified and passes on.
"""

import base64
import json
import uuid
from collections.abc import Mapping
from typing import Any

TARGET_GROUP_ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/service/0123456789abcdef"


def _body(body: Any) -> tuple[str | None, dict[str, str]]:
    if body is None:
        return None, {}
    return json.dumps(body), {"content-type": "application/json"}


def bearer(credentials: str) -> dict[str, str]:
    """The header that carries an API key or a JWT."""
    return {"authorization": f"Bearer {credentials}"}


def http_api_v2(
    method: str,
    path: str,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    jwt_claims: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    text, body_headers = _body(body)
    all_headers = {
        "host": "abc123.execute-api.us-east-1.amazonaws.com",
        "x-forwarded-proto": "https",
        **body_headers,
        # API Gateway passes HTTP API header names in lower case.
        **{name.lower(): value for name, value in (headers or {}).items()},
    }
    context: dict[str, Any] = {}
    if jwt_claims is not None:
        scopes = str(jwt_claims.get("scope", "")).split()
        context["authorizer"] = {"jwt": {"claims": dict(jwt_claims), "scopes": scopes or None}}
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": all_headers,
        "requestContext": {
            **context,
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "198.51.100.7",
                "userAgent": "test",
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": "$default",
            "stage": "$default",
            "time": "21/Nov/2026:10:00:00 +0000",
            "timeEpoch": 1795000000000,
        },
        "body": text,
        "isBase64Encoded": False,
    }


def rest_api_v1(method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    text, body_headers = _body(body)
    headers = {
        "Host": "abc123.execute-api.us-east-1.amazonaws.com",
        "X-Forwarded-Proto": "https",
        **body_headers,
        **(headers or {}),
    }
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "httpMethod": method,
            "identity": {"sourceIp": "198.51.100.7", "userAgent": "test"},
            "path": f"/Prod{path}",
            "protocol": "HTTP/1.1",
            "requestId": uuid.uuid4().hex,
            "resourcePath": "/{proxy+}",
            "stage": "Prod",
        },
        "body": text,
        "isBase64Encoded": False,
    }


def alb(method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    text, body_headers = _body(body)
    return {
        "requestContext": {"elb": {"targetGroupArn": TARGET_GROUP_ARN}},
        "httpMethod": method,
        "path": path,
        "queryStringParameters": {},
        "headers": {
            "host": "service.example.com",
            "x-forwarded-proto": "https",
            **body_headers,
            **{name.lower(): value for name, value in (headers or {}).items()},
        },
        "body": base64.b64encode(text.encode()).decode() if text else "",
        "isBase64Encoded": bool(text),
    }


def sqs(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """An SQS event from messages as ReceiveMessage returns them (the event source's job)."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": {
                    "ApproximateReceiveCount": message.get("Attributes", {}).get("ApproximateReceiveCount", "1"),
                    "SentTimestamp": message.get("Attributes", {}).get("SentTimestamp", "0"),
                },
                "messageAttributes": {},
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
            for message in messages
        ]
    }


def response_json(response: dict[str, Any]) -> Any:
    """The JSON body of a handler's HTTP answer (base64-decoded when flagged)."""
    body = response.get("body") or ""
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    return json.loads(body) if body else None
