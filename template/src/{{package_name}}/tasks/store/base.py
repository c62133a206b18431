"""The one interface every task store keeps."""

from datetime import datetime
from typing import Protocol

from ..models import IdempotencyClaim, TaskProgress, TaskRecord, TaskState


class TaskStore(Protocol):
    """Where task records live. Implementations must be safe to call from any thread.

    Every store is opened with a retention (`TASK_RETENTION_SECONDS`; None keeps records forever)
    and deletes a final (succeeded, failed, cancelled) record once that long has passed since it
    finished (`TaskRecord.expires_at`); an unfinished record is never deleted. Where the database
    expires entries itself (Redis, DynamoDB) the store marks each final record as it saves it; the
    others (SQLite, memory) delete in `purge_expired`, which the in-process runners call on every
    beat.
    """

    def save(self, record: TaskRecord) -> None:
        """Insert or replace the record (each record has one writer at a time: its runner).

        Never clears `cancel_requested`: a stored request to cancel outlives the runner's later
        writes of its (older) copy of the record.
        """

    def get(self, task_id: str) -> TaskRecord | None:
        """The record, or None for an unknown id."""

    def recent(
        self,
        state: TaskState | None = None,
        limit: int = 50,
        caller: str | None = None,
        *,
        with_arguments: bool = True,
    ) -> list[TaskRecord]:
        """The newest records first, optionally only those in `state` or of `caller` (an index
        serves each: a caller's list never scans other callers' records).

        `with_arguments=False` leaves every record's `args` and `kwargs` empty, unread: a list
        that does not show them (`GET /tasks`) must not pay for parsing them.
        """

    def request_cancel(self, task_id: str) -> TaskRecord | None:
        """Set the record's `cancel_requested` (atomically, touching nothing else) and return the
        record as stored afterwards; None for an unknown id."""

    def save_progress(self, task_id: str, progress: TaskProgress, version: int) -> None:
        """Store a running task's progress and version, touching nothing else of its record."""

    def claim_idempotency_key(self, claim: IdempotencyClaim) -> IdempotencyClaim | None:
        """Store `claim` unless its (caller, key) is claimed already: atomic (a unique index, SET
        NX, a conditional put), so of two requests racing with one key exactly one wins. None
        when `claim` was stored, else the claim that holds the key."""

    def release_idempotency_key(self, caller: str, key: str, task_id: str) -> None:
        """Delete the claim of (caller, key) if it still names `task_id` (its request failed
        before storing the task, or its task record is gone); else leave it."""

    def claim_schedule_slot(self, schedule: str, slot: datetime) -> bool:
        """True for exactly one caller per (schedule, slot), however many processes ask: the
        lease that makes a periodic task fire once per slot across processes and hosts."""

    def heartbeat(self, owner: str) -> None:
        """Say that the runner `owner` is alive."""

    def retire(self, owner: str) -> None:
        """Say that `owner` stopped: its unfinished records may be claimed at once."""

    def claim_orphans(self, owner: str, stale_after: float, limit: int) -> list[TaskRecord]:
        """Hand `owner` up to `limit` unfinished records whose owner is gone.

        An owner is gone when it retired or its last heartbeat is older than `stale_after`
        seconds. Claiming counts as a heartbeat of `owner` (so what it claims is not claimed
        back from it), and is atomic: two live runners never get the same record.
        """

    def purge_expired(self, limit: int) -> int:
        """Delete up to `limit` records past their retention; say how many were deleted."""

    def count_states(self) -> dict[TaskState, int]:
        """How many records are in each state now (a state with none may be left out): one
        read an index answers, made for a metrics scrape or a readiness probe."""

    def ping(self) -> None:
        """Raise if the store cannot be used."""

    def close(self) -> None: ...
