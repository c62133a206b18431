"""`GET /tasks/{task_id}/events`: a task's changes as Server-Sent Events, until it is final.

    id: 3
    event: state
    data: {"task_id": "...", "state": "running", ...}

Each event carries the task's status (as `GET /tasks/{id}` shows it) whenever its record
changed: `event: state` when the state did, `event: progress` when only its progress did. The
event id is the record's `version`, so a client that reconnects with `Last-Event-ID` (browsers'
EventSource does it by itself) gets only what changed since. The stream ends after the final
state; comments keep idle connections open. Polls the store off the event loop, through the
same reads as `GET /tasks/{id}`.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Path, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ...auth import Caller, CurrentCaller
from ...errors import ErrorEnvelope, ServiceBusyError
from ...tasks import TaskRecord, TaskService
from ...tasks.models import TASK_ID_PATTERN
from .tasks import TaskStatus

router = APIRouter(prefix="/tasks", tags=["tasks"])

# Seconds between two reads of the record while the stream is open.
POLL_INTERVAL = 0.25
# A comment at least this often keeps proxies from closing an idle stream.
KEEP_ALIVE_INTERVAL = 15.0
# A stream ends after this long even if the task goes on; the client reconnects with
# Last-Event-ID (EventSource does, after the `retry` the stream sets).
MAX_STREAM_SECONDS = 600.0
RECONNECT_MILLISECONDS = 1000


@router.get(
    "/{task_id}/events",
    response_class=StreamingResponse,
    summary="The task's changes as Server-Sent Events, until it is final",
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "Events `state` and `progress`, each with the task's status as data",
        },
        404: {"model": ErrorEnvelope, "description": "No task has this id"},
        503: {"model": ErrorEnvelope, "description": "The task store is unavailable"},
    },
)
async def task_events(
    request: Request,
    task_id: Annotated[str, Path(pattern=TASK_ID_PATTERN)],
    caller: CurrentCaller,
    last_event_id: Annotated[
        str,
        Header(
            alias="Last-Event-ID",
            pattern=r"^[0-9]{1,15}$",
            description="The id of the last event seen: only newer ones are sent",
        ),
    ] = "",
) -> StreamingResponse:
    service: TaskService = request.app.state.tasks
    # Before the stream starts: an unknown task is a 404, a failing store a 503, as for GET.
    record = await _read(service, task_id, caller)
    if record is None:
        raise HTTPException(status_code=404, detail="no task has this id")
    return StreamingResponse(
        _events(service, task_id, caller, record, int(last_event_id) if last_event_id else None),
        media_type="text/event-stream",
        # No buffering proxy may hold events back.
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _read(service: TaskService, task_id: str, caller: Caller) -> TaskRecord | None:
    record: TaskRecord | None = await run_in_threadpool(
        service.read, lambda store: store.get(task_id)
    )
    # Another caller's task is answered exactly like one that does not exist.
    if record is None or not (caller.is_admin or record.caller == caller.id):
        return None
    return record


async def _events(
    service: TaskService,
    task_id: str,
    caller: Caller,
    record: TaskRecord | None,
    last_event_id: int | None,
) -> AsyncIterator[str]:
    sent = -1 if last_event_id is None else last_event_id
    last_state = None
    started = last_output = time.monotonic()
    yield f"retry: {RECONNECT_MILLISECONDS}\n\n"
    while True:
        if record is None:
            return  # deleted meanwhile (retention): nothing more will happen
        if record.version > sent:
            kind = "progress" if record.state == last_state else "state"
            data = TaskStatus.of(record).model_dump_json()
            yield f"id: {record.version}\nevent: {kind}\ndata: {data}\n\n"
            sent, last_state, last_output = record.version, record.state, time.monotonic()
        if record.state.is_final:
            return
        now = time.monotonic()
        if now - started >= MAX_STREAM_SECONDS:
            return
        if now - last_output >= KEEP_ALIVE_INTERVAL:
            yield ": keep-alive\n\n"
            last_output = now
        await asyncio.sleep(POLL_INTERVAL)
        try:
            record = await _read(service, task_id, caller)
        except ServiceBusyError:
            # Mid-stream a failing store is waited out: the record is read again next time.
            continue
