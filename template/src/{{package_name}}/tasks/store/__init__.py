"""Task stores, chosen by URL: `sqlite:///path/to/tasks.db`, `memory://`, `redis://host/db`,
`dynamodb://table` or `postgresql://user:password@host/dbname`."""

import importlib
from datetime import timedelta
from pathlib import Path

from .base import TaskStore
from .memory import MemoryTaskStore
from .sqlite import SqliteTaskStore, StoreLocationError, prepare_database_file

_SQLITE = "sqlite:///"

__all__ = [
    "MemoryTaskStore",
    "SqliteTaskStore",
    "StoreLocationError",
    "TaskStore",
    "open_store",
    "prepare_store_location",
]


def open_store(url: str, *, retention: timedelta | None) -> TaskStore:
    """Open the store a `TASK_STORE_URL` names; a URL of an unknown kind is a clear error.

    The store deletes finished records `retention` after they finished (None: never).
    """
    if url == "memory://":
        return MemoryTaskStore(retention=retention)
    if url.startswith(_SQLITE):
        return SqliteTaskStore(Path(url.removeprefix(_SQLITE)), retention=retention)
    if url.startswith(("redis://", "rediss://")):
        return _open_optional("redis", "RedisTaskStore", url, retention, "the Celery workers")
    if url.startswith("dynamodb://"):
        return _open_optional("dynamodb", "DynamoDbTaskStore", url, retention, "AWS Lambda")
    if url.startswith(("postgresql://", "postgres://")):
        return _open_optional(
            "postgres", "PostgresTaskStore", url, retention, "the answer task_store: postgres"
        )
    raise ValueError(
        f"TASK_STORE_URL {url!r} is not supported: use sqlite:///path/to/tasks.db or memory://"
    )


def prepare_store_location(url: str) -> None:
    """At startup, before anything runs: make sure this host can keep a store at `url` (the
    SQLite database's folder and file); StoreLocationError names the path that cannot be
    written. Stores that are servers (Redis, DynamoDB) are checked by /ready instead."""
    if url.startswith(_SQLITE):
        prepare_database_file(Path(url.removeprefix(_SQLITE)))


def _open_optional(
    module: str, class_name: str, url: str, retention: timedelta | None, comes_with: str
) -> TaskStore:
    """Open a store whose module a service has only with `comes_with`."""
    qualified = f"{__name__}.{module}"
    try:
        store_module = importlib.import_module(qualified)
    except ModuleNotFoundError as error:
        if error.name != qualified:
            raise
        raise ValueError(
            f"TASK_STORE_URL {url!r} needs the {module} task store (tasks/store/{module}.py), "
            f"which this service does not have: it comes with {comes_with}"
        ) from error
    store: TaskStore = getattr(store_module, class_name)(url, retention=retention)
    return store
