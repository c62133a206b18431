"""JSON log lines that carry the current request id, task id and trace.

The ids live in context variables: the request middleware sets `request_id`, the task runners set
`task_id` around each attempt, and every log line written meanwhile carries them, so one grep
follows a request into the background work it scheduled. `trace_id` and `span_id` come from
telemetry/tracing.py: the request's, or the attempt's (whose trace is the request's), whether
spans are exported or not.
"""

import json
import logging
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Protocol

from .log_output import LogOutput
from .redaction import mask_emails
from .telemetry.tracing import current_ids, joined

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
task_id_var: ContextVar[str | None] = ContextVar("task_id", default=None)

# Attributes every LogRecord has; anything else came through `extra=` and is logged as a field.
_STANDARD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, ids, extra fields, traceback.

    E-mail addresses in the message and the fields are masked (`a***@example.com`): personal
    data stays out of logs, which are kept and shared more widely than the task store. The
    traceback is left whole, for whoever debugs it.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_emails(record.getMessage()),
            "pid": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_") and value is not None:
                entry[key] = _masked(value)
        if record.exc_info and record.exc_info[1] is not None:
            entry["exception"] = "".join(traceback.format_exception(record.exc_info[1]))
        return json.dumps(entry, default=str)


def _masked(value: Any) -> Any:
    """A log field with the e-mail addresses in its text masked, in lists and dicts too."""
    if isinstance(value, str):
        return mask_emails(value)
    if isinstance(value, list | tuple):
        return [_masked(item) for item in value]
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    return value


def _stamp_ids(factory: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    """Wrap a LogRecord factory so every record carries the ids current where it was made."""

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        for name, variable in (("request_id", request_id_var), ("task_id", task_id_var)):
            value = variable.get()
            if value is not None:
                setattr(record, name, value)
        trace = current_ids()
        if trace is not None:
            record.trace_id = trace.trace_id
            record.span_id = trace.span_id
        return record

    make_record.stamps_ids = True  # type: ignore[attr-defined]
    return make_record


class Traceable(Protocol):
    """What a task record tells the logs: its id and the request that scheduled it."""

    @property
    def task_id(self) -> str: ...

    @property
    def request_id(self) -> str | None: ...

    @property
    def traceparent(self) -> str | None: ...


@contextmanager
def task_context(task: Traceable | str) -> Iterator[None]:
    """Log lines written inside carry the task's `task_id` and the `request_id` it was scheduled by.

    Given a record, both ids and the trace come from it, so a task's own lines (and the runner's
    about it) can be followed back to the request that scheduled it; given only an id (a message
    not yet matched to its record), the request id and trace are left as they are.
    """
    if isinstance(task, str):
        task_token = task_id_var.set(task)
        request_token = None
    else:
        task_token = task_id_var.set(task.task_id)
        request_token = request_id_var.set(task.request_id)
    try:
        if isinstance(task, str):
            yield
        else:
            with joined(task.traceparent):
                yield
    finally:
        if request_token is not None:
            request_id_var.reset(request_token)
        task_id_var.reset(task_token)


_json_handler: logging.Handler | None = None


def configure_logging(level: str) -> None:
    """Send every logger (uvicorn's included) through one JSON handler on stderr.

    Idempotent, and it leaves other handlers (pytest's log capture, say) alone.
    """
    global _json_handler
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "stamps_ids", False):
        logging.setLogRecordFactory(_stamp_ids(factory))
    root = logging.getLogger()
    if _json_handler is not None:
        root.removeHandler(_json_handler)
    # stderr, written off the event loop's thread (log_output.py).
    _json_handler = LogOutput(sys.stderr)
    _json_handler.setFormatter(JsonFormatter())
    root.addHandler(_json_handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # The request middleware writes one access line per request, with the request id.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
