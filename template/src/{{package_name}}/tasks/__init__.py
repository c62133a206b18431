"""Background tasks that are never silent: register with @task, schedule with `Tasks`."""

from .control import report_progress
from .models import TaskRecord, TaskState
from .registry import TaskSpec, registry, task
from .scheduler import TaskAccepted, Tasks, TaskScheduler, TaskService

__all__ = [
    "TaskAccepted",
    "TaskRecord",
    "TaskScheduler",
    "TaskService",
    "TaskSpec",
    "TaskState",
    "Tasks",
    "registry",
    "report_progress",
    "task",
]
