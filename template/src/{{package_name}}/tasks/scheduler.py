"""`add_task`: FastAPI-style scheduling that returns a task id and never loses the task silently.

    @router.post("/reports", status_code=202)
    def create_report(tasks: Tasks) -> TaskAccepted:
        return tasks.add_task(build_report, "2024-Q1")

The record is stored (state `queued`) before the response is sent, and the task is handed to
the runner only after the response is sent, exactly like Starlette's BackgroundTasks, but
concurrent, bounded, retried and visible at /tasks/{task_id}.
"""

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any, ParamSpec

from fastapi import BackgroundTasks, Depends, Request
from pydantic import BaseModel

from ..errors import ServiceBusyError
from ..logs import request_id_var, task_context
from .ledger import TaskLedger
from .models import TaskRecord
from .registry import TaskRegistry, TaskSpec
from .runner import QueueFullError, RunnerUnavailableError, TaskRunner
from .store import TaskStore

P = ParamSpec("P")
logger = logging.getLogger(__name__)


class TaskAccepted(BaseModel):
    """The body of a 202: where to follow the task."""

    task_id: str
    status_url: str


@dataclass
class TaskService:
    """The task machinery one app runs with (kept on `app.state.tasks`)."""

    store: TaskStore
    runner: TaskRunner
    registry: TaskRegistry
    retry_after: int


@dataclass
class TaskScheduler:
    """Schedules registered tasks for one request."""

    service: TaskService
    background: BackgroundTasks
    _pending: list[TaskRecord] = field(default_factory=list)

    def add_task(self, fn: TaskSpec[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> TaskAccepted:
        """Accept a call of the registered task `fn`; it starts after the response is sent.

        Raises TypeError for a function that is not registered with @task or for arguments
        that are not JSON, and ServiceBusyError (503 + Retry-After) when the queue is full.
        """
        spec = _registered_spec(self.service.registry, fn)
        _require_json(spec.name, list(args), kwargs)
        runner = self.service.runner
        try:
            runner.reserve()
        except (QueueFullError, RunnerUnavailableError) as error:
            raise ServiceBusyError(
                f"cannot accept the task now: {error}", self.service.retry_after
            ) from error
        record = TaskRecord(
            name=spec.name,
            args=list(args),
            kwargs=dict(kwargs),
            max_attempts=spec.retry.max_attempts,
            owner=runner.owner,
            request_id=request_id_var.get(),
        )
        try:
            self.service.store.save(record)
        except Exception as error:
            runner.release()
            logger.exception("task store write failed; task not accepted")
            raise ServiceBusyError(
                "cannot accept the task now: the task store is unavailable",
                self.service.retry_after,
            ) from error
        self._pending.append(record)
        self.background.add_task(runner.submit, record)
        with task_context(record.task_id):
            logger.info("task accepted", extra={"task_name": spec.name})
        return TaskAccepted(task_id=record.task_id, status_url=f"/tasks/{record.task_id}")

    def abandon(self, reason: BaseException) -> None:
        """The request failed after scheduling: its tasks will never start; record that."""
        ledger = TaskLedger(self.service.store)
        for record in self._pending:
            self.service.runner.release()
            ledger.failed(
                record,
                RuntimeError(
                    f"the request that scheduled this task failed ({type(reason).__name__})"
                ),
            )
        self._pending.clear()


async def task_scheduler(
    request: Request, background: BackgroundTasks
) -> AsyncIterator[TaskScheduler]:
    scheduler = TaskScheduler(service=request.app.state.tasks, background=background)
    try:
        yield scheduler
    except Exception as error:
        scheduler.abandon(error)
        raise


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


def _require_json(name: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    try:
        json.dumps([args, kwargs], allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"arguments of task {name!r} must be JSON values (str, int, float, bool, None, "
            f"lists and dicts of them): {error}"
        ) from error
