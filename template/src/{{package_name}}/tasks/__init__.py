"""Background tasks that are never silent: register with @task, schedule with `Tasks`."""

from .idempotency import Idempotent
from .models import TaskRecord, TaskState
from .registry import TaskCall, TaskSpec, registry, task
from .scheduler import TaskAccepted, Tasks, TaskScheduler, TaskService

__all__ = [
    "Idempotent",
    "TaskAccepted",
    "TaskCall",
    "TaskRecord",
    "TaskScheduler",
    "TaskService",
    "TaskSpec",
    "TaskState",
    "Tasks",
    "registry",
    "task",
]
