"""The projects' activity log: one SQLite table, written by a task, read a page at a time.

A table rather than a text file, for three reasons an append-only file cannot give cheaply:

- every field is a column of its own, so no text in one (a tab, a line break, U+2028, a piece of
  JSON) can ever pass for another field or another entry;
- `task_id` is a unique key, so a task that runs again (delivery is at-least-once) writes its
  entry once, however much was written since: the database checks every entry, atomically;
- an index on (project_id, entry_id) serves one project's page without reading the others'.

SQLite keeps it in one file (ACTIVITY_LOG_PATH) that the service's processes on one host share,
like the task store's: WAL lets a page be read while an entry is written.
"""

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS activity (
    entry_id INTEGER PRIMARY KEY,  -- the order entries were written in; the cursor of a page
    project_id INTEGER NOT NULL,
    at TEXT NOT NULL,
    user TEXT NOT NULL,
    activity TEXT NOT NULL,
    task_id TEXT UNIQUE            -- the task that wrote it: one entry per task (NULL: no task)
);
CREATE INDEX IF NOT EXISTS activity_by_project ON activity (project_id, entry_id);
"""
_COLUMNS = "entry_id, project_id, at, user, activity, task_id"
# A page: one project's entries older than a cursor, newest first. A search of the index
# activity_by_project, in its order, stopping after LIMIT rows: nothing else is read or sorted.
PAGE_QUERY = (
    f"SELECT {_COLUMNS} FROM activity WHERE project_id = ? AND entry_id < ?"  # noqa: S608 - fixed text
    " ORDER BY entry_id DESC LIMIT ?"
)


@dataclass(frozen=True)
class Entry:
    entry_id: int
    project_id: int
    at: str
    user: str
    activity: str
    task_id: str | None


# The process's connection to the log, kept open: closing the last connection of a WAL database
# checkpoints it, which would cost each entry several milliseconds. One connection, one statement
# at a time (each takes microseconds); other processes wait on SQLite's lock, up to `timeout`.
_open_log: tuple[Path, int, sqlite3.Connection] | None = None
_lock = threading.Lock()


@contextmanager
def _database(path: Path) -> Iterator[sqlite3.Connection]:
    """The connection to the log at `path`, for one statement or a few, alone."""
    global _open_log
    with _lock:
        # Reopened in a forked child (a connection must not cross a fork) and for another path
        # (tests).
        if _open_log is None or _open_log[:2] != (path, os.getpid()):
            if _open_log is not None and _open_log[1] == os.getpid():
                _open_log[2].close()
            _open_log = (path, os.getpid(), _connect(path))
        yield _open_log[2]


def _connect(path: Path) -> sqlite3.Connection:
    """Open the log at `path`, made (0600, in a 0700 folder) if it does not exist.

    Private from the start, whatever the umask: entries name people. SQLite gives its -wal and
    -shm files the database file's permissions.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    connection = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    # As the task store: in WAL mode a commit survives a crash of the process; only a power loss
    # can drop the last ones.
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.executescript(_SCHEMA)
    return connection


def add_entry(
    path: Path, *, project_id: int, at: str, user: str, activity: str, task_id: str | None
) -> Entry:
    """Add an entry, unless the task `task_id` added one already: then that one is returned."""
    with _database(path) as db:
        # ON CONFLICT DO NOTHING: a second run of the same task changes nothing, in one statement
        # (no read-then-write race between two runs of it either).
        db.execute(
            "INSERT INTO activity (project_id, at, user, activity, task_id) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (task_id) DO NOTHING",
            (project_id, at, user, activity, task_id),
        )
        # The entry of this task, whichever run wrote it (without a task: the one just added).
        if task_id is None:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM activity WHERE entry_id = last_insert_rowid()"  # noqa: S608 - fixed text
            ).fetchone()
        else:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM activity WHERE task_id = ?",  # noqa: S608 - fixed text
                (task_id,),
            ).fetchone()
    return Entry(*row)


def project_page(
    path: Path, project_id: int, *, limit: int, before: int | None
) -> tuple[list[Entry], bool]:
    """Up to `limit` entries of one project, newest first, older than entry `before` if given;
    and whether older entries remain. Reads `limit + 1` rows through the index, whatever the
    size of the log."""
    if not path.exists():
        return [], False
    with _database(path) as db:
        rows = db.execute(
            PAGE_QUERY,
            (project_id, before if before is not None else 2**63 - 1, limit + 1),
        ).fetchall()
    return [Entry(*row) for row in rows[:limit]], len(rows) > limit
