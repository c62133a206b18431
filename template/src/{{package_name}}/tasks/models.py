"""What a task is, as stored: its state machine and its record."""

import enum
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any


class TaskState(enum.StrEnum):
    """queued -> running -> (retrying -> running)* -> succeeded | failed."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (TaskState.SUCCEEDED, TaskState.FAILED)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_task_id() -> str:
    return uuid.uuid4().hex


# What a task id may look like: the ids issued (32 hex digits) and room for ids of another
# scheme, but nothing a client could use to push long or odd text into responses and logs.
TASK_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


@dataclass
class TaskRecord:
    """One scheduled call of a registered task, from acceptance to its final state.

    `args`/`kwargs` are JSON values, so a record can be stored, recovered after a crash and sent
    to another process. A failed record is the dead letter: it keeps its arguments and last error.
    """

    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    max_attempts: int
    task_id: str = field(default_factory=new_task_id)
    state: TaskState = TaskState.QUEUED
    attempts: int = 0
    result: Any = None
    error: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # When a retrying task is due to run again.
    next_attempt_at: datetime | None = None
    # The runner that may run this record; None when a broker owns its delivery.
    owner: str | None = None
    request_id: str | None = None
    # Who scheduled it (auth.py's Caller.id): only that caller (or an admin) may read it.
    caller: str | None = None

    def expires_at(self, retention: timedelta | None) -> datetime | None:
        """When a store that keeps records for `retention` deletes this one.

        Never while it is unfinished, whatever its age, nor when `retention` is None.
        """
        if retention is None or not self.state.is_final or self.finished_at is None:
            return None
        return self.finished_at + retention
