"""The default task store: one SQLite file in WAL mode.

Durable across a crash of the server, and shared by the worker processes of one host (uvicorn
`--workers N`, gunicorn), which all open the same file. Each OS thread gets its own connection;
WAL lets readers proceed while one writer commits.
"""

import json
import os
import sqlite3
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ..models import CallbackDelivery, IdempotencyClaim, TaskRecord, TaskState, utcnow

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    args TEXT NOT NULL,
    kwargs TEXT NOT NULL,
    result TEXT,
    error TEXT,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    next_attempt_at TEXT,
    owner TEXT,
    request_id TEXT,
    caller TEXT
);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (state, created_at);
CREATE INDEX IF NOT EXISTS tasks_by_finish ON tasks (finished_at) WHERE finished_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS runners (owner TEXT PRIMARY KEY, seen_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    caller TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    task_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (caller, key)
);
"""
# Columns added since the first schema, for databases made before them: (column, definition).
_ADDED_COLUMNS = (
    ("caller", "TEXT"),
    ("idempotency_key", "TEXT"),
    ("callback_url", "TEXT"),
    ("callback_deliveries", "TEXT"),
    ("version", "INTEGER NOT NULL DEFAULT 0"),
)
_INDEXES_ON_ADDED_COLUMNS = """
CREATE INDEX IF NOT EXISTS tasks_by_caller ON tasks (caller, created_at);
"""

_COLUMNS = (
    "task_id", "name", "state", "attempts", "max_attempts", "args", "kwargs", "result", "error",
    "created_at", "started_at", "finished_at", "next_attempt_at", "owner", "request_id", "caller",
    "idempotency_key", "callback_url", "callback_deliveries", "version",
)  # fmt: skip
_COLUMNS_BUT_ARGUMENTS = ", ".join(c for c in _COLUMNS if c not in ("args", "kwargs"))
_FINAL_STATES = (TaskState.SUCCEEDED.value, TaskState.FAILED.value)


class StoreLocationError(Exception):
    """The database's folder or file cannot be made or written; the message names the path."""


def prepare_database_file(path: Path) -> None:
    """Make the database's folder (0700) and file (0600) unless they exist, and check that the
    folder takes new files (SQLite adds -wal and -shm beside the database); else raise
    StoreLocationError naming the path.

    Private to the service's user from the start, whatever the umask: records hold the callers'
    arguments and results. SQLite gives the -wal and -shm files the database file's permissions.
    """
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError as error:
        reason = error.strerror or str(error)
        where = error.filename or path
        raise StoreLocationError(
            f"TASK_STORE_URL: the SQLite task store {path} cannot be written: {reason} ({where})"
        ) from error
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StoreLocationError(
            f"TASK_STORE_URL: the folder {directory} of the SQLite task store takes no new files "
            "(SQLite writes its -wal and -shm files there)"
        )


class SqliteTaskStore:
    def __init__(self, path: Path, *, retention: timedelta | None = None) -> None:
        self.path = path
        self.retention = retention
        prepare_database_file(path)
        # One connection per OS thread, keyed by the thread's id rather than kept in a
        # threading.local: a native (Rust) worker thread gets a fresh Python thread state each
        # time it calls into Python, so a thread-local would open (and keep) a new connection for
        # every call. Ids of threads that ended are reused by new threads, which keeps the count
        # bounded by the threads alive at once.
        self._connections: dict[int, sqlite3.Connection] = {}
        self._connections_lock = threading.Lock()
        with self._connection() as connection:
            connection.executescript(_SCHEMA)
            present = {row["name"] for row in connection.execute("PRAGMA table_info(tasks)")}
            for column, definition in _ADDED_COLUMNS:
                if column not in present:
                    connection.execute(f"ALTER TABLE tasks ADD COLUMN {column} {definition}")
            connection.executescript(_INDEXES_ON_ADDED_COLUMNS)

    def _connection(self) -> sqlite3.Connection:
        thread = threading.get_ident()
        connection = self._connections.get(thread)
        if connection is None:
            connection = sqlite3.connect(
                self.path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a process crash; only a power loss can
            # drop the last transactions.
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.row_factory = sqlite3.Row
            with self._connections_lock:
                self._connections[thread] = connection
        return connection

    def save(self, record: TaskRecord) -> None:
        placeholders = ", ".join("?" for _ in _COLUMNS)
        self._connection().execute(
            f"INSERT OR REPLACE INTO tasks ({', '.join(_COLUMNS)}) VALUES ({placeholders})",  # noqa: S608 - fixed column names
            _to_row(record),
        )

    def get(self, task_id: str) -> TaskRecord | None:
        row = (
            self._connection()
            .execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
            .fetchone()
        )
        return _from_row(row) if row is not None else None

    def recent(
        self,
        state: TaskState | None = None,
        limit: int = 50,
        caller: str | None = None,
        *,
        with_arguments: bool = True,
    ) -> list[TaskRecord]:
        conditions, values = [], []
        if state is not None:
            conditions.append("state = ?")
            values.append(state.value)
        if caller is not None:
            conditions.append("caller = ?")
            values.append(caller)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        columns = "*" if with_arguments else _COLUMNS_BUT_ARGUMENTS
        rows = self._connection().execute(
            f"SELECT {columns} FROM tasks {where} ORDER BY created_at DESC LIMIT ?",  # noqa: S608 - fixed columns and conditions
            (*values, limit),
        )
        return [_from_row(row, with_arguments=with_arguments) for row in rows]

    def claim_idempotency_key(self, claim: IdempotencyClaim) -> IdempotencyClaim | None:
        connection = self._connection()
        inserted = connection.execute(
            "INSERT OR IGNORE INTO idempotency_keys (caller, key, fingerprint, task_id, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                claim.caller,
                claim.key,
                claim.fingerprint,
                claim.task_id,
                claim.created_at.isoformat(),
            ),
        )
        if inserted.rowcount == 1:
            return None
        row = connection.execute(
            "SELECT * FROM idempotency_keys WHERE caller = ? AND key = ?", (claim.caller, claim.key)
        ).fetchone()
        if row is None:  # released meanwhile: try again
            return self.claim_idempotency_key(claim)
        return IdempotencyClaim(
            caller=row["caller"],
            key=row["key"],
            fingerprint=row["fingerprint"],
            task_id=row["task_id"],
            created_at=datetime.fromisoformat(row["created_at"]),
        )

    def release_idempotency_key(self, caller: str, key: str, task_id: str) -> None:
        self._connection().execute(
            "DELETE FROM idempotency_keys WHERE caller = ? AND key = ? AND task_id = ?",
            (caller, key, task_id),
        )

    def heartbeat(self, owner: str) -> None:
        self._connection().execute(
            "INSERT OR REPLACE INTO runners (owner, seen_at) VALUES (?, ?)", (owner, time.time())
        )

    def retire(self, owner: str) -> None:
        self._connection().execute("DELETE FROM runners WHERE owner = ?", (owner,))

    def claim_orphans(self, owner: str, stale_after: float, limit: int) -> list[TaskRecord]:
        connection = self._connection()
        # IMMEDIATE takes the write lock up front, so two runners cannot claim the same rows.
        connection.execute("BEGIN IMMEDIATE")
        try:
            now = time.time()
            connection.execute(
                "INSERT OR REPLACE INTO runners (owner, seen_at) VALUES (?, ?)", (owner, now)
            )
            rows = connection.execute(
                """
                SELECT * FROM tasks
                WHERE state NOT IN (?, ?) AND owner IS NOT NULL AND owner != ?
                  AND owner NOT IN (SELECT owner FROM runners WHERE seen_at > ?)
                ORDER BY created_at LIMIT ?
                """,
                (*_FINAL_STATES, owner, now - stale_after, limit),
            ).fetchall()
            connection.executemany(
                "UPDATE tasks SET owner = ? WHERE task_id = ?",
                [(owner, row["task_id"]) for row in rows],
            )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        claimed = [_from_row(row) for row in rows]
        for record in claimed:
            record.owner = owner
        return claimed

    def purge_expired(self, limit: int) -> int:
        if self.retention is None:
            return 0
        # finished_at is ISO 8601 text in UTC, so text order is time order (and the index's).
        cutoff = (utcnow() - self.retention).isoformat()
        deleted = self._connection().execute(
            """
            DELETE FROM tasks WHERE task_id IN (
                SELECT task_id FROM tasks
                WHERE finished_at <= ? AND state IN (?, ?)
                LIMIT ?
            )
            """,
            (cutoff, *_FINAL_STATES, limit),
        )
        return deleted.rowcount

    def ping(self) -> None:
        self._connection().execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._connections_lock:
            for connection in self._connections.values():
                connection.close()
            self._connections.clear()


def _to_row(record: TaskRecord) -> tuple[Any, ...]:
    return (
        record.task_id,
        record.name,
        record.state.value,
        record.attempts,
        record.max_attempts,
        json.dumps(record.args),
        json.dumps(record.kwargs),
        json.dumps(record.result),
        record.error,
        record.created_at.isoformat(),
        _iso(record.started_at),
        _iso(record.finished_at),
        _iso(record.next_attempt_at),
        record.owner,
        record.request_id,
        record.caller,
        record.idempotency_key,
        record.callback_url,
        json.dumps([_delivery_json(d) for d in record.callback_deliveries]),
        record.version,
    )


def _from_row(row: sqlite3.Row, *, with_arguments: bool = True) -> TaskRecord:
    return TaskRecord(
        task_id=row["task_id"],
        name=row["name"],
        state=TaskState(row["state"]),
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        args=json.loads(row["args"]) if with_arguments else [],
        kwargs=json.loads(row["kwargs"]) if with_arguments else {},
        result=json.loads(row["result"]) if row["result"] is not None else None,
        error=row["error"],
        created_at=datetime.fromisoformat(row["created_at"]),
        started_at=_parse(row["started_at"]),
        finished_at=_parse(row["finished_at"]),
        next_attempt_at=_parse(row["next_attempt_at"]),
        owner=row["owner"],
        request_id=row["request_id"],
        caller=row["caller"],
        idempotency_key=row["idempotency_key"],
        callback_url=row["callback_url"],
        callback_deliveries=[
            CallbackDelivery(
                attempt=d["attempt"],
                at=datetime.fromisoformat(d["at"]),
                status=d["status"],
                error=d["error"],
            )
            for d in json.loads(row["callback_deliveries"] or "[]")
        ],
        version=row["version"],
    )


def _delivery_json(delivery: CallbackDelivery) -> dict[str, Any]:
    return {
        "attempt": delivery.attempt,
        "at": delivery.at.isoformat(),
        "status": delivery.status,
        "error": delivery.error,
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None
