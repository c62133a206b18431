"""The service in a real uvicorn process: crashes, restarts, several workers, signals."""

import contextlib
import itertools
import json
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from ..support import FINAL_STATES, wait_until
from .live_server import LiveServer, live_server, local_runner_env, store_states

pytestmark = pytest.mark.slow

StartServer = Callable[..., LiveServer]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start servers on one task store; each is killed (kill -9) at the end of the test."""
    with contextlib.ExitStack() as stack:
        numbers = itertools.count()

        def start(*uvicorn_args: str, **env: str) -> LiveServer:
            environment = {
                **local_runner_env(tmp_path),
                "TASK_CONCURRENCY": "2",
                "TASK_HEARTBEAT_INTERVAL": "0.2",
                "TASK_OWNER_TTL": "1",
                **env,
            }
            log_path = tmp_path / f"server-{next(numbers)}.log"
            return stack.enter_context(
                live_server(*uvicorn_args, env=environment, log_path=log_path)
            )

        yield start


def schedule_naps(server: LiveServer, count: int, seconds: float) -> list[str]:
    ids = []
    for _ in range(count):
        response = httpx.post(f"{server.base_url}/nap", params={"seconds": seconds}, timeout=5)
        assert response.status_code == 202, response.text
        ids.append(response.json()["task_id"])
    return ids


def final_states(server: LiveServer, ids: list[str], timeout: float = 30.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = {task_id: server.task_status(task_id)["state"] for task_id in ids}
        if all(state in FINAL_STATES for state in states.values()):
            return states
        time.sleep(0.1)
    raise AssertionError(f"tasks not final after {timeout}s: {states}")


def test_tasks_accepted_before_a_kill_9_run_after_the_restart(start_server: StartServer) -> None:
    first = start_server()
    ids = schedule_naps(first, count=12, seconds=0.5)
    first.kill()

    second = start_server()
    states = final_states(second, ids)
    assert set(states.values()) == {"succeeded"}, states


def test_two_workers_answer_for_each_others_tasks(start_server: StartServer) -> None:
    server = start_server("--workers", "2")
    ids = schedule_naps(server, count=20, seconds=0.05)
    states = final_states(server, ids)
    assert set(states.values()) == {"succeeded"}
    # Many reads land on both workers; every one agrees.
    for task_id in ids:
        answers = {server.task_status(task_id)["state"] for _ in range(4)}
        assert answers == {"succeeded"}
    answering_pids = {
        line["pid"]
        for line in server.log_lines()
        if line.get("message") == "request" and str(line.get("path", "")).startswith("/tasks/")
    }
    assert len(answering_pids) == 2, "both worker processes should have answered status reads"


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_drains_tasks_in_flight(
    start_server: StartServer, signal_number: int
) -> None:
    server = start_server()
    ids = schedule_naps(server, count=6, seconds=0.3)
    server.process.send_signal(signal_number)
    # uvicorn re-raises the signal once it has shut down gracefully, so it shows in the status.
    assert server.process.wait(timeout=20) in (0, -signal_number)
    stopped = [line for line in server.log_lines() if line.get("message") == "service stopped"]
    assert stopped
    assert stopped[0]["drain_complete"] is True

    restarted = start_server()
    assert set(final_states(restarted, ids, timeout=5).values()) == {"succeeded"}


def test_a_drain_deadline_reports_unfinished_tasks_by_id(start_server: StartServer) -> None:
    server = start_server(TASK_DRAIN_TIMEOUT="0.5")
    ids = schedule_naps(server, count=4, seconds=3)
    time.sleep(0.3)
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=20)
    reports = [line for line in server.log_lines() if "unfinished_task_ids" in line]
    assert reports, server.log_text()
    assert set(reports[0]["unfinished_task_ids"]) == set(ids)

    # Nothing is lost: the next start runs them again.
    restarted = start_server()
    assert set(final_states(restarted, ids, timeout=40).values()) == {"succeeded"}


def lines_about(server: LiveServer, task_id: str) -> list[dict[str, Any]]:
    return [line for line in server.log_lines() if line.get("task_id") == task_id]


@pytest.mark.parametrize(
    "signal_number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"]
)
def test_a_stop_signal_with_100_tasks_in_flight_finishes_or_names_each_one(
    start_server: StartServer, tmp_path: Path, signal_number: int
) -> None:
    # 100 tasks of 0.5 s on 4 slots need 12.5 s; the drain deadline gives them 1 s, so some finish
    # and the rest must be named in the log, each one of the 100 accounted for.
    server = start_server(TASK_CONCURRENCY="4", TASK_DRAIN_TIMEOUT="1")
    ids = schedule_naps(server, count=100, seconds=0.5)
    signalled = time.monotonic()
    server.process.send_signal(signal_number)
    assert server.process.wait(timeout=30) in (0, -signal_number)
    print(f"stopped {time.monotonic() - signalled:.1f}s after the signal")

    reports = [line for line in server.log_lines() if "unfinished_task_ids" in line]
    reported = set(reports[0]["unfinished_task_ids"]) if reports else set()
    states = store_states(tmp_path, ids)
    finished = {task_id for task_id, state in states.items() if state == "succeeded"}
    assert reported | finished == set(ids), "a task neither finished nor was reported"
    assert reported & finished == set()
    assert reported, "the deadline is too short for all of them: some must be reported"
    assert {states[task_id] for task_id in reported} <= {"queued", "running"}
    stopped = [line for line in server.log_lines() if line.get("message") == "service stopped"]
    assert stopped[0]["unfinished"] == len(reported)
    # Every finished one logged its success under its own id.
    for task_id in finished:
        assert any(line["message"] == "task succeeded" for line in lines_about(server, task_id))

    restarted = start_server(TASK_CONCURRENCY="16")
    assert set(final_states(restarted, sorted(reported), timeout=60).values()) == {"succeeded"}


def test_a_task_that_raises_ends_failed_with_its_traceback_logged(
    start_server: StartServer,
) -> None:
    server = start_server()
    response = httpx.post(f"{server.base_url}/boom", params={"message": "disk on fire"}, timeout=5)
    assert response.status_code == 202
    task_id = response.json()["task_id"]
    assert final_states(server, [task_id]) == {task_id: "failed"}
    status = server.task_status(task_id)
    assert status["attempts"] == 2
    assert status["error"] == "RuntimeError: disk on fire"
    assert "Traceback" not in status["error"]

    lines = lines_about(server, task_id)
    retried = [line for line in lines if line["message"] == "task attempt failed; retrying"]
    dead = [line for line in lines if line["message"] == "task failed; kept as dead letter"]
    assert len(retried) == 1
    assert len(dead) == 1
    assert "RuntimeError: disk on fire" in dead[0]["exception"]
    assert "Traceback" in dead[0]["exception"]
    dead_letters = httpx.get(f"{server.base_url}/tasks", params={"state": "failed"}, timeout=5)
    assert [entry["task_id"] for entry in dead_letters.json()] == [task_id]


@pytest.mark.parametrize("run_async", [False, True], ids=["sync", "async"])
def test_a_task_that_hangs_past_its_timeout_ends_failed_and_logged(
    start_server: StartServer, run_async: bool
) -> None:
    server = start_server()
    response = httpx.post(
        f"{server.base_url}/hang",
        params={"seconds": 3, "run_async": run_async},
        timeout=5,
    )
    assert response.status_code == 202
    task_id = response.json()["task_id"]
    # The timeout is 0.3 s: the task is failed long before the hang would have ended.
    assert final_states(server, [task_id], timeout=2.5) == {task_id: "failed"}
    status = server.task_status(task_id)
    assert status["error"].startswith("TimeoutError")
    assert status["attempts"] == 1
    dead = [
        line
        for line in lines_about(server, task_id)
        if line["message"] == "task failed; kept as dead letter"
    ]
    assert len(dead) == 1
    # The service still answers and still runs other work.
    assert set(final_states(server, schedule_naps(server, count=2, seconds=0)).values()) == {
        "succeeded"
    }


def test_a_task_cut_off_by_shutdown_stays_recorded_and_is_named_in_the_log(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(TASK_DRAIN_TIMEOUT="0.3")
    [task_id] = schedule_naps(server, count=1, seconds=2)
    wait_until(
        lambda: server.task_status(task_id)["state"] == "running",
        timeout=5,
        failure="the task never started",
    )
    server.process.send_signal(signal.SIGTERM)
    # A clean exit, even with a task still running on a worker thread: no crash at finalization.
    assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)

    assert any(line["message"] == "task started" for line in lines_about(server, task_id))
    reports = [line for line in server.log_lines() if "unfinished_task_ids" in line]
    assert reports[0]["unfinished_task_ids"] == [task_id]
    # Recorded as it was when the process stopped, so the next start knows to run it again.
    assert store_states(tmp_path, [task_id]) == {task_id: "running"}
    restarted = start_server()
    assert final_states(restarted, [task_id], timeout=30) == {task_id: "succeeded"}


def test_a_body_declared_too_large_is_answered_413_before_a_byte_of_it_is_sent(
    start_server: StartServer,
) -> None:
    server = start_server()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        # Headers that announce 10 GiB, and none of the body: a server that waited for the body
        # before answering would leave this read to time out.
        connection.sendall(
            b"POST /nap?seconds=0 HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: 10737418240\r\n\r\n"
        )
        answer = b""
        # Read until the server closes the connection, which it does rather than read the body.
        while received := connection.recv(65536):
            answer += received
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), head
    error = json.loads(body)["error"]
    assert error["code"] == "content_too_large"
    assert f"x-request-id: {error['request_id']}".lower().encode() in head.lower()
    # The endpoint never ran: no task was scheduled.
    assert httpx.get(f"{server.base_url}/tasks", timeout=5).json() == []
