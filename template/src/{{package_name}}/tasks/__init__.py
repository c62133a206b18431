"""Background tasks that are never silent: register with @task, schedule with `Tasks`."""

from .control import TaskCancelledError, cancel_requested, raise_if_cancelled, report_progress
from .idempotency import idempotent
from .models import TaskRecord, TaskState
from .registry import TaskCall, TaskSpec, registry, task
from .scheduler import TaskAccepted, Tasks, TaskScheduler, TaskService

__all__ = [
    "TaskAccepted",
    "TaskCall",
    "TaskCancelledError",
    "TaskRecord",
    "TaskScheduler",
    "TaskService",
    "TaskSpec",
    "TaskState",
    "Tasks",
    "cancel_requested",
    "idempotent",
    "raise_if_cancelled",
    "registry",
    "report_progress",
    "task",
]
