"""Uploaded files on disk: stored under their task's id, removed once no task will read them.

The client's file name never reaches the file system (the task reports it back in its result),
so no name can climb out of the upload directory, hide itself or overwrite another upload. An
upload lives through three stages:

1. `.<random hex>.partial` while it is received; no task refers to it yet. The request removes it
   if anything fails (too large, the task refused).
2. `<task id>` once its task is accepted: renamed before the response is sent, so before the task
   can start. Only now does the file name tell whose it is, which the sweep needs.
3. Gone: the task removes it once analysed. If the task ends failed instead (every attempt
   failed, or its last attempt died with its process), the sweep removes it.

The sweep (`sweep_uploads`) runs at the API's startup and every `SWEEP_INTERVAL_SECONDS` after:
it removes each upload whose task is final or no longer in the store, and each partial file
left untouched for `STALE_PARTIAL_SECONDS` (its request died with its process). So while the API
runs, no upload outlives its task record (kept TASK_RETENTION_SECONDS after the task ends) by more
than one interval.
"""

import asyncio
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from ..settings import get_settings
from ..tasks.models import TASK_ID_PATTERN
from ..tasks.store import TaskStore

logger = logging.getLogger(__name__)

SWEEP_INTERVAL_SECONDS = 600.0
# At shutdown, how long a sweep under way may take to finish.
SWEEP_JOIN_SECONDS = 5.0
# A partial file no request has written to for this long belongs to a request that died.
STALE_PARTIAL_SECONDS = 3600.0

_TASK_ID = re.compile(TASK_ID_PATTERN)
_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial")


def partial_upload(upload_dir: Path) -> Path:
    """A fresh path to receive an upload in, before its task exists."""
    return upload_dir / f".{uuid.uuid4().hex}.partial"


def task_upload(upload_dir: Path, task_id: str) -> Path:
    """Where the upload the task `task_id` analyses is kept."""
    if not _TASK_ID.fullmatch(task_id):
        raise ValueError("not a task id")
    return upload_dir / task_id


def sweep_uploads(upload_dir: Path, store: TaskStore) -> int:
    """Remove the uploads no task will read again; return how many were removed.

    A file named after a task goes when the store says that task is final (succeeded or failed:
    a redelivery of a final task does nothing) or has forgotten it (past its retention). The
    file was named after the task only once its record was stored, so a missing record never
    means "not stored yet". Files the sweep does not recognise are left alone.
    """
    if not upload_dir.is_dir():
        return 0
    removed = 0
    now = time.time()
    with os.scandir(upload_dir) as entries:
        names = [(entry.name, entry.stat().st_mtime) for entry in entries if entry.is_file()]
    for name, modified in names:
        if _PARTIAL.fullmatch(name):
            stale = now - modified > STALE_PARTIAL_SECONDS
        elif _TASK_ID.fullmatch(name):
            record = store.get(name)
            stale = record is None or record.state.is_final
        else:
            continue
        if stale:
            (upload_dir / name).unlink(missing_ok=True)
            removed += 1
    return removed


@asynccontextmanager
async def uploads_swept(app: FastAPI) -> AsyncIterator[None]:
    """The document router's lifespan: sweep the uploads at startup, then every interval.

    FastAPI enters a router's lifespan inside the app's, so the task store is open by then. The
    sweeps run on a thread of their own: they read the store and the disk, and need the event
    loop for nothing (on Lambda it only runs during an invocation).
    """
    store: TaskStore = app.state.tasks.store
    stopped = threading.Event()

    def sweep_until_stopped() -> None:
        while True:
            try:
                removed = sweep_uploads(get_settings().upload_dir, store)
                if removed:
                    logger.info("uploads no task will read removed", extra={"removed": removed})
            except Exception:
                logger.warning("upload sweep failed; trying again later", exc_info=True)
            if stopped.wait(SWEEP_INTERVAL_SECONDS):
                return

    sweeper = threading.Thread(target=sweep_until_stopped, name="upload-sweeper", daemon=True)
    sweeper.start()
    try:
        yield
    finally:
        stopped.set()
        # A sweep under way finishes before the app closes the store (or is left behind, if the
        # store hangs: the thread is a daemon).
        await asyncio.to_thread(sweeper.join, SWEEP_JOIN_SECONDS)
