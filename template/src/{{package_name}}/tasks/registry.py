"""`@task`: register a function once, with its retry policy and timeout, under a stable name.

The name, not the function object, is what a task record stores, so a task accepted before a crash
can be found and run again after the restart (or by another process). Every process registers the
same tasks by importing the modules TASK_MODULES names (`import_task_modules`).
"""

import asyncio
import concurrent.futures
import contextvars
import functools
import importlib
import inspect
import math
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, ParamSpec, TypeVar, overload

from cronsim import CronSim, CronSimError

from .control import run_on_loop
from .retry import RetryPolicy

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, eq=False)
class TaskSpec(Generic[P, R]):
    """A registered task. Calling it calls the function directly (handy in tests)."""

    name: str
    fn: Callable[P, R] | Callable[P, Awaitable[R]]
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Seconds one attempt may take; None means no limit.
    timeout: float | None = None
    # A periodic task's cron expression (five fields, UTC): tasks/periodic.py fires it.
    schedule: str | None = None
    # CPU-heavy sync work: the pure-Python runner runs it in a worker process, off the API's GIL
    # (tasks/runner/processes.py); elsewhere it runs as any sync task (Celery's and Lambda's are
    # processes of their own already, the native runner's heavy work releases the GIL).
    cpu_bound: bool = False

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        return self.fn(*args, **kwargs)

    def run_blocking(
        self,
        args: list[Any],
        kwargs: dict[str, Any],
        loop: asyncio.AbstractEventLoop | None,
        *,
        time_plain: bool = False,
    ) -> Any:
        """Run one attempt from a worker thread that is not the event loop's.

        Coroutine functions are handed to the app's running `loop` and awaited from here; the
        timeout, if any, is enforced there. Plain functions run right here, in this thread, and
        the caller enforces their timeout (the native pool, Celery's time limits), unless
        `time_plain`: then a plain function with a timeout runs on a thread of its own that is
        abandoned at the deadline (Python cannot stop a thread), raising TimeoutError.
        """
        if not self.is_async:
            if time_plain and self.timeout is not None:
                return _call_with_deadline(self.fn, args, kwargs, self.timeout)
            return self.fn(*args, **kwargs)
        if loop is None or not loop.is_running():
            raise RuntimeError(f"task {self.name!r} is async but no event loop is running")
        coroutine = self.fn(*args, **kwargs)
        assert inspect.iscoroutine(coroutine)
        # Cancelled on its loop if the attempt's cancellation is requested meanwhile.
        return run_on_loop(asyncio.wait_for(coroutine, self.timeout), loop)

    def options(
        self,
        *,
        delay: float | timedelta | None = None,
        at: datetime | None = None,
        callback_url: str | None = None,
    ) -> "TaskCall[P, R]":
        """This task with options for one call, for `tasks.add_task`:

            tasks.add_task(send_digest.options(delay=30), user_id)
            tasks.add_task(send_digest.options(at=tomorrow_9am), user_id)

        `delay` (seconds or a timedelta, not negative) or `at` (a timezone-aware datetime; one
        in the past means now): when the task starts, at the earliest. `callback_url`: where
        its outcome is posted once it is final.
        """
        return TaskCall(self, due_at=_due_at(delay, at), callback_url=callback_url)


@dataclass(frozen=True, eq=False)
class TaskCall(Generic[P, R]):
    """A registered task with the options of one call (`TaskSpec.options`)."""

    spec: TaskSpec[P, R]
    # When the task may start (None: at once).
    due_at: datetime | None = None
    callback_url: str | None = None


def _due_at(delay: float | timedelta | None, at: datetime | None) -> datetime | None:
    if delay is not None and at is not None:
        raise TypeError("give a task either delay= or at=, not both")
    if at is not None:
        if not isinstance(at, datetime):
            raise TypeError(f"at= must be a datetime, not {type(at).__name__}")
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(
                "at= must be a timezone-aware datetime (datetime.now(UTC) + ..., say): a naive "
                "one could mean any time zone"
            )
        due = at.astimezone(UTC)
        return due if due > datetime.now(UTC) else None
    if delay is None:
        return None
    if isinstance(delay, timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, int | float) and not isinstance(delay, bool):
        seconds = float(delay)
    else:
        raise TypeError(f"delay= must be seconds or a timedelta, not {type(delay).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"delay= must be a finite number of seconds >= 0, not {delay!r}")
    return datetime.now(UTC) + timedelta(seconds=seconds) if seconds > 0 else None


def _call_with_deadline(
    fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], timeout: float
) -> Any:
    """Call `fn` on a daemon thread; raise TimeoutError if it has not returned in `timeout` s.

    The abandoned call runs on to its end and its result is dropped.
    """
    outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)

    def attempt() -> None:
        try:
            outcome.set_result(call())
        except BaseException as error:  # handed to the waiting thread
            outcome.set_exception(error)

    threading.Thread(target=attempt, name="task-attempt", daemon=True).start()
    try:
        return outcome.result(timeout)
    except TimeoutError:
        if outcome.done():
            raise  # the task's own TimeoutError
        raise TimeoutError(f"the attempt outlived the task's timeout ({timeout} s)") from None


class TaskRegistry:
    """Name -> TaskSpec. One per process, shared by the API, the runners and the workers."""

    def __init__(self) -> None:
        self._specs: dict[str, TaskSpec[Any, Any]] = {}

    def add(self, spec: TaskSpec[Any, Any]) -> None:
        existing = self._specs.get(spec.name)
        if existing is not None and existing.fn is not spec.fn:
            raise ValueError(f"a different task is already registered as {spec.name!r}")
        self._specs[spec.name] = spec

    def get(self, name: str) -> TaskSpec[Any, Any] | None:
        return self._specs.get(name)

    def names(self) -> list[str]:
        return sorted(self._specs)

    def periodic(self) -> list[TaskSpec[Any, Any]]:
        """The tasks with a schedule, by name."""
        return [spec for _, spec in sorted(self._specs.items()) if spec.schedule is not None]


registry = TaskRegistry()


@overload
def task(fn: Callable[P, R], /) -> TaskSpec[P, R]: ...


@overload
def task(
    *,
    name: str | None = None,
    max_attempts: int = 3,
    backoff_base: float = 0.5,
    backoff_max: float = 30.0,
    timeout: float | None = None,
    schedule: str | None = None,
    cpu_bound: bool = False,
) -> Callable[[Callable[P, R]], TaskSpec[P, R]]: ...


def task(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    max_attempts: int = 3,
    backoff_base: float = 0.5,
    backoff_max: float = 30.0,
    timeout: float | None = None,
    schedule: str | None = None,
    cpu_bound: bool = False,
) -> TaskSpec[P, R] | Callable[[Callable[P, R]], TaskSpec[P, R]]:
    """Register `fn` as a task: `@task` or `@task(max_attempts=5, timeout=30)`.

    `max_attempts` counts the first try: 3 means up to two retries. The function may be sync or
    async; its arguments and return value must be JSON values.

    `schedule="*/15 * * * *"` makes it periodic: a cron expression (minute, hour, day of month,
    month, day of week; in UTC) at whose times the task is fired once across every process
    (tasks/periodic.py). A periodic task takes no arguments. A bad expression, or a function
    with required parameters, raises ValueError naming the task.

    `cpu_bound=True` marks CPU-heavy sync work (parsing, hashing, number crunching in Python):
    the pure-Python runner runs it in a worker process, so the API answers meanwhile. Such a task
    must be a plain (not async) function; its timeout and cancellation kill its process.
    """
    policy = RetryPolicy(
        max_attempts=max_attempts, backoff_base=backoff_base, backoff_max=backoff_max
    )
    if timeout is not None and timeout <= 0:
        raise ValueError("timeout must be positive")

    def register(function: Callable[P, R]) -> TaskSpec[P, R]:
        task_name = name or f"{function.__module__}.{function.__qualname__}"
        if schedule is not None:
            _check_schedule(task_name, function, schedule)
        if cpu_bound and inspect.iscoroutinefunction(function):
            raise ValueError(
                f"task {task_name!r} is async: cpu_bound=True is for plain functions, whose "
                "work holds the GIL (an async task waits on I/O; it needs no process)"
            )
        spec: TaskSpec[P, R] = TaskSpec(
            name=task_name,
            fn=function,
            retry=policy,
            timeout=timeout,
            schedule=schedule,
            cpu_bound=cpu_bound,
        )
        registry.add(spec)
        return spec

    return register(fn) if fn is not None else register


def _check_schedule(name: str, function: Callable[..., Any], schedule: str) -> None:
    """Refuse, naming the task, a cron expression cronsim cannot read (or one that is not the
    five fields every clock takes: Celery beat, EventBridge), and a function that needs
    arguments: nothing passes any to a periodic task."""
    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError(
            f"task {name!r}: schedule {schedule!r} must be a cron expression of five fields "
            "(minute hour day-of-month month day-of-week), e.g. '*/15 * * * *'"
        )
    try:
        CronSim(schedule, datetime.now(UTC))
    except CronSimError as error:
        message = f"task {name!r}: schedule {schedule!r} is not valid cron: {error}"
        raise ValueError(message) from None
    required = [
        parameter.name
        for parameter in inspect.signature(function).parameters.values()
        if parameter.default is inspect.Parameter.empty
        and parameter.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    if required:
        raise ValueError(
            f"task {name!r} has a schedule, so nothing passes it arguments, but it requires "
            f"{', '.join(required)}: give them defaults or drop the schedule"
        )


class TaskModuleError(ImportError):
    """A module TASK_MODULES names could not be imported."""


def import_task_modules(names: Iterable[str]) -> None:
    """Import the modules that define tasks (TASK_MODULES), so their tasks are registered.

    The app and every worker call it at startup: each then knows every task it may be handed,
    whatever else it imports. A module that fails to import raises TaskModuleError naming it.
    """
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as error:
            raise TaskModuleError(
                f"TASK_MODULES names {name!r}, which could not be imported: "
                f"{type(error).__name__}: {error}",
                name=name,
            ) from error
