"""Task status: what happened to the work a request scheduled."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel

from ...auth import CurrentCaller
from ...errors import ErrorEnvelope
from ...tasks import TaskRecord, TaskService, TaskState
from ...tasks.models import TASK_ID_PATTERN

router = APIRouter(prefix="/tasks", tags=["tasks"])


class CallbackAttempt(BaseModel):
    attempt: int
    at: datetime
    # The receiver's HTTP status; null when it did not answer (`error` says why).
    status: int | None
    error: str | None


class CallbackStatus(BaseModel):
    """Where the outcome is POSTed once the task is final, and each attempt so far."""

    url: str
    deliveries: list[CallbackAttempt]


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
    # With a `callback_url`: where the outcome goes, and each delivery attempt; otherwise null.
    callback: CallbackStatus | None = None

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
            callback=_callback_of(record),
        )


@router.get(
    "",
    summary="Recent tasks, newest first (state=failed lists the dead letters)",
    responses={503: {"model": ErrorEnvelope, "description": "The task store is unavailable"}},
)
def list_tasks(
    request: Request,
    caller: CurrentCaller,
    state: TaskState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[TaskStatus]:
    """The caller's own tasks; an admin's list has everyone's."""
    service: TaskService = request.app.state.tasks
    mine = None if caller.is_admin else caller.id
    # Without their arguments, which a TaskStatus never shows: a list does not parse them.
    records = service.read(
        lambda store: store.recent(state=state, limit=limit, caller=mine, with_arguments=False)
    )
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
def get_task(
    request: Request,
    # Anything else is answered 422 before the store is asked, without repeating it.
    task_id: Annotated[str, Path(pattern=TASK_ID_PATTERN)],
    caller: CurrentCaller,
) -> TaskStatus:
    service: TaskService = request.app.state.tasks
    record = service.read(lambda store: store.get(task_id))
    # Another caller's task is answered exactly like one that does not exist: an id, however
    # unguessable, is not a permission.
    if record is None or not (caller.is_admin or record.caller == caller.id):
        # The id is not repeated: the client has it, and an answer should not carry its input.
        raise HTTPException(status_code=404, detail="no task has this id")
    return TaskStatus.of(record)


def _callback_of(record: TaskRecord) -> CallbackStatus | None:
    if record.callback_url is None:
        return None
    return CallbackStatus(
        url=record.callback_url,
        deliveries=[
            CallbackAttempt(attempt=d.attempt, at=d.at, status=d.status, error=d.error)
            for d in record.callback_deliveries
        ],
    )
