"""Liveness never checks dependencies; readiness does."""

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient


def test_health_is_ok(client: TestClient) -> None:
    response = client.get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_ready_reports_task_counters(client: TestClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert set(body["tasks"]) == {"queued", "running", "succeeded", "failed", "retried"}


def test_ready_is_503_when_the_task_store_fails(
    app: FastAPI, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(app.state.tasks.store, "ping", broken)
    response = client.get("/ready")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "not_ready"
    assert error["details"] == [{"check": "task_store", "error": "OSError: disk gone"}]
    assert client.get("/health").status_code == 200
