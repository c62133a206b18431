"""What a running task may ask and say: whether it is to stop, and how far it got.

    from my_service.tasks import cancel_requested, report_progress

    @task
    def import_rows(rows: list[dict]) -> int:
        for done, row in enumerate(rows, 1):
            if cancel_requested():      # DELETE /tasks/{id} asked it to stop
                raise TaskCancelledError  # or raise_if_cancelled(); the task ends `cancelled`
            store(row)
            report_progress(done, len(rows))   # shown by GET /tasks/{id}
        return len(rows)

Every backend runs each attempt inside an `AttemptControl` (a context variable, set where the
backend calls the function): outside an attempt (a task function called directly, in a test)
`cancel_requested()` is False and `report_progress` does nothing.

Cancellation is cooperative for plain functions (Python cannot stop a thread): they ask. A
coroutine function is cancelled for them: while it runs, the thread that waits for it watches
the same signal and cancels its asyncio task, so it stops at its next `await`.
"""

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from datetime import timedelta
from typing import Protocol, TypeVar

from ..logs import task_context
from .models import TaskProgress, TaskRecord, utcnow

logger = logging.getLogger(__name__)
T = TypeVar("T")

# A running attempt reads the store for a cancellation request at most this often (a local
# runner signals its own attempts at once, without a read).
CANCEL_POLL_INTERVAL = 0.5
# Progress is written to the store at most this often (always when done == total); every report
# updates the attempt's record in memory, which the next transition save carries anyway.
PROGRESS_INTERVAL = 0.5
# How often the thread waiting for a coroutine attempt looks at the cancellation signal.
WATCH_INTERVAL = 0.25
# A failing store (a progress write, a cancellation poll) is logged at most this often per attempt.
FAILURE_LOG_INTERVAL = 30.0


class TaskCancelledError(Exception):
    """Raised inside a task to stop it because its cancellation was requested."""

    def __init__(self, message: str = "the task was cancelled") -> None:
        super().__init__(message)


class ControlStore(Protocol):
    """What an attempt's control needs of the task store."""

    def get(self, task_id: str) -> TaskRecord | None: ...

    def save_progress(self, task_id: str, progress: TaskProgress, version: int) -> None: ...


class AttemptControl:
    """The cancellation signal and the progress of one running attempt. Thread-safe."""

    def __init__(self, record: TaskRecord, store: ControlStore) -> None:
        self.record = record
        self._store = store
        # Set by the local runner (`TaskRunner.cancel`) or once a store read saw the request.
        self.signal = threading.Event()
        if record.cancel_requested:
            self.signal.set()
        self._lock = threading.Lock()
        self._last_poll = float("-inf")
        self._last_write = float("-inf")
        self._last_failure_logged = float("-inf")
        # Progress writes may overlap (a coroutine's go to a thread pool): an older one that
        # comes last is dropped.
        self._write_lock = threading.Lock()
        self._written_version = -1
        # The latest report (done, total, message, monotonic time) and how many reports have
        # not been put on the record yet.
        self._latest: tuple[float, float | None, str | None, float] | None = None
        self._unrecorded = 0
        # A report is held back by the throttle, and the flusher will write it once due.
        self._held = False

    def cancel(self) -> None:
        """Signal the attempt at once (the runner of this process was asked to cancel it)."""
        self.signal.set()

    def cancel_requested(self, *, fresh: bool = False) -> bool:
        """Whether cancellation was requested: the local signal, else a store read at most every
        CANCEL_POLL_INTERVAL (`fresh`: read now). A failing read answers False (and is logged)."""
        if self.signal.is_set():
            return True
        if _on_event_loop():
            # A coroutine's store reads would block its loop: the thread waiting for it reads
            # (run_on_loop) and sets the signal.
            return False
        now = time.monotonic()
        with self._lock:
            if not fresh and now - self._last_poll < CANCEL_POLL_INTERVAL:
                return False
            self._last_poll = now
        try:
            stored = self._store.get(self.record.task_id)
        except Exception as error:
            self._store_failed("could not read whether the task was cancelled", error)
            return False
        if stored is not None and stored.cancel_requested:
            self.record.cancel_requested = True
            self.signal.set()
            return True
        return False

    def report_progress(self, done: float, total: float | None, message: str | None) -> None:
        # Called in tight loops: a report only notes its values; the record's progress (a
        # TaskProgress with its time) is made when it is written, or when the attempt ends.
        # Every microsecond here is one the task holds the GIL in a row, which the event loop
        # may wait out before answering a request.
        now = time.monotonic()
        with self._lock:
            self._latest = (done, total, message, now)
            self._unrecorded += 1
            complete = total is not None and done >= total
            if not complete and now - self._last_write < PROGRESS_INTERVAL:
                if not self._held:
                    # Written once due even if the task says nothing more until then.
                    self._held = True
                    _flusher.hold(self, due=self._last_write + PROGRESS_INTERVAL)
                return
            self._last_write = now
            progress, version = self._record_latest()
        loop = _on_event_loop()
        if loop is not None:
            # From a coroutine: written off its loop, which a store write must not block.
            loop.run_in_executor(None, self._write_progress, progress, version)
        else:
            self._write_progress(progress, version)

    def _write_progress(self, progress: TaskProgress, version: int) -> None:
        with self._write_lock:
            if version <= self._written_version:
                return
            try:
                self._store.save_progress(self.record.task_id, progress, version)
            except Exception as error:
                self._store_failed("could not store the task's progress; it goes on", error)
                return
            self._written_version = version

    def write_held_report(self) -> None:
        """Write the report the throttle held back (the flusher calls this once it is due)."""
        with self._lock:
            self._held = False
            if not self._unrecorded:
                return  # written meanwhile, or the attempt ended and put it on the record
            self._last_write = time.monotonic()
            progress, version = self._record_latest()
        self._write_progress(progress, version)

    def _record_latest(self) -> tuple[TaskProgress, int]:
        """Put the latest report on the record, one version per report not recorded yet (under
        `_lock`, with at least one such report); the progress and version to store."""
        assert self._latest is not None
        done, total, message, at = self._latest
        reported_at = utcnow() - timedelta(seconds=time.monotonic() - at)
        progress = TaskProgress(done, total, message, updated_at=reported_at)
        self.record.progress = progress
        self.record.version += self._unrecorded
        self._unrecorded = 0
        return progress, self.record.version

    @contextlib.contextmanager
    def active(self) -> Iterator["AttemptControl"]:
        """Make this the current attempt's control while the function runs."""
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)
            # The reports since the last write go on the record the attempt's outcome saves.
            with self._lock:
                if self._unrecorded:
                    self._record_latest()
                if self._held:
                    self._held = False
                    _flusher.forget(self)

    def _store_failed(self, message: str, error: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last_failure_logged < FAILURE_LOG_INTERVAL:
                return
            self._last_failure_logged = now
        # Also from a thread that has no task context (a coroutine's progress write).
        with task_context(self.record):
            logger.warning(message, exc_info=error)


class ProgressFlusher:
    """Writes the reports the throttle held back, once due: a task that reports and then works
    quietly for a while (one long query, one big upload) still shows its latest progress within
    PROGRESS_INTERVAL, not only at its next report. One daemon thread per process, started on
    first use; idle (waiting on a condition) while nothing is held back."""

    def __init__(self) -> None:
        self._due: dict[AttemptControl, float] = {}
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def hold(self, control: AttemptControl, *, due: float) -> None:
        with self._changed:
            self._due[control] = due
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="task-progress-flusher", daemon=True
                )
                self._thread.start()
            self._changed.notify()

    def forget(self, control: AttemptControl) -> None:
        with self._changed:
            self._due.pop(control, None)

    def _run(self) -> None:
        while True:
            with self._changed:
                if not self._due:
                    self._changed.wait()
                    continue
                control, due = min(self._due.items(), key=lambda item: item[1])
                wait = due - time.monotonic()
                if wait > 0:
                    self._changed.wait(wait)
                    continue
                del self._due[control]
            try:
                control.write_held_report()
            except Exception:
                logger.exception("could not write a task's held-back progress")


_flusher = ProgressFlusher()


def _new_flusher_after_fork() -> None:
    # A child (a Celery prefork worker) has no flusher thread, and its lock may have been held
    # by a thread of the parent when it forked.
    global _flusher
    _flusher = ProgressFlusher()


os.register_at_fork(after_in_child=_new_flusher_after_fork)


def _on_event_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_current: ContextVar[AttemptControl | None] = ContextVar("task_attempt_control", default=None)


def current_attempt() -> AttemptControl | None:
    """The control of the attempt running in this context, or None outside of one."""
    return _current.get()


def cancel_requested() -> bool:
    """True once cancellation of the running task was requested (`DELETE /tasks/{id}`).

    Cheap to call often: the store is read at most every CANCEL_POLL_INTERVAL seconds. Always
    False outside a task's attempt.
    """
    control = _current.get()
    return control is not None and control.cancel_requested()


def raise_if_cancelled() -> None:
    """Raise TaskCancelledError if cancellation of the running task was requested."""
    if cancel_requested():
        raise TaskCancelledError


def report_progress(done: float, total: float | None = None, message: str | None = None) -> None:
    """Say how far the running task got; `GET /tasks/{id}` shows it.

    Cheap to call in a tight loop: the store is written at most every PROGRESS_INTERVAL seconds
    (and whenever done == total); a report held back is written once due, even if the task
    reports nothing more until then. Never raises into the task (a failing store is logged), and
    does nothing outside a task's attempt.
    """
    control = _current.get()
    if control is None:
        forward = _forwarded.get()
        if forward is not None:
            forward(done, total, message)
        return
    try:
        control.report_progress(done, total, message)
    except Exception:
        logger.exception("could not record the task's progress; it goes on")


# A task in a worker process (`@task(cpu_bound=True)`, tasks/runner/processes.py) has no attempt
# of its own there: its reports go over the pipe to the attempt in the runner's process.
_forwarded: ContextVar[Callable[[float, float | None, str | None], None] | None] = ContextVar(
    "task_progress_forwarded", default=None
)


@contextlib.contextmanager
def forward_reports(send: Callable[[float, float | None, str | None], None]) -> Iterator[None]:
    """Inside, `report_progress` outside an attempt calls `send` (a worker process's pipe)."""
    token = _forwarded.set(send)
    try:
        yield
    finally:
        _forwarded.reset(token)


def run_on_loop(awaitable: Awaitable[T], loop: asyncio.AbstractEventLoop) -> T:
    """Run `awaitable` on `loop` from another thread and wait for it, cancelling its asyncio task
    when the current attempt's cancellation is requested (TaskCancelledError then)."""
    control = _current.get()
    running: list[asyncio.Task[object] | None] = []

    async def attempt() -> T:
        running.append(asyncio.current_task())
        return await awaitable

    future = asyncio.run_coroutine_threadsafe(attempt(), loop)
    if control is None:
        return future.result()
    cancelling = False
    while True:
        try:
            return future.result(WATCH_INTERVAL)
        except TimeoutError:
            if future.done():
                raise  # the task's own TimeoutError (its timeout, say)
        except concurrent.futures.CancelledError:
            if cancelling:
                raise TaskCancelledError(
                    "the task was cancelled while it awaited something"
                ) from None
            raise
        if not cancelling and control.cancel_requested():
            cancelling = True
            # Cancels the asyncio task on its loop: it stops at its next await, and the future
            # says so once it has (its `finally` blocks ran).
            loop.call_soon_threadsafe(_cancel, running)


def _cancel(running: "list[asyncio.Task[object] | None]") -> None:
    # On the loop: the task has started by now unless it is still queued behind others.
    task = running[0] if running else None
    if task is not None:
        task.cancel()
    else:
        asyncio.get_running_loop().call_soon(_cancel, running)
