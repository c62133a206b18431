"""The default task store: one SQLite file in WAL mode.

Durable across a crash of the server, and shared by the worker processes of one host (uvicorn
`--workers N`, gunicorn), which all open the same file. Each OS thread gets its own connection;
WAL lets readers proceed while one writer commits.

A save is an upsert that never clears `cancel_requested` (only `request_cancel` sets it), and a
progress write touches only `progress` and `version`. Idempotency claims and schedule slots are
tables beside the records: a primary key makes each claim atomic across threads and processes.
A database made by an older version of this store gains the new columns when it is opened.
"""

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..models import FINAL_STATES, IdempotencyClaim, TaskProgress, TaskRecord, TaskState, utcnow
from .codec import (
    claim_from_fields,
    deliveries_from_json,
    deliveries_to_json,
    progress_from_json,
    progress_to_json,
    slot_number,
)

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
    caller TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress TEXT,
    idempotency_key TEXT,
    callback_url TEXT,
    callback_deliveries TEXT NOT NULL DEFAULT '[]',
    schedule_slot TEXT,
    version INTEGER NOT NULL DEFAULT 0,
    traceparent TEXT
);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (state, created_at);
CREATE INDEX IF NOT EXISTS tasks_by_finish ON tasks (finished_at) WHERE finished_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS runners (owner TEXT PRIMARY KEY, seen_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency_claims (
    caller TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    task_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (caller, key)
);
CREATE INDEX IF NOT EXISTS idempotency_claims_by_task ON idempotency_claims (task_id);
CREATE INDEX IF NOT EXISTS idempotency_claims_by_age ON idempotency_claims (created_at);
-- The latest slot claimed of each periodic schedule (microseconds since the epoch): a slot is
-- claimed by moving it forward, so one row per schedule is all there ever is.
CREATE TABLE IF NOT EXISTS schedule_slots (
    schedule TEXT PRIMARY KEY,
    slot INTEGER NOT NULL,
    claimed_at REAL NOT NULL
);
"""
# Columns added since the first schema, for databases made before them: (column, definition).
_ADDED_COLUMNS = (
    ("caller", "TEXT"),
    ("cancel_requested", "INTEGER NOT NULL DEFAULT 0"),
    ("progress", "TEXT"),
    ("idempotency_key", "TEXT"),
    ("callback_url", "TEXT"),
    ("callback_deliveries", "TEXT NOT NULL DEFAULT '[]'"),
    ("schedule_slot", "TEXT"),
    ("version", "INTEGER NOT NULL DEFAULT 0"),
    ("traceparent", "TEXT"),
)
_INDEXES_ON_ADDED_COLUMNS = """
CREATE INDEX IF NOT EXISTS tasks_by_caller ON tasks (caller, created_at);
"""

_COLUMNS = (
    "task_id", "name", "state", "attempts", "max_attempts", "args", "kwargs", "result", "error",
    "created_at", "started_at", "finished_at", "next_attempt_at", "owner", "request_id", "caller",
    "cancel_requested", "progress", "idempotency_key", "callback_url", "callback_deliveries",
    "schedule_slot", "version", "traceparent",
)  # fmt: skip
_COLUMNS_BUT_ARGUMENTS = ", ".join(c for c in _COLUMNS if c not in ("args", "kwargs"))
# An upsert: a save replaces every column but `cancel_requested`, which it can only set (OR),
# so a runner's save of its older copy never undoes a request to cancel made meanwhile.
_REPLACED = ", ".join(
    f"{column} = excluded.{column}"
    for column in _COLUMNS
    if column not in ("task_id", "cancel_requested")
)
_SAVE = f"""
INSERT INTO tasks ({", ".join(_COLUMNS)}) VALUES ({", ".join("?" for _ in _COLUMNS)})
ON CONFLICT (task_id) DO UPDATE SET {_REPLACED},
    cancel_requested = tasks.cancel_requested OR excluded.cancel_requested
"""  # noqa: S608 - fixed column names
_FINAL_STATES = tuple(sorted(state.value for state in FINAL_STATES))
_IN_FINAL_STATES = f"({', '.join('?' for _ in _FINAL_STATES)})"


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


_BUSY_TIMEOUT = 10.0


def _use_write_ahead_log(connection: sqlite3.Connection) -> None:
    """Switch the file to WAL mode (it stays so), waiting while another connection holds a lock.

    SQLite answers a journal-mode change with "database is locked" at once, without the busy
    timeout, while another connection reads or writes: two processes opening a new (or
    pre-WAL) database together would otherwise see one of them fail to start.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


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
        connection = self._connection()
        connection.executescript(_SCHEMA)
        # Under the write lock: processes opening an older database at once add each column once.
        with self._transaction() as connection:
            present = {row["name"] for row in connection.execute("PRAGMA table_info(tasks)")}
            for column, definition in _ADDED_COLUMNS:
                if column not in present:
                    connection.execute(f"ALTER TABLE tasks ADD COLUMN {column} {definition}")
        connection.executescript(_INDEXES_ON_ADDED_COLUMNS)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A transaction that holds the write lock from its start (BEGIN IMMEDIATE), so what it
        reads cannot change before it writes."""
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def _connection(self) -> sqlite3.Connection:
        thread = threading.get_ident()
        connection = self._connections.get(thread)
        if connection is None:
            connection = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            _use_write_ahead_log(connection)
            # NORMAL in WAL mode: a commit survives a process crash; only a power loss can
            # drop the last transactions.
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.row_factory = sqlite3.Row
            with self._connections_lock:
                self._connections[thread] = connection
        return connection

    def save(self, record: TaskRecord) -> None:
        self._connection().execute(_SAVE, _to_row(record))

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

    def request_cancel(self, task_id: str) -> TaskRecord | None:
        with self._transaction() as connection:
            connection.execute(
                "UPDATE tasks SET cancel_requested = 1 WHERE task_id = ?", (task_id,)
            )
            row = connection.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return _from_row(row) if row is not None else None

    def save_progress(self, task_id: str, progress: TaskProgress, version: int) -> None:
        # Never back to an older version: a progress write that arrives after a later save of
        # the record (the one that ended it) does not undo that save's progress.
        self._connection().execute(
            "UPDATE tasks SET progress = ?, version = ? WHERE task_id = ? AND version <= ?",
            (progress_to_json(progress), version, task_id, version),
        )

    def claim_idempotency_key(self, claim: IdempotencyClaim) -> IdempotencyClaim | None:
        # The primary key (caller, key) decides: of two inserts racing, one is ignored. A new
        # key (the usual case) costs that one statement, a transaction of its own.
        row = _claim_row(claim)
        if self._connection().execute(_CLAIM, row).rowcount == 1:
            return None
        # Held: try again and read the holder in one transaction, so that a release between the
        # two cannot leave neither a claim of ours nor a holder to report.
        with self._transaction() as connection:
            if connection.execute(_CLAIM, row).rowcount == 1:
                return None
            holder = connection.execute(
                "SELECT * FROM idempotency_claims WHERE caller = ? AND key = ?",
                (claim.caller, claim.key),
            ).fetchone()
        return claim_from_fields(dict(holder))

    def release_idempotency_key(self, caller: str, key: str, task_id: str) -> None:
        self._connection().execute(
            "DELETE FROM idempotency_claims WHERE caller = ? AND key = ? AND task_id = ?",
            (caller, key, task_id),
        )

    def claim_schedule_slot(self, schedule: str, slot: datetime) -> bool:
        # A slot is claimed by moving the schedule's latest slot forward to it, which only one
        # writer can do: a slot already claimed, or older than one claimed, is refused.
        claimed = self._connection().execute(
            """
            INSERT INTO schedule_slots (schedule, slot, claimed_at) VALUES (?, ?, ?)
            ON CONFLICT (schedule) DO UPDATE
            SET slot = excluded.slot, claimed_at = excluded.claimed_at
            WHERE excluded.slot > schedule_slots.slot
            """,
            (schedule, slot_number(slot), time.time()),
        )
        return claimed.rowcount == 1

    def heartbeat(self, owner: str) -> None:
        self._connection().execute(
            "INSERT OR REPLACE INTO runners (owner, seen_at) VALUES (?, ?)", (owner, time.time())
        )

    def retire(self, owner: str) -> None:
        self._connection().execute("DELETE FROM runners WHERE owner = ?", (owner,))

    def claim_orphans(self, owner: str, stale_after: float, limit: int) -> list[TaskRecord]:
        # IMMEDIATE takes the write lock up front, so two runners cannot claim the same rows.
        with self._transaction() as connection:
            now = time.time()
            connection.execute(
                "INSERT OR REPLACE INTO runners (owner, seen_at) VALUES (?, ?)", (owner, now)
            )
            rows = connection.execute(
                f"""
                SELECT * FROM tasks
                WHERE state NOT IN {_IN_FINAL_STATES} AND owner IS NOT NULL AND owner != ?
                  AND owner NOT IN (SELECT owner FROM runners WHERE seen_at > ?)
                ORDER BY created_at LIMIT ?
                """,  # noqa: S608 - fixed placeholders
                (*_FINAL_STATES, owner, now - stale_after, limit),
            ).fetchall()
            connection.executemany(
                "UPDATE tasks SET owner = ? WHERE task_id = ?",
                [(owner, row["task_id"]) for row in rows],
            )
        claimed = [_from_row(row) for row in rows]
        for record in claimed:
            record.owner = owner
        return claimed

    def purge_expired(self, limit: int) -> int:
        if self.retention is None:
            return 0
        # finished_at is ISO 8601 text in UTC, so text order is time order (and the index's).
        cutoff = (utcnow() - self.retention).isoformat()
        with self._transaction() as connection:
            expired = [
                row["task_id"]
                for row in connection.execute(
                    f"""
                    SELECT task_id FROM tasks
                    WHERE finished_at <= ? AND state IN {_IN_FINAL_STATES}
                    LIMIT ?
                    """,  # noqa: S608 - fixed placeholders
                    (cutoff, *_FINAL_STATES, limit),
                )
            ]
            connection.executemany(
                "DELETE FROM tasks WHERE task_id = ?", [(task_id,) for task_id in expired]
            )
            # The claims of the records deleted, and those whose request never stored its task
            # (a process that died in between), once they are as old as the retention.
            connection.executemany(
                "DELETE FROM idempotency_claims WHERE task_id = ?",
                [(task_id,) for task_id in expired],
            )
            connection.execute(
                """
                DELETE FROM idempotency_claims WHERE rowid IN (
                    SELECT c.rowid FROM idempotency_claims AS c
                    WHERE c.created_at <= ?
                      AND NOT EXISTS (SELECT 1 FROM tasks AS t WHERE t.task_id = c.task_id)
                    LIMIT ?
                )
                """,
                (cutoff, limit),
            )
        return len(expired)

    def count_states(self) -> dict[TaskState, int]:
        rows = self._connection().execute(_COUNT_STATES).fetchall()
        return {TaskState(state): count for state, count in rows}

    def ping(self) -> None:
        self._connection().execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._connections_lock:
            for connection in self._connections.values():
                connection.close()
            self._connections.clear()


# An index (tasks_by_state) answers it without reading a record.
_COUNT_STATES = "SELECT state, count(*) FROM tasks GROUP BY state"

_CLAIM = """
INSERT OR IGNORE INTO idempotency_claims (caller, key, fingerprint, task_id, created_at)
VALUES (?, ?, ?, ?, ?)
"""


def _claim_row(claim: IdempotencyClaim) -> tuple[str | None, ...]:
    created_at = _iso(claim.created_at.astimezone(UTC))
    return (claim.caller, claim.key, claim.fingerprint, claim.task_id, created_at)


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
        int(record.cancel_requested),
        progress_to_json(record.progress) if record.progress is not None else None,
        record.idempotency_key,
        record.callback_url,
        deliveries_to_json(record.callback_deliveries),
        _iso(record.schedule_slot),
        record.version,
        record.traceparent,
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
        cancel_requested=bool(row["cancel_requested"]),
        progress=progress_from_json(row["progress"]),
        idempotency_key=row["idempotency_key"],
        callback_url=row["callback_url"],
        callback_deliveries=deliveries_from_json(row["callback_deliveries"]),
        schedule_slot=_parse(row["schedule_slot"]),
        version=row["version"],
        traceparent=row["traceparent"],
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None
