"""Every error answers in one envelope, with the request id, and never with a stack trace."""

import logging

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient


def boom() -> None:
    raise RuntimeError("secret internals: password=hunter2")


@pytest.fixture
def failing_client(app: FastAPI) -> TestClient:
    router = APIRouter()
    router.add_api_route("/boom", boom)
    app.include_router(router)
    return TestClient(app, raise_server_exceptions=False)


def test_unknown_task_is_404_in_the_envelope(client: TestClient) -> None:
    response = client.get("/tasks/does-not-exist")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "not_found"
    # The id is not repeated back: an answer never carries its input.
    assert "does-not-exist" not in response.text
    assert error["request_id"] == response.headers["X-Request-ID"]


@pytest.mark.parametrize(
    "task_id",
    ["a" * 65, "b" * 10_000, "has.a.dot", "tab%09here", "%00", "\u2028", "\U0001f600"],
    ids=["65 chars", "10000 chars", "dot", "tab", "nul", "line separator", "emoji"],
)
def test_ids_unlike_any_issued_are_refused_unechoed_and_unlogged(
    client: TestClient, caplog: pytest.LogCaptureFixture, task_id: str
) -> None:
    with caplog.at_level(logging.INFO):
        response = client.get(f"/tasks/{task_id}")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert [detail["loc"] for detail in error["details"]] == [["path", "task_id"]]
    assert task_id not in response.text
    if len(task_id) > 64:
        # The service's lines, not those of the test's HTTP client.
        logged = [
            record.getMessage() + repr(record.__dict__)
            for record in caplog.records
            if not record.name.startswith("httpx")
        ]
        assert logged, "the request is logged"
        assert not any(task_id in line for line in logged), "an overlong id is logged whole"


def test_the_longest_id_is_looked_up(client: TestClient) -> None:
    response = client.get(f"/tasks/{'c' * 64}")
    assert response.status_code == 404
    assert "c" * 64 not in response.text


def test_unknown_route_is_404_in_the_envelope(client: TestClient) -> None:
    response = client.get("/no/such/route")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_wrong_method_is_405_in_the_envelope(client: TestClient) -> None:
    response = client.delete("/health")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_validation_errors_are_422_with_details_and_no_echoed_input(client: TestClient) -> None:
    response = client.get("/tasks", params={"limit": "lots", "state": "sleeping"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    locations = sorted(tuple(detail["loc"]) for detail in error["details"])
    assert locations == [("query", "limit"), ("query", "state")]
    assert "lots" not in response.text


def test_unhandled_errors_are_500_without_internals(
    failing_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with failing_client, caplog.at_level(logging.ERROR):
        response = failing_client.get("/boom", headers={"X-Request-ID": "trace-me-1"})
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "code": "internal_error",
            "message": "An internal error occurred.",
            "request_id": "trace-me-1",
        }
    }
    assert "hunter2" not in response.text
    assert "Traceback" not in response.text
    logged = [
        r for r in caplog.records if r.exc_info and getattr(r, "request_id", None) == "trace-me-1"
    ]
    assert logged, "the traceback must be logged with the request id"


def test_a_plain_request_id_is_kept_and_a_hostile_one_replaced(client: TestClient) -> None:
    kept = client.get("/health", headers={"X-Request-ID": "abc-123.DEF_4"})
    assert kept.headers["X-Request-ID"] == "abc-123.DEF_4"
    replaced = client.get("/health", headers={"X-Request-ID": "x" * 500})
    assert replaced.headers["X-Request-ID"] != "x" * 500
    assert len(replaced.headers["X-Request-ID"]) == 32
