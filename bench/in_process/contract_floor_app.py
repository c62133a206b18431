"""The least a server keeping the task contract can do: the floor under metric 1's scheduling cost.

    CONTRACT_FLOOR_PACKAGE=<rendered package> [CONTRACT_FLOOR_MODE=run] uvicorn contract_floor_app:app

Run by scheduling_floor.py with a rendered examples project's interpreter, from an empty working
directory, beside the stock app and the template's service and measured the same way. A bare
FastAPI app, no middleware, with the bench service's endpoints:

- `POST /bench/no-task`: a sync endpoint that answers 202;
- `POST /bench/noop-task`: the same endpoint, which also accepts a no-op task and answers with its
  id. What accepting does is CONTRACT_FLOOR_MODE's:
  - `run` (the default): the record committed before the 202 and the "task accepted" line
    (contract_steps.py); once the response is sent, the record is handed to one worker thread
    that runs it (read, `running`, read, `succeeded`, two lines). The task has to run somewhere
    other than the request and not on the event loop: one thread and one hand-off is the least;
  - `accept`: the record committed and the line, and the task never run (no hand-off, no worker):
    the request's part alone;
  - `insert`: one row of two columns (the id, a short JSON text) inserted and committed with
    the sqlite3 module alone, in the same journal modes as the template's store: what any
    "committed before the 202" costs, before a record's columns, indexes and line.

`/ready` counts tasks as the template's does, so the bench waits for the worker between
measurements.
"""

import itertools
import os
import queue
import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any

from contract_steps import ContractSteps, nothing
from fastapi import BackgroundTasks, FastAPI

MODES = ("run", "accept", "insert")
mode = os.environ.get("CONTRACT_FLOOR_MODE", "run")
if mode not in MODES:
    raise SystemExit(f"CONTRACT_FLOOR_MODE must be one of {MODES}, not {mode!r}")

steps = ContractSteps(os.environ["CONTRACT_FLOOR_PACKAGE"], Path.cwd())
handed_over: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
counts_lock = threading.Lock()
counts = {"queued": 0, "running": 0, "succeeded": 0, "failed": 0}
accepted = itertools.count()

bare = sqlite3.connect("bare.db", isolation_level=None, check_same_thread=False)
bare.execute("PRAGMA journal_mode=WAL")
bare.execute("PRAGMA synchronous=NORMAL")
bare.execute("CREATE TABLE IF NOT EXISTS tasks (task_id TEXT PRIMARY KEY, record TEXT NOT NULL)")
bare_lock = threading.Lock()  # one connection, used from the thread pool's threads


def work() -> None:
    while True:
        record = handed_over.get()
        with counts_lock:
            counts["queued"] -= 1
            counts["running"] += 1
        steps.run(record, nothing)
        with counts_lock:
            counts["running"] -= 1
            counts["succeeded"] += 1


threading.Thread(target=work, name="task-worker", daemon=True).start()
app = FastAPI()


async def hand_over(record: Any) -> None:
    handed_over.put(record)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/ready")
async def ready() -> dict[str, Any]:
    with counts_lock:
        return {"status": "ready", "tasks": dict(counts)}


@app.post("/bench/noop-task", status_code=202)
def noop_task(background: BackgroundTasks) -> dict[str, str]:
    if mode == "insert":
        task_id = uuid.uuid4().hex
        with bare_lock:
            bare.execute("INSERT INTO tasks VALUES (?, ?)", (task_id, '{"name": "noop", "args": []}'))
    else:
        record = steps.accept(next(accepted))
        task_id = record.task_id
        if mode == "run":
            with counts_lock:
                counts["queued"] += 1
            background.add_task(hand_over, record)
    return {"task_id": task_id, "status_url": f"/tasks/{task_id}"}


@app.post("/bench/no-task", status_code=202)
def no_task() -> dict[str, str]:
    return {"status": "accepted"}
