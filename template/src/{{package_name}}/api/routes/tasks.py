"""Task status: what happened to the work a request scheduled."""

import logging
from datetime import datetime
from typing import Annotated, Any, NoReturn

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, Field

from ...auth import Caller, CurrentCaller
from ...errors import ErrorEnvelope
from ...tasks import TaskRecord, TaskService, TaskState
from ...tasks.models import TASK_ID_PATTERN

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/tasks", tags=["tasks"])


class Progress(BaseModel):
    """What the running task last reported (`report_progress`)."""

    done: float
    total: float | None
    message: str | None
    updated_at: datetime


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
    state: TaskState = Field(
        description="queued -> running -> (retrying -> running)* -> succeeded | failed | "
        "cancelled. `cancelled` (final): its cancellation was requested (DELETE /tasks/{id}) "
        "before it started (again), or its attempt stopped because of it."
    )
    attempts: int
    # Attempts the task gets in all: a client can tell a retrying task's last try from the rest.
    max_attempts: int
    result: Any
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime | None = Field(
        description="While `retrying`: when the next attempt is due (its backoff ends); while "
        "`queued`: when a delayed task is due to start; otherwise null."
    )
    progress: Progress | None = Field(
        default=None, description="What the task last reported of its progress, if anything."
    )
    cancel_requested: bool = Field(
        default=False,
        description="Cancellation was requested: a running task stops at its next check (a "
        "coroutine task at its next await).",
    )
    callback: CallbackStatus | None = Field(
        default=None,
        description="With a `callback_url`: where the outcome is POSTed and each delivery "
        "attempt so far; otherwise null.",
    )

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
                record.next_attempt_at
                if record.state in (TaskState.QUEUED, TaskState.RETRYING)
                else None
            ),
            progress=(
                Progress(
                    done=record.progress.done,
                    total=record.progress.total,
                    message=record.progress.message,
                    updated_at=record.progress.updated_at,
                )
                if record.progress is not None
                else None
            ),
            cancel_requested=record.cancel_requested,
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
    return TaskStatus.of(_own_record(service, task_id, caller))


_NOT_FOUND = {
    "model": ErrorEnvelope,
    "description": "No task has this id, or its record outlived TASK_RETENTION_SECONDS",
}
_STORE_DOWN = {"model": ErrorEnvelope, "description": "The task store is unavailable"}


@router.delete(
    "/{task_id}",
    summary="Cancel a task",
    responses={
        200: {"model": TaskStatus, "description": "Cancelled: it will not start (again)"},
        202: {
            "model": TaskStatus,
            "description": "Running: asked to stop (cancel_requested); it ends `cancelled` at "
            "its next check, or at its next await for a coroutine task",
        },
        404: _NOT_FOUND,
        409: {"model": ErrorEnvelope, "description": "The task has already ended"},
        503: _STORE_DOWN,
    },
)
def cancel_task(
    request: Request,
    response: Response,
    task_id: Annotated[str, Path(pattern=TASK_ID_PATTERN)],
    caller: CurrentCaller,
) -> TaskStatus:
    """A queued or retrying task is cancelled at once and never starts (again); a running one
    is asked to stop. A task that already ended is left as it is (409)."""
    service: TaskService = request.app.state.tasks
    record = _own_record(service, task_id, caller)
    if record.state.is_final:
        _already_ended(record)
    # The flag first, then the state: an attempt beginning meanwhile reads the flag after it
    # wrote `running`, and stops before the call (tasks/attempt.py).
    flagged = service.read(lambda store: store.request_cancel(task_id))
    if flagged is None:
        raise HTTPException(status_code=404, detail="no task has this id")
    if flagged.state.is_final:
        _already_ended(flagged)
    try:
        service.runner.cancel(task_id)
    except Exception:
        logger.exception("the runner could not signal the cancellation; the record decides")
    if flagged.state in (TaskState.QUEUED, TaskState.RETRYING):
        service.read(lambda _: service.ledger.cancelled(flagged, once=True))
        return TaskStatus.of(flagged)
    response.status_code = status.HTTP_202_ACCEPTED
    return TaskStatus.of(flagged)


def _own_record(service: TaskService, task_id: str, caller: Caller) -> TaskRecord:
    record = service.read(lambda store: store.get(task_id))
    # Another caller's task is answered exactly like one that does not exist: an id, however
    # unguessable, is not a permission.
    if record is None or not (caller.is_admin or record.caller == caller.id):
        # The id is not repeated: the client has it, and an answer should not carry its input.
        raise HTTPException(status_code=404, detail="no task has this id")
    return record


def _already_ended(record: TaskRecord) -> NoReturn:
    raise HTTPException(status_code=409, detail=f"the task already {record.state.value}")


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
