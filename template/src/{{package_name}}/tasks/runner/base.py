"""The contract every task runner keeps; `tests/platform/contract/` checks it on each backend."""

import abc
import os
from dataclasses import dataclass

from ..models import TaskRecord


class QueueFullError(Exception):
    """Too many accepted tasks are waiting; the caller should answer 503 and retry later."""


class RunnerUnavailableError(Exception):
    """The runner cannot take work now (shutting down, broker unreachable)."""


@dataclass(frozen=True)
class RunnerCounters:
    """Gauges (queued, running) and totals since start (succeeded, failed, retried)."""

    queued: int
    running: int
    succeeded: int
    failed: int
    retried: int


@dataclass(frozen=True)
class DrainReport:
    """What a drain left behind: ids of tasks that were still queued or running."""

    unfinished: list[str]

    @property
    def complete(self) -> bool:
        return not self.unfinished


class TaskRunner(abc.ABC):
    """Runs registered tasks for the API.

    The scheduler calls `reserve()` while the request is handled (so a full queue can still be
    answered with 503), stores the record, and calls `submit()` once the response is sent.
    """

    #: Written into records this runner owns, so a live runner can recover them if this one
    #: dies. None when a broker, not this process, is responsible for delivery.
    owner: str | None = None

    @abc.abstractmethod
    async def start(self) -> None:
        """Begin taking work (called on the app's event loop at startup)."""

    @abc.abstractmethod
    def reserve(self) -> None:
        """Take a slot for one task, or raise QueueFullError / RunnerUnavailableError."""

    @abc.abstractmethod
    def release(self) -> None:
        """Give back a reserved slot whose task will never be submitted."""

    @abc.abstractmethod
    async def submit(self, record: TaskRecord) -> None:
        """Run a stored, reserved task (called after the response is sent)."""

    @abc.abstractmethod
    async def drain(self, timeout: float) -> DrainReport:
        """Stop taking work and wait up to `timeout` seconds for what is in flight."""

    @abc.abstractmethod
    def counters(self) -> RunnerCounters:
        """May block (the Celery runner reads the shared store): call it off the event loop."""

    def cancel(self, task_id: str) -> None:
        """Cancellation of `task_id` was requested (the store holds the request already): stop
        its attempt if one runs here, at once. Called off the event loop; may block briefly.

        The stored request decides either way (an attempt begins only if it is not set, and a
        running one polls it), so the default does nothing.
        """
        return None

    async def readiness(self) -> str | None:
        """None when the runner can take work, else the reason it cannot."""
        return None


def cpus_but_one() -> int:
    """How many CPU-bound tasks run at once unless the settings say: one per CPU but one, which
    the API's event loop keeps."""
    return max(1, (os.cpu_count() or 2) - 1)
