"""Control from inside a running task: progress reports.

PLACEHOLDER: only the signature of `report_progress`, doing nothing, so that the examples can
call it; the real module of issue 12 replaces this file.
"""


def report_progress(done: float, total: float | None = None, message: str | None = None) -> None:
    """Say how far the running task has come (placeholder: does nothing)."""
