"""A task store whose every call is timed and, when it raises, counted (telemetry/metrics.py).

    store = MeasuredStore(open_store(url, retention=retention))

The process that opens the store wraps it (the app, a Celery worker): every reader and writer
holds the wrapper, so no call escapes the metrics, and nothing in the stores themselves knows.
"""

import time
from collections.abc import Callable
from typing import Any

from ...telemetry import metrics
from ...telemetry.metrics import STORE_ERRORS, STORE_OPERATION
from .base import TaskStore


class MeasuredStore:
    """Delegates every attribute to `store`; its public methods are timed on the way.

    `isinstance` sees the wrapped store's class, so code that asks what kind of store it holds
    gets the same answer with or without the wrapper.
    """

    def __init__(self, store: TaskStore) -> None:
        self.wrapped = store

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self.wrapped)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.wrapped, name)
        if name.startswith("_") or not callable(attribute):
            return attribute
        measured = _measured(name, attribute)
        # Kept on the wrapper: the next call finds it without coming through here.
        self.__dict__[name] = measured
        return measured


def _measured(operation: str, call: Callable[..., Any]) -> Callable[..., Any]:
    def measured(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        except Exception:
            metrics.count(STORE_ERRORS, operation)
            raise
        finally:
            metrics.observe(STORE_OPERATION, time.perf_counter() - started, operation)

    return measured


def measured(store: TaskStore) -> TaskStore:
    """`store`, timed (typed as the store it wraps)."""
    wrapper: Any = MeasuredStore(store)
    return wrapper  # type: ignore[no-any-return]
