"""Task status: what happened to the work a request scheduled."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel

from ...errors import ErrorEnvelope
from ...tasks import TaskRecord, TaskService, TaskState

router = APIRouter(prefix="/tasks", tags=["tasks"])


class TaskStatus(BaseModel):
    task_id: str
    name: str
    state: TaskState
    attempts: int
    # Attempts the task gets in all: a client can tell a retrying task's last try from the rest.
    max_attempts: int
    result: Any
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    # While `retrying`: when the next attempt is due (its backoff ends); otherwise null.
    next_attempt_at: datetime | None

    @classmethod
    def of(cls, record: TaskRecord) -> "TaskStatus":
        return cls(
            task_id=record.task_id,
            name=record.name,
            state=record.state,
            attempts=record.attempts,
            max_attempts=record.max_attempts,
            result=record.result,
            error=record.error,
            created_at=record.created_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
            next_attempt_at=(
                record.next_attempt_at if record.state is TaskState.RETRYING else None
            ),
        )


@router.get(
    "",
    summary="Recent tasks, newest first (state=failed lists the dead letters)",
    responses={503: {"model": ErrorEnvelope, "description": "The task store is unavailable"}},
)
def list_tasks(
    request: Request,
    state: TaskState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[TaskStatus]:
    service: TaskService = request.app.state.tasks
    records = service.read(lambda store: store.recent(state=state, limit=limit))
    return [TaskStatus.of(record) for record in records]


@router.get(
    "/{task_id}",
    responses={
        404: {
            "model": ErrorEnvelope,
            "description": "No task has this id, or its record outlived TASK_RETENTION_SECONDS",
        },
        503: {"model": ErrorEnvelope, "description": "The task store is unavailable"},
    },
)
def get_task(request: Request, task_id: str) -> TaskStatus:
    service: TaskService = request.app.state.tasks
    record = service.read(lambda store: store.get(task_id))
    if record is None:
        raise HTTPException(status_code=404, detail=f"no task has the id {task_id!r}")
    return TaskStatus.of(record)
