"""The task contract's own steps and nothing else, through the rendered service's own parts.

For contract_floor.py's driver and contract_floor_app.py, which run in a rendered examples
project's interpreter with bench/in_process/ on PYTHONPATH. A task is:

- accepted: its record inserted through the template's SQLite store (WAL), the commit a 202
  stands for, and the "task accepted" line;
- run: the record read and written `running`, the "task started" line, the task's body, the
  record read again (a request to cancel may have come meanwhile) and written `succeeded`, the
  "task succeeded" line.

The lines go through the service's JSON formatter. These are the reads and writes the template's
attempt lifecycle makes for a task that succeeds at its first attempt; if that lifecycle changes
its sequence, this has to follow. No routing, middleware, runner, retries or heartbeats.
"""

import itertools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO


class ContractSteps:
    def __init__(self, package: str, directory: Path, log_stream: TextIO | None = None) -> None:
        """The store and the activity log in `directory`; lines to `log_stream` (stderr if None)."""
        self.logs = __import__(f"{package}.logs", fromlist=["configure_logging"])
        self.models = __import__(f"{package}.tasks.models", fromlist=["TaskRecord"])
        sqlite = __import__(f"{package}.tasks.store.sqlite", fromlist=["SqliteTaskStore"])
        self.activity = __import__(f"{package}.examples.activity", fromlist=["add_entry"])
        self.logs.configure_logging("INFO")
        if log_stream is not None:
            self.logs._json_handler.setStream(log_stream)
        self.logger = logging.getLogger(f"{package}.tasks")
        self.store = sqlite.SqliteTaskStore(directory / "tasks.db")
        self.activity_log = directory / "activity.db"
        # Each entry_alone() entry its own task id: none is a repeat the log would skip.
        self._entry_ids = itertools.count()

    def accept(self, index: int) -> Any:
        record = self.models.TaskRecord(
            name="record_project_activity",
            args=[index % 997 + 1, "created 'floor'", "bench"],
            kwargs={},
            max_attempts=3,
            request_id="0123456789abcdef",
        )
        self.store.save(record)
        with self.logs.task_context(record):
            self.logger.info("task accepted", extra={"task_name": record.name})
        return record

    def run(self, record: Any, body: Callable[[Any], None]) -> None:
        """Run `record`'s task as the lifecycle would, `body(stored_record)` being its work."""
        models = self.models
        with self.logs.task_context(record):
            stored = self.store.get(record.task_id)
            stored.state, stored.attempts = models.TaskState.RUNNING, 1
            stored.started_at, stored.version = models.utcnow(), stored.version + 1
            self.store.save(stored)
            self.logger.info("task started", extra={"task_name": stored.name, "attempts": 1})
            body(stored)
            self.store.get(record.task_id)
            stored.state, stored.finished_at = models.TaskState.SUCCEEDED, models.utcnow()
            stored.version += 1
            self.store.save(stored)
            self.logger.info("task succeeded", extra={"task_name": stored.name, "attempts": 1})

    def add_activity(self, stored: Any) -> None:
        """The examples' activity task: its entry in the project's SQLite activity log."""
        project, text, user = stored.args
        self.activity.add_entry(
            self.activity_log, project_id=project, at=datetime.now(UTC).isoformat(),
            user=user, activity=text, task_id=stored.task_id,
        )  # fmt: skip

    def entry_alone(self) -> None:
        self.activity.add_entry(
            self.activity_log, project_id=1, at=datetime.now(UTC).isoformat(), user="bench",
            activity="created 'floor'", task_id=f"entry-{next(self._entry_ids)}",
        )  # fmt: skip


def nothing(stored: Any) -> None:
    """The body of a no-op task."""
