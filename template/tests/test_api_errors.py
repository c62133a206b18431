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
    assert "does-not-exist" in error["message"]
    assert error["request_id"] == response.headers["X-Request-ID"]


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
