"""Every task state transition goes through the ledger: one store write and one log line each.

Runners decide *when* a task moves; the ledger decides what that means for the record and makes
sure no failure is silent: each one is logged with its traceback and the task id.
"""

import asyncio
import json
import logging
from datetime import timedelta
from typing import Any

from fastapi.encoders import jsonable_encoder

from ..logs import task_context
from .models import TaskRecord, TaskState, utcnow
from .store import TaskStore

logger = logging.getLogger(__name__)


def describe_error(error: BaseException) -> str:
    """What a client sees of a failure: the exception type and message, never a traceback."""
    message = str(error)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def lost_last_attempt(record: TaskRecord, max_attempts: int) -> RuntimeError | None:
    """Why a delivery of `record` must not run again, or None when it may.

    A record comes back with all its attempts spent only when the process running the last one
    died (killed for memory, a segfault, a function timeout) before it could record the outcome.
    Running it again would break `max_attempts`, and a task that kills its process would crash
    every process that claims it, forever: it is failed instead, a dead letter like any other.
    """
    if record.attempts < max_attempts:
        return None
    return RuntimeError(
        f"the process died during its last attempt (attempt {record.attempts} of {max_attempts})"
    )


class TaskLedger:
    def __init__(self, store: TaskStore) -> None:
        self.store = store

    def begin_attempt(self, record: TaskRecord, max_attempts: int) -> int | None:
        """Start the record's next attempt and return its number; or, when its attempts are all
        spent (see `lost_last_attempt`), record it failed and return None: do not run it."""
        lost = lost_last_attempt(record, max_attempts)
        if lost is not None:
            self.failed(record, lost)
            return None
        attempt = record.attempts + 1
        self.started(record, attempt)
        return attempt

    async def not_handed_over(
        self, record: TaskRecord, error: BaseException, to: str = "the runner"
    ) -> None:
        """Nothing will run a stored task that `to` refused (a full pool, a broker that is down):
        fail it, saying why, rather than leave it `queued` forever. A store that fails as well
        is logged, not raised: the caller, a background callback, has nobody to tell."""
        unsent = RuntimeError(f"the task could not be handed to {to}: {describe_error(error)}")
        unsent.__cause__ = error  # the logged traceback shows where it was refused
        try:
            await asyncio.to_thread(self.failed, record, unsent)
        except Exception:
            with task_context(record):
                logger.exception("could not record the failure either: the task store failed")

    def started(self, record: TaskRecord, attempt: int) -> None:
        record.state = TaskState.RUNNING
        record.attempts = attempt
        record.next_attempt_at = None
        record.started_at = record.started_at or utcnow()
        self.store.save(record)
        self._log(logging.INFO, "task started", record, attempt=attempt)

    def succeeded(self, record: TaskRecord, result: Any) -> bool:
        """Record the result; False if it is not JSON, in which case the task is failed instead."""
        try:
            record.result = _as_json(result)
        except (TypeError, ValueError) as error:
            # The work is done, but its outcome cannot be reported; say so instead of lying.
            self.failed(record, TypeError(f"the task returned a value that is not JSON: {error}"))
            return False
        record.state = TaskState.SUCCEEDED
        record.error = None
        record.finished_at = utcnow()
        self.store.save(record)
        self._log(logging.INFO, "task succeeded", record)
        return True

    def retrying(self, record: TaskRecord, error: BaseException, delay: float) -> None:
        record.state = TaskState.RETRYING
        record.error = describe_error(error)
        record.next_attempt_at = utcnow() + timedelta(seconds=delay)
        self.store.save(record)
        self._log(
            logging.WARNING,
            "task attempt failed; retrying",
            record,
            error=error,
            retry_in_s=round(delay, 3),
        )

    def failed(self, record: TaskRecord, error: BaseException) -> None:
        """Final failure: the record stays in the store as a dead letter."""
        record.state = TaskState.FAILED
        record.error = describe_error(error)
        record.finished_at = utcnow()
        record.next_attempt_at = None
        self.store.save(record)
        self._log(logging.ERROR, "task failed; kept as dead letter", record, error=error)

    def _log(
        self,
        level: int,
        message: str,
        record: TaskRecord,
        *,
        error: BaseException | None = None,
        **fields: Any,
    ) -> None:
        with task_context(record):
            logger.log(
                level,
                message,
                exc_info=error,
                extra={"task_name": record.name, "attempts": record.attempts, **fields},
            )


def _as_json(value: Any) -> Any:
    encoded = jsonable_encoder(value)
    json.dumps(encoded)
    return encoded
