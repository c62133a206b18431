"""What a task is, as stored: its state machine and its record."""

import enum
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any


class TaskState(enum.StrEnum):
    """queued -> running -> (retrying -> running)* -> succeeded | failed | cancelled.

    `cancelled` is reached from `queued` or `retrying` (the task never starts again) or from
    `running` when the attempt stops because cancellation was asked for (`DELETE /tasks/{id}`).
    """

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED})


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_task_id() -> str:
    return uuid.uuid4().hex


# What a task id may look like: the ids issued (32 hex digits) and room for ids of another
# scheme, but nothing a client could use to push long or odd text into responses and logs.
TASK_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


@dataclass
class TaskProgress:
    """What a running task last said of its progress (`report_progress`)."""

    done: float
    total: float | None = None
    message: str | None = None
    updated_at: datetime = field(default_factory=utcnow)


@dataclass
class CallbackDelivery:
    """One attempt to POST a task's completion to its callback URL."""

    attempt: int
    at: datetime
    # The HTTP status the receiver answered, or None when no answer came (`error` says why).
    status: int | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class IdempotencyClaim:
    """A caller's `Idempotency-Key`, bound to the task its first request scheduled.

    `fingerprint` is a digest of the request (method, path, body): the same key with another
    request is refused (422). A claim whose task record is not stored yet is a request still in
    flight (409).
    """

    caller: str
    key: str
    fingerprint: str
    task_id: str
    created_at: datetime = field(default_factory=utcnow)


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
    # When a retrying task is due to run again, or a delayed (`queued`) task is due to start.
    next_attempt_at: datetime | None = None
    # The runner that may run this record; None when a broker owns its delivery.
    owner: str | None = None
    request_id: str | None = None
    # Who scheduled it (auth.py's Caller.id): only that caller (or an admin) may read it.
    caller: str | None = None
    # Set by `DELETE /tasks/{id}` (TaskStore.request_cancel). A store's `save` never clears it:
    # the runner's writes of the same record cannot undo a cancellation asked for meanwhile.
    cancel_requested: bool = False
    progress: TaskProgress | None = None
    # The `Idempotency-Key` the scheduling request carried (its claim names this task).
    idempotency_key: str | None = None
    # Where to POST the outcome once the task is final (an allow-listed URL), and each attempt.
    callback_url: str | None = None
    callback_deliveries: list[CallbackDelivery] = field(default_factory=list)
    # The periodic schedule slot this record was fired for (`@task(schedule=...)`), if any.
    schedule_slot: datetime | None = None
    # Counts the record's changes (each save of a transition, each progress report): the id of
    # the Server-Sent Event that shows this version, so a client resumes after the last it saw.
    version: int = 0
    # The W3C trace context (`traceparent`) of the request that scheduled it: its attempts'
    # spans and log lines join that request's trace (telemetry/tracing.py).
    traceparent: str | None = None

    def due_in(self, now: datetime | None = None) -> float:
        """Seconds until this record may start (a delayed task, a retry's backoff); 0 when due."""
        if self.next_attempt_at is None:
            return 0.0
        return max(0.0, (self.next_attempt_at - (now or utcnow())).total_seconds())

    def expires_at(self, retention: timedelta | None) -> datetime | None:
        """When a store that keeps records for `retention` deletes this one.

        Never while it is unfinished, whatever its age, nor when `retention` is None.
        """
        if retention is None or not self.state.is_final or self.finished_at is None:
            return None
        return self.finished_at + retention
