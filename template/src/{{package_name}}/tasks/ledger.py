"""Every task state transition goes through the ledger: one store write and one log line each.

Runners decide *when* a task moves; the ledger decides what that means for the record and makes
sure no failure is silent: each one is logged with its traceback and the task id.

A transition the store refuses (locked, full, failing over, throttled) is not lost: the ledger
logs it with the task id and writes it again, with backoff, until the store takes it. Only a
shutdown (`stop`), or a consumer's `patience` running out where a broker will deliver the task
again, ends the wait, with `StoreUnavailableError`; the record then keeps the last state the
store took, and recovery or redelivery continues from there.
"""

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from fastapi.encoders import jsonable_encoder

from ..logs import task_context
from ..redaction import client_text
from ..telemetry import metrics
from ..telemetry.metrics import TASK_TRANSITIONS
from .json_values import checked_json_size
from .models import TaskRecord, TaskState, utcnow
from .retry import RetryPolicy
from .store import TaskStore
from .store.health import StoreHealth

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Waits between writes of a transition the store refused: from a few milliseconds (a lock held
# for a moment) up to two seconds (an outage), jittered so many workers do not retry together.
STORE_BACKOFF = RetryPolicy(max_attempts=1, backoff_base=0.05, backoff_max=2.0)
# While the store keeps failing, one log line per task at most this often (the first failure and
# the recovery are always logged).
STORE_FAILURE_LOG_INTERVAL = 30.0
# The owner id `probe_writes` retires: no runner ever has it.
WRITE_PROBE_OWNER = "write-probe"


class StoreUnavailableError(Exception):
    """The store did not take a transition before shutdown (or before a consumer's patience ran
    out); the record keeps the last state the store took."""


def describe_error(error: BaseException) -> str:
    """What a client sees of a failure: the exception type and its message without paths or
    secrets (redaction.py; ERROR_DETAIL=full shows it all), never a traceback. The log line of the
    failure keeps everything."""
    message = client_text(str(error))
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


@dataclass(frozen=True)
class TransitionCounts:
    """Transitions this process wrote since it started: the totals `/ready` reports."""

    succeeded: int
    failed: int
    retried: int
    cancelled: int = 0


class TaskLedger:
    """Writes transitions, keeps the store's health and the process's transition counts.

    One per process and store (the app's `TaskService.ledger`, a worker's runtime), shared by
    every runner thread: it is thread-safe.
    """

    def __init__(
        self,
        store: TaskStore,
        *,
        health: StoreHealth | None = None,
        patience: float | None = None,
        max_result_bytes: int | None = None,
    ) -> None:
        self.store = store
        # MAX_TASK_RESULT_BYTES: a larger result fails its task instead of being stored (None:
        # no limit).
        self.max_result_bytes = max_result_bytes
        self.health = health or StoreHealth()
        # Set at shutdown: a transition still waiting for the store gives up.
        self.stop = threading.Event()
        # Seconds a transition waits for a failing store before it gives up (None: until stop).
        self._patience = patience
        self._counts_lock = threading.Lock()
        self._counts = {
            TaskState.SUCCEEDED: 0,
            TaskState.FAILED: 0,
            TaskState.RETRYING: 0,
            TaskState.CANCELLED: 0,
        }
        # Called with each record once its final state is saved (tasks/callbacks.py's delivery);
        # it must not raise, nor block for long.
        self.on_final: Callable[[TaskRecord], None] | None = None

    def counts(self) -> TransitionCounts:
        with self._counts_lock:
            return TransitionCounts(
                succeeded=self._counts[TaskState.SUCCEEDED],
                failed=self._counts[TaskState.FAILED],
                retried=self._counts[TaskState.RETRYING],
                cancelled=self._counts[TaskState.CANCELLED],
            )

    def accept(self, record: TaskRecord) -> None:
        """Store a newly accepted task, once: a request must not wait out an outage, so the
        caller answers 503 when this raises."""
        self._write_once(record)
        self._count(record)

    def _write_once(self, record: TaskRecord) -> None:
        """One write of a new version, raising if the store refuses it (for a request, which
        answers 503 rather than wait out an outage)."""
        record.version += 1
        try:
            self.store.save(record)
        except Exception as error:
            self._store_failed(record, error, logging.ERROR, "task store write failed")
            raise
        self._store_answered(record)

    def probe_writes(self) -> None:
        """While the last write failed, try one that changes nothing (retiring an owner no
        runner has). A process that writes only when it accepts a task (the API of a broker
        backend) would otherwise stay unready for good: /ready keeps the requests away whose
        writes would show the store is back."""
        if self.health.outage is None:
            return
        try:
            self.store.retire(WRITE_PROBE_OWNER)
        except Exception as error:
            self.health.failed(describe_error(error))
            return
        self._store_answered(WRITE_PROBE_OWNER)

    def read(self, task_id: str) -> TaskRecord | None:
        """The stored record, waiting out a store that fails (see the module docstring)."""
        return self._persist(task_id, lambda: self.store.get(task_id), write=False)

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
        self._save(record)
        self._log(logging.INFO, "task started", record, attempt=attempt)

    def succeeded(self, record: TaskRecord, result: Any) -> bool:
        """Record the result; False if no store could keep it as it is (not JSON, a JSON value
        tasks/json_values.py refuses, over MAX_TASK_RESULT_BYTES): the task is failed instead."""
        try:
            record.result = self._storable(result)
        except (TypeError, ValueError) as error:
            # The work is done, but its outcome cannot be reported; say so instead of lying (or
            # storing a record whose every read would fail).
            unstorable = f"the task returned a value that is not JSON every store keeps: {error}"
            self.failed(record, TypeError(unstorable))
            return False
        record.state = TaskState.SUCCEEDED
        record.error = None
        record.finished_at = utcnow()
        self._save(record)
        self._log(logging.INFO, "task succeeded", record)
        return True

    def _storable(self, result: Any) -> Any:
        """The result as JSON values, once checked like a task's arguments and against its limit."""
        encoded = jsonable_encoder(result)
        size = checked_json_size(encoded, ("result",))
        if self.max_result_bytes is not None and size > self.max_result_bytes:
            raise ValueError(
                f"it is {size} bytes of JSON, over the limit of {self.max_result_bytes} "
                "(MAX_TASK_RESULT_BYTES)"
            )
        return encoded

    def retrying(self, record: TaskRecord, error: BaseException, delay: float) -> None:
        record.state = TaskState.RETRYING
        record.error = describe_error(error)
        record.next_attempt_at = utcnow() + timedelta(seconds=delay)
        self._save(record)
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
        self._save(record)
        self._log(logging.ERROR, "task failed; kept as dead letter", record, error=error)

    def cancelled(self, record: TaskRecord, *, once: bool = False) -> None:
        """Final: the task stops (or never starts) because its cancellation was requested.

        `once` (a request cancelling a queued task): one write, raising if the store refuses it,
        rather than wait out an outage; the stored request to cancel still stops the task when
        it is delivered next.
        """
        record.state = TaskState.CANCELLED
        record.cancel_requested = True
        record.finished_at = utcnow()
        record.next_attempt_at = None
        if once:
            self._write_once(record)
            self._count(record)
            self._ended(record)
        else:
            self._save(record)
        self._log(logging.INFO, "task cancelled", record)

    def _ended(self, record: TaskRecord) -> None:
        if record.state.is_final and self.on_final is not None:
            self.on_final(record)

    def _count(self, record: TaskRecord) -> None:
        """Count the transition `record` just made, here and in the metrics."""
        metrics.count(TASK_TRANSITIONS, record.name, record.state.value)
        if record.state in self._counts:
            with self._counts_lock:
                self._counts[record.state] += 1

    def _save(self, record: TaskRecord) -> None:
        # Every transition is a new version of the record (the id of its Server-Sent Event).
        record.version += 1

        def write() -> None:
            self.store.save(record)

        self._persist(record, write)
        self._count(record)
        self._ended(record)

    def _persist(
        self, task: TaskRecord | str, operation: Callable[[], T], *, write: bool = True
    ) -> T:
        """Run a store operation until it succeeds; see the module docstring for when it stops.

        Any failure marks the store unhealthy; only a write that goes through marks it healthy
        again (a store may serve reads while it refuses writes: SQLite under another's lock).
        """
        if self.stop.is_set():
            raise StoreUnavailableError("the runner has stopped: nothing more is recorded")
        started = time.monotonic()
        failures = 0
        last_logged = 0.0
        while True:
            try:
                outcome = operation()
            except Exception as error:
                failures += 1
                now = time.monotonic()
                if failures == 1 or now - last_logged >= STORE_FAILURE_LOG_INTERVAL:
                    last_logged = now
                    message = "task store failed; trying again until it answers"
                    self._store_failed(task, error, logging.WARNING, message, failures=failures)
                else:
                    self.health.failed(describe_error(error))
                waited = now - started
                if self._patience is not None and waited >= self._patience:
                    raise StoreUnavailableError(
                        f"the task store failed for {waited:.1f} s: {describe_error(error)}"
                    ) from error
                if self.stop.wait(STORE_BACKOFF.delay(min(failures, 16))):
                    raise StoreUnavailableError(
                        f"shutting down while the task store fails: {describe_error(error)}"
                    ) from error
                continue
            if failures:
                with task_context(task):
                    logger.info(
                        "task store answers again; the task goes on",
                        extra={"store_failures": failures},
                    )
            if write:
                self._store_answered(task)
            return outcome

    def _store_failed(
        self, task: TaskRecord | str, error: Exception, level: int, message: str, **fields: Any
    ) -> None:
        outage = self.health.failed(describe_error(error))
        with task_context(task):
            logger.log(
                level,
                message,
                exc_info=error,
                extra={"store_failing_for_s": round(time.time() - outage.since, 3), **fields},
            )

    def _store_answered(self, task: TaskRecord | str) -> None:
        ended = self.health.wrote()
        if ended is not None:
            with task_context(task):
                logger.info(
                    "task store takes writes again",
                    extra={
                        "store_failed_for_s": round(time.time() - ended.since, 3),
                        "store_failures": ended.failures,
                    },
                )

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
