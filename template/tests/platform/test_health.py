"""Liveness never checks dependencies; readiness does."""

import threading

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
    counts = body["tasks"]
    assert set(counts) == {"queued", "retrying", "running", "succeeded", "failed", "cancelled"}
    assert set(counts.values()) == {0}  # a fresh store holds no record


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


def test_ready_reads_the_counts_off_the_event_loop(client: TestClient) -> None:
    # They are read from the store (Redis, PostgreSQL: a network call): on the loop, that would
    # stall every request.
    store = client.app.state.tasks.store  # type: ignore[attr-defined]
    count_states = store.count_states
    threads: list[int] = []

    def counts() -> object:
        threads.append(threading.get_ident())
        return count_states()

    store.count_states = counts
    assert client.get("/ready").status_code == 200
    loop_thread = client.portal.call(threading.get_ident)  # type: ignore[union-attr]
    assert threads
    assert loop_thread not in threads
