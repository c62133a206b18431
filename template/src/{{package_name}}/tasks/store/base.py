"""The one interface every task store keeps."""

from typing import Protocol

from ..models import TaskRecord, TaskState


class TaskStore(Protocol):
    """Where task records live. Implementations must be safe to call from any thread."""

    def save(self, record: TaskRecord) -> None:
        """Insert or replace the record (each record has one writer at a time: its runner)."""

    def get(self, task_id: str) -> TaskRecord | None:
        """The record, or None for an unknown id."""

    def recent(self, state: TaskState | None = None, limit: int = 50) -> list[TaskRecord]:
        """The newest records first, optionally only those in `state`."""

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

    def ping(self) -> None:
        """Raise if the store cannot be used."""

    def close(self) -> None: ...
