"""One attempt of a task, from delivery to decision: the lifecycle every backend goes through.

    decision = lifecycle.run(record, call)

`begin` reads the record the store holds, skips a delivery that has nothing left to do, puts off
one that is not due yet (a delayed task: NOT_DUE, after `delay`), cancels one whose cancellation
was requested (before the start, or while `running` was being written: it reads the record
again after), fails one that cannot run (no such task registered, its last attempt lost with a
dead process) and records the start of the next attempt; `call` runs the function, the one thing
a backend decides (on a thread, on the app's loop, under Celery's time limits); `succeed` or
`fail` writes the outcome through the ledger and returns the decision: done, or run again after
`delay` seconds. An attempt that raises once its cancellation was requested ends `cancelled`,
never retried; one that returns succeeded. How to run it again is the backend's other decision
(a timer, the native pool, an SQS visibility timeout, a Celery retry); whether and when is
decided here, once, for all of them.

Every write goes through the ledger, which waits out a failing store: a transition is never
dropped, and a task never runs while its start is unrecorded.
"""

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..logs import task_context
from ..telemetry import metrics
from ..telemetry.metrics import ATTEMPT_DURATION, QUEUE_WAIT
from ..telemetry.tracing import attempt_span
from .control import AttemptControl
from .ledger import StoreUnavailableError, TaskLedger, lost_last_attempt
from .models import TaskRecord, TaskState, utcnow
from .registry import TaskRegistry, TaskSpec

logger = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRY = "retry"
    # Nothing to do: the task is already final, or another runner owns it now.
    SKIPPED = "skipped"
    # Shutdown (or a consumer's patience) came before the store took a transition: the record
    # keeps the last state the store took, for recovery or redelivery to continue from.
    ABANDONED = "abandoned"
    # Final: cancellation was requested before the attempt began, or it stopped because of it.
    CANCELLED = "cancelled"
    # Not yet: a delayed task (or a retry) delivered before it is due. Deliver it again after
    # `delay`, as a retry is; nothing was written.
    NOT_DUE = "not_due"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    # RETRY, NOT_DUE: seconds to wait before the next attempt (begins again).
    delay: float = 0.0

    @property
    def is_retry(self) -> bool:
        """Deliver the task again after `delay`: a retry, or a delivery that came too early."""
        return self.outcome in (Outcome.RETRY, Outcome.NOT_DUE)


SKIPPED = Decision(Outcome.SKIPPED)
ABANDONED = Decision(Outcome.ABANDONED)
CANCELLED = Decision(Outcome.CANCELLED)
# A delivery this close to its due time runs: timers of other clocks (a monotonic timer, a
# broker's countdown) may fire a little early, and re-delivering for that is waste.
DUE_TOLERANCE = 0.05


@dataclass
class Attempt:
    """An attempt that has begun: its record (state `running`), task, number and control (the
    cancellation signal and progress the function sees, tasks/control.py)."""

    record: TaskRecord
    spec: TaskSpec[Any, Any]
    number: int
    control: AttemptControl
    began: float = field(default_factory=time.monotonic)

    def ended(self, outcome: str) -> None:
        """Count the attempt's duration under how it ended."""
        seconds = time.monotonic() - self.began
        metrics.observe(ATTEMPT_DURATION, seconds, self.record.name, outcome)

    @contextmanager
    def calling(self) -> Iterator[AttemptControl]:
        """Wrap the call of the function: `cancel_requested()` and `report_progress()` inside
        speak for this attempt, which is a span of the trace of the request that scheduled it."""
        record = self.record
        with (
            attempt_span(record.name, record.task_id, self.number, record.traceparent),
            self.control.active() as control,
        ):
            yield control


class AttemptLifecycle:
    """Begins attempts and decides what follows them, for one runner or consumer.

    `owner` is the runner's owner id (None where a broker owns delivery): a record the store
    says another runner owns now (it claimed it while this one could not beat) is skipped, so a
    task never runs in two places at once.
    """

    def __init__(self, ledger: TaskLedger, registry: TaskRegistry, owner: str | None) -> None:
        self.ledger = ledger
        self._registry = registry
        self._owner = owner
        # The attempts under way, by task id: `cancel` signals one at once.
        self._running: dict[str, AttemptControl] = {}
        self._running_lock = threading.Lock()

    def cancel(self, task_id: str) -> bool:
        """Signal the attempt of `task_id` running here, if any, to stop; True if there was one."""
        with self._running_lock:
            control = self._running.get(task_id)
        if control is None:
            return False
        control.cancel()
        return True

    def run(
        self,
        delivered: TaskRecord | str,
        call: Callable[[Attempt], Any],
        *,
        missing: TaskRecord | None = None,
    ) -> Decision:
        """Begin, call and settle one attempt of `delivered` (a record, or a task id)."""
        begun = self.begin(delivered, missing=missing)
        if isinstance(begun, Decision):
            return begun
        with task_context(begun.record):
            try:
                with begun.calling():
                    value = call(begun)
            except BaseException as error:  # a task's SystemExit is its failure too
                if isinstance(error, KeyboardInterrupt | GeneratorExit):
                    raise
                return self.fail(begun, error)
            return self.succeed(begun, value)

    def begin(
        self, delivered: TaskRecord | str, *, missing: TaskRecord | None = None
    ) -> Attempt | Decision:
        """Start the next attempt of what the store holds for `delivered`.

        `missing` is run when the store has no record of that id (an SQS message outliving its
        record); without it such a delivery is skipped, loudly.
        """
        task_id = delivered if isinstance(delivered, str) else delivered.task_id
        with task_context(delivered):
            try:
                record = self.ledger.read(task_id)
            except StoreUnavailableError:
                logger.warning("task store unavailable; the attempt is left for later")
                return ABANDONED
            if record is None:
                if missing is None:
                    logger.error("no task record has this id; nothing to run")
                    return SKIPPED
                logger.warning("task record missing; running it from its message")
                record = missing
        with task_context(record):
            return self._begin(record)

    def succeed(self, attempt: Attempt, value: Any) -> Decision:
        # Returned normally: the work was done, whether or not cancellation was asked for.
        self._finished(attempt)
        with task_context(attempt.record):
            try:
                recorded = self.ledger.succeeded(attempt.record, value)
            except StoreUnavailableError:
                return self._abandoned()
        attempt.ended(attempt.record.state.value)
        return Decision(Outcome.SUCCEEDED if recorded else Outcome.FAILED)

    def fail(self, attempt: Attempt, error: BaseException) -> Decision:
        self._finished(attempt)
        retry = attempt.spec.retry
        with task_context(attempt.record):
            try:
                # Raised (TaskCancelledError, CancelledError or anything) once cancellation was
                # asked for: cancelled, never retried.
                if attempt.control.cancel_requested(fresh=True):
                    self.ledger.cancelled(attempt.record)
                    decision = CANCELLED
                elif retry.should_retry(attempt.number):
                    delay = retry.delay(attempt.number)
                    self.ledger.retrying(attempt.record, error, delay)
                    decision = Decision(Outcome.RETRY, delay)
                else:
                    self.ledger.failed(attempt.record, error)
                    decision = Decision(Outcome.FAILED)
            except StoreUnavailableError:
                return self._abandoned()
        attempt.ended(attempt.record.state.value)
        return decision

    def _begin(self, record: TaskRecord) -> Attempt | Decision:
        if record.state.is_final:
            # At-least-once delivery: a redelivery of a task that already ended.
            logger.info("task already %s; repeated delivery skipped", record.state.value)
            return SKIPPED
        if self._owner is not None and record.owner not in (None, self._owner):
            logger.warning(
                "another runner took this task over; this delivery is skipped",
                extra={"owner": record.owner},
            )
            return SKIPPED
        if not record.cancel_requested and record.state is not TaskState.RUNNING:
            due_in = record.due_in()
            if due_in > DUE_TOLERANCE:
                logger.info("task not due yet; delivered again later", extra={"due_in_s": due_in})
                return Decision(Outcome.NOT_DUE, due_in)
        try:
            if record.cancel_requested:
                self.ledger.cancelled(record)
                return CANCELLED
            spec = self._registry.get(record.name)
            if spec is None:
                self.ledger.failed(record, LookupError(f"no task is registered as {record.name!r}"))
                return Decision(Outcome.FAILED)
            lost = lost_last_attempt(record, spec.retry.max_attempts)
            if lost is not None:
                self.ledger.failed(record, lost)
                return Decision(Outcome.FAILED)
            number = record.attempts + 1
            before = (record.attempts, record.started_at)
            # From when it was due (accepted, or its backoff over); a `running` record left by a
            # dead process was due long ago, and its wait says nothing about the queue.
            waited = None if record.state is TaskState.RUNNING else _waited(record)
            self.ledger.started(record, number)
            if waited is not None:
                metrics.observe(QUEUE_WAIT, waited, record.name)
            # A request to cancel may have come while `running` was written (the API sets the
            # flag before it reads the state): read it again, and stop before the call.
            stored = self.ledger.read(record.task_id)
            if stored is not None and stored.cancel_requested:
                record.attempts, record.started_at = before  # the function never ran
                self.ledger.cancelled(record)
                return CANCELLED
        except StoreUnavailableError:
            return self._abandoned()
        control = AttemptControl(record, self.ledger.store)
        with self._running_lock:
            self._running[record.task_id] = control
        return Attempt(record=record, spec=spec, number=number, control=control)

    def _finished(self, attempt: Attempt) -> None:
        with self._running_lock:
            if self._running.get(attempt.record.task_id) is attempt.control:
                del self._running[attempt.record.task_id]

    def _abandoned(self) -> Decision:
        logger.warning(
            "the transition was not recorded (the store failed until shutdown or for longer "
            "than this consumer may wait); the task continues from its last stored state after "
            "recovery or redelivery"
        )
        return ABANDONED


def _waited(record: TaskRecord) -> float:
    due = record.next_attempt_at or record.created_at
    return max(0.0, (utcnow() - due).total_seconds())
