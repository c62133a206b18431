"""Liveness and readiness probes."""

import asyncio
import time
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ...errors import ErrorEnvelope, error_response
from ...tasks import TaskService, TaskState
from ...tasks.ledger import describe_error

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class TaskCounters(BaseModel):
    """Records in each state, as the shared store holds them now: the same answer from every
    process and host (final records count until their retention ends)."""

    queued: int
    retrying: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    tasks: TaskCounters


@router.get("/health")
async def health() -> Health:
    """Liveness: the process serves requests. Checks nothing else, so it never flaps."""
    return Health()


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": ErrorEnvelope, "description": "A dependency is not ready"}},
)
async def ready(request: Request) -> Readiness | JSONResponse:
    """Readiness: the task store answers and takes writes, and the task runner takes work."""
    service: TaskService = request.app.state.tasks
    problems: list[dict[str, str]] = []
    try:
        await asyncio.to_thread(service.store.ping)
    except Exception as error:
        problems.append({"check": "task_store", "error": describe_error(error)})
    else:
        await asyncio.to_thread(service.ledger.probe_writes)
        outage = service.ledger.health.outage
        if outage is not None:
            failing_for = time.time() - outage.since
            problems.append(
                {
                    "check": "task_store",
                    "error": f"writes failing for {failing_for:.1f} s: {outage.error}",
                }
            )
    runner_problem = await service.runner.readiness()
    if runner_problem is not None:
        problems.append({"check": "task_runner", "error": runner_problem})
    counts = None
    if not problems:
        try:
            counts = await asyncio.to_thread(service.store.count_states)
        except Exception as error:
            problems.append({"check": "task_store", "error": describe_error(error)})
    if problems or counts is None:
        return error_response(
            503,
            "not_ready",
            "The service is not ready.",
            details=problems,
            headers={"Retry-After": str(service.retry_after)},
        )
    return Readiness(
        tasks=TaskCounters(**{state.value: counts.get(state, 0) for state in TaskState})
    )
