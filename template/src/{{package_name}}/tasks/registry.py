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
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeVar, overload

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

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        return self.fn(*args, **kwargs)

    def options(self, *, callback_url: str | None = None) -> "TaskCall[P, R]":
        """This task with options for one `add_task`: `callback_url` is POSTed the outcome."""
        return TaskCall(spec=self, callback_url=callback_url)

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
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coroutine, self.timeout), loop)
        return future.result()


@dataclass(frozen=True)
class TaskCall(Generic[P, R]):
    """A registered task with the options of one call (`TaskSpec.options`); `add_task` takes it
    wherever it takes the task."""

    spec: TaskSpec[P, R]
    callback_url: str | None = None


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
) -> TaskSpec[P, R] | Callable[[Callable[P, R]], TaskSpec[P, R]]:
    """Register `fn` as a task: `@task` or `@task(max_attempts=5, timeout=30)`.

    `max_attempts` counts the first try: 3 means up to two retries. The function may be sync or
    async; its arguments and return value must be JSON values.
    """
    policy = RetryPolicy(
        max_attempts=max_attempts, backoff_base=backoff_base, backoff_max=backoff_max
    )
    if timeout is not None and timeout <= 0:
        raise ValueError("timeout must be positive")

    def register(function: Callable[P, R]) -> TaskSpec[P, R]:
        spec: TaskSpec[P, R] = TaskSpec(
            name=name or f"{function.__module__}.{function.__qualname__}",
            fn=function,
            retry=policy,
            timeout=timeout,
        )
        registry.add(spec)
        return spec

    return register(fn) if fn is not None else register


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
