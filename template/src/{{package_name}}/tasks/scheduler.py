"""`add_task`: FastAPI-style scheduling that returns a task id and never loses the task silently.

    @router.post("/reports", status_code=202)
    def create_report(tasks: Tasks) -> TaskAccepted:
        return tasks.add_task(build_report, "2024-Q1")

The record is stored (state `queued`) before the response is sent, and the task is handed to
the runner only after the response is sent, exactly like Starlette's BackgroundTasks, but
concurrent, bounded, retried and visible at /tasks/{task_id}.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, ParamSpec, TypeVar

from fastapi import BackgroundTasks, Depends, Request
from pydantic import BaseModel
from starlette.background import BackgroundTask

from ..auth import Caller, CurrentCaller
from ..errors import InputRefusedError, ServiceBusyError
from ..logs import request_id_var, task_context
from ..telemetry.tracing import current_traceparent
from .callbacks import CallbackPolicy, CallbackUrlError
from .json_values import JsonValueError, Location, checked_json_size
from .ledger import TaskLedger
from .models import IdempotencyClaim, TaskRecord, new_task_id
from .registry import TaskCall, TaskRegistry, TaskSpec
from .runner import QueueFullError, RunnerUnavailableError, TaskRunner
from .store import TaskStore

P = ParamSpec("P")
R = TypeVar("R")
logger = logging.getLogger(__name__)


class TaskAccepted(BaseModel):
    """The body of a 202: where to follow the task."""

    task_id: str
    status_url: str


@dataclass
class TaskService:
    """The task machinery one app runs with (kept on `app.state.tasks`)."""

    store: TaskStore
    # The one writer of task records in this app, shared with its runner.
    ledger: TaskLedger
    runner: TaskRunner
    registry: TaskRegistry
    retry_after: int
    # MAX_TASK_ARGUMENTS_BYTES: larger arguments are refused (413) rather than stored.
    max_arguments_bytes: int
    # Where completion callbacks may go (CALLBACK_* settings); the default refuses every URL.
    callbacks: CallbackPolicy = field(default_factory=CallbackPolicy)

    def read(self, query: Callable[[TaskStore], R]) -> R:
        """Run a read of the store for a request; a store that fails is a 503 with Retry-After
        (the client may simply ask again), never a 500."""
        try:
            return query(self.store)
        except Exception as error:
            logger.warning("task store read failed", exc_info=error)
            raise ServiceBusyError(
                "the task store is unavailable; try again shortly",
                self.retry_after,
                reason="store_unavailable",
            ) from error


@dataclass
class TaskScheduler:
    """Schedules registered tasks for one request."""

    service: TaskService
    background: BackgroundTasks
    # Who scheduled the tasks: only they (or an admin) may read them.
    caller: Caller
    # Stored and reserved, not yet handed to the runner: only these may still be abandoned.
    _pending: list[TaskRecord] = field(default_factory=list)
    _hand_over_queued: bool = False
    # The request's `Idempotency-Key` claim (tasks/idempotency.py): its task id is the id of the
    # first task this request stores; None once that task is stored.
    idempotency: IdempotencyClaim | None = None

    def add_task(
        self, fn: TaskSpec[P, Any] | TaskCall[P, Any], /, *args: P.args, **kwargs: P.kwargs
    ) -> TaskAccepted:
        """Accept a call of the registered task `fn`; it starts after the response is sent, or
        when its options say (`fn.options(delay=30)`, `fn.options(at=...)`).

        Raises TypeError for a function that is not registered with @task or for arguments
        that are not JSON, InputRefusedError (422 naming the argument, 413) for JSON values no
        store could keep as they are (tasks/json_values.py) or over MAX_TASK_ARGUMENTS_BYTES,
        and ServiceBusyError (503 + Retry-After) when the queue is full.
        """
        call = fn if isinstance(fn, TaskCall) else TaskCall(fn)
        spec = _registered_spec(self.service.registry, call.spec)
        _require_storable(spec.name, list(args), kwargs, self.service.max_arguments_bytes)
        callback_url = None
        if call.callback_url is not None:
            try:
                callback_url = self.service.callbacks.check(call.callback_url)
            except CallbackUrlError as error:
                raise InputRefusedError(str(error), location=["callback_url"]) from error
        claim = self.idempotency
        runner = self.service.runner
        try:
            runner.reserve()
        except (QueueFullError, RunnerUnavailableError) as error:
            raise ServiceBusyError(
                f"cannot accept the task now: {error}",
                self.service.retry_after,
                reason="queue_full" if isinstance(error, QueueFullError) else "runner_unavailable",
            ) from error
        record = TaskRecord(
            name=spec.name,
            args=list(args),
            kwargs=dict(kwargs),
            max_attempts=spec.retry.max_attempts,
            owner=runner.owner,
            request_id=request_id_var.get(),
            caller=self.caller.id,
            # A delayed task is `queued` until then; GET /tasks/{id} says when it is due.
            next_attempt_at=call.due_at,
            callback_url=callback_url,
            # Under the request's Idempotency-Key claim, its first task takes the id claimed.
            task_id=claim.task_id if claim is not None else new_task_id(),
            idempotency_key=claim.key if claim is not None else None,
            traceparent=current_traceparent(),
        )
        try:
            self.service.ledger.accept(record)
        except Exception as error:
            runner.release()
            raise ServiceBusyError(
                "cannot accept the task now: the task store is unavailable",
                self.service.retry_after,
                reason="store_unavailable",
            ) from error
        # Stored under the claimed id: the request's other tasks get ids of their own.
        self.idempotency = None
        self._pending.append(record)
        if not self._hand_over_queued:
            # First of the request's background callbacks, so a plain BackgroundTasks callback
            # that raises (Starlette stops at the first) or takes long cannot hold them back.
            self.background.tasks.insert(0, BackgroundTask(self.hand_over))
            self._hand_over_queued = True
        with task_context(record):
            logger.info("task accepted", extra={"task_name": spec.name})
        return TaskAccepted(task_id=record.task_id, status_url=f"/tasks/{record.task_id}")

    async def hand_over(self) -> None:
        """Give the runner every task scheduled so far (once the response is sent).

        Each record leaves `_pending` before `submit`: from then on it is the runner's, and
        nothing that fails later in the request may fail it or release its reservation. A
        runner that cannot take it raises; the record is then failed with the reason.
        """
        while self._pending:
            record = self._pending.pop(0)
            try:
                await self.service.runner.submit(record)
            except Exception as error:
                await self.service.ledger.not_handed_over(record, error)

    async def abandon(self, reason: BaseException) -> None:
        """The request failed before its tasks were handed over: they will never start.

        Off the loop: the ledger waits out a failing store rather than leave them `queued`.
        """
        ledger = self.service.ledger
        while self._pending:
            record = self._pending.pop(0)
            self.service.runner.release()
            why = RuntimeError(
                f"the request that scheduled this task failed ({type(reason).__name__})"
            )
            try:
                await asyncio.to_thread(ledger.failed, record, why)
            except Exception:
                with task_context(record):
                    logger.exception("could not record that the request scheduling it failed")


async def task_scheduler(
    request: Request, background: BackgroundTasks, caller: CurrentCaller
) -> AsyncIterator[TaskScheduler]:
    """The `Tasks` dependency. Its teardown runs once the response and the background callbacks
    are done (FastAPI's default "request" scope), and it only ever touches records never handed
    to the runner: an exception from the endpoint abandons them; one from a plain BackgroundTasks
    callback comes after the hand-over (which runs first), when none are left."""
    scheduler = TaskScheduler(service=request.app.state.tasks, background=background, caller=caller)
    try:
        yield scheduler
    except Exception as error:
        await scheduler.abandon(error)
        raise
    else:
        # An endpoint that returned a Response with a `background` of its own: ours never ran.
        await scheduler.hand_over()


Tasks = Annotated[TaskScheduler, Depends(task_scheduler)]
"""Declare `tasks: Tasks` in an endpoint to get `tasks.add_task(...)`."""


def _registered_spec(registry: TaskRegistry, fn: object) -> TaskSpec[Any, Any]:
    if isinstance(fn, TaskSpec) and registry.get(fn.name) is fn:
        return fn
    name = getattr(fn, "__qualname__", repr(fn))
    raise TypeError(
        f"{name} is not a registered task: decorate it with @task so it can be stored, "
        "retried and recovered after a restart"
    )


def _require_storable(name: str, args: list[Any], kwargs: dict[str, Any], max_bytes: int) -> None:
    """Refuse arguments a store could not keep and give back as they are, or too large ones."""
    located: list[tuple[Location, Any]] = [
        (("args", index), value) for index, value in enumerate(args)
    ]
    located += [(("kwargs", key), value) for key, value in kwargs.items()]
    size = 0
    for location, value in located:
        try:
            size += checked_json_size(value, location)
        except TypeError as error:
            # The endpoint's own mistake, not the client's: a 500, and the traceback in the log.
            raise TypeError(
                f"arguments of task {name!r} must be JSON values (str, int, float, bool, None, "
                f"lists and dicts of them): {error}"
            ) from error
        except JsonValueError as error:
            raise InputRefusedError(
                f"cannot be stored as JSON: {error.problem}", location=list(error.location)
            ) from error
    if size > max_bytes:
        raise InputRefusedError(
            f"the task's arguments are {size} bytes of JSON, over the limit of {max_bytes} "
            "(MAX_TASK_ARGUMENTS_BYTES)",
            status=413,
        )
