"""`Idempotency-Key`: a client may send a scheduling request again without scheduling twice.

    @router.post("/reports", status_code=202, dependencies=[Idempotent])
    def create_report(tasks: Tasks) -> TaskAccepted:
        return tasks.add_task(build_report, "2024-Q1")

A request with the header claims the key for its caller (atomically, in the task store) with a
task id chosen up front; the first `add_task` of that request uses that id. The same key again:
- same request (method, path, query and body) and the task stored: 200 with the first answer
  (same `task_id`, same `status_url`), the endpoint not run again;
- another request: 422 (a key names one request);
- the first request still in flight (its task not stored yet): 409, try again shortly.
A request that fails, or schedules nothing, gives its key back. Keys are per caller: two callers
using one key get a task each. A key whose task record is gone (TASK_RETENTION_SECONDS) is taken
anew.
"""

import hashlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from .models import IdempotencyClaim, TaskRecord, new_task_id, utcnow
from .scheduler import TaskAccepted, Tasks, TaskScheduler

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
# 1 to 255 visible ASCII characters (no spaces, no control characters): room for a UUID or a
# client's own scheme, nothing that could carry odd text into logs or the store.
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
# A claim whose task is not stored after this long belongs to a request that died (a process
# killed between the claim and its task): the key is taken anew rather than answered 409 forever.
IN_FLIGHT_LIMIT = timedelta(minutes=5)
_READ_CHUNK = 1024 * 1024


class IdempotentReplay(Exception):
    """The request repeats one whose task is stored: answered with that task (200)."""

    def __init__(self, accepted: TaskAccepted) -> None:
        super().__init__(accepted.task_id)
        self.accepted = accepted


async def replay_response(_: Request, exc: Exception) -> JSONResponse:
    """The exception handler of `IdempotentReplay` (errors.py installs it)."""
    assert isinstance(exc, IdempotentReplay)
    return JSONResponse(
        status_code=200, content=exc.accepted.model_dump(), headers={"Idempotent-Replayed": "true"}
    )


async def idempotency_key(
    request: Request,
    tasks: Tasks,
    key: Annotated[
        str | None,
        Header(
            alias=IDEMPOTENCY_HEADER,
            pattern=KEY_PATTERN,
            max_length=255,
            description=(
                "Makes retrying this request safe: the same key (1-255 visible ASCII "
                "characters) with the same request answers 200 with the task the first request "
                "scheduled, without scheduling another; with another request 422; while the "
                "first is still in flight 409."
            ),
        ),
    ] = None,
) -> AsyncIterator[None]:
    """The dependency behind `Idempotent`; nothing happens without the header."""
    if key is None:
        yield
        return
    claim = IdempotencyClaim(
        caller=tasks.caller.id,
        key=key,
        fingerprint=await _fingerprint(request),
        task_id=new_task_id(),
    )
    # The store's calls block: off the event loop.
    await run_in_threadpool(_claim, tasks, claim)
    tasks.idempotency = claim
    try:
        yield
    except BaseException:
        # Its task will not run (the scheduler fails what it stored): a retry may schedule it.
        await run_in_threadpool(_release, tasks, claim)
        raise
    if tasks.idempotency is claim:
        # Nothing was stored under the claim (the endpoint scheduled nothing): give it back.
        await run_in_threadpool(_release, tasks, claim)


Idempotent = Depends(idempotency_key, scope="function")
"""`dependencies=[Idempotent]` on an endpoint that schedules tasks honours `Idempotency-Key`."""


def _claim(tasks: TaskScheduler, claim: IdempotencyClaim) -> None:
    service = tasks.service
    for _ in range(3):
        held = service.read(lambda store: store.claim_idempotency_key(claim))
        if held is None:
            return
        record = _stored(tasks, held.task_id)
        in_flight = record is None and utcnow() - held.created_at < IN_FLIGHT_LIMIT
        if record is not None or in_flight:
            if held.fingerprint != claim.fingerprint:
                raise HTTPException(
                    422,
                    f"this {IDEMPOTENCY_HEADER} was used with another request: a key names one "
                    "request (same method, path, query and body); use a new key for a new one",
                )
            if record is not None:
                raise IdempotentReplay(
                    TaskAccepted(task_id=record.task_id, status_url=f"/tasks/{record.task_id}")
                )
            raise HTTPException(
                409,
                f"a request with this {IDEMPOTENCY_HEADER} is still in flight; "
                "ask again once it is answered",
                headers={"Retry-After": "1"},
            )
        # Its task record is gone (past its retention, or its request died): take it anew.
        _release_gone(tasks, held)
    raise HTTPException(409, f"this {IDEMPOTENCY_HEADER} is contended; ask again shortly")


def _stored(tasks: TaskScheduler, task_id: str) -> TaskRecord | None:
    return tasks.service.read(lambda store: store.get(task_id))


def _release_gone(tasks: TaskScheduler, held: IdempotencyClaim) -> None:
    tasks.service.read(
        lambda store: store.release_idempotency_key(held.caller, held.key, held.task_id)
    )


def _release(tasks: TaskScheduler, claim: IdempotencyClaim) -> None:
    try:
        tasks.service.store.release_idempotency_key(claim.caller, claim.key, claim.task_id)
    except Exception:
        # The key stays claimed without a task: 409 until IN_FLIGHT_LIMIT has passed.
        logger.warning("could not release an idempotency key", exc_info=True)


async def _fingerprint(request: Request) -> str:
    """SHA-256 of the method, path, query and body (a form's fields, files' content included)."""
    digest = hashlib.sha256()
    for part in (request.method, request.url.path, request.url.query):
        digest.update(part.encode())
        digest.update(b"\0")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        # FastAPI parsed the form already (the stream is consumed); this is its cached copy.
        form = await request.form()
        for name, value in form.multi_items():
            digest.update(json.dumps(name).encode())
            if isinstance(value, UploadFile):
                digest.update(json.dumps([value.filename, value.content_type]).encode())
                await value.seek(0)
                while chunk := await value.read(_READ_CHUNK):
                    digest.update(chunk)
                await value.seek(0)
            else:
                digest.update(json.dumps(value).encode())
            digest.update(b"\0")
    else:
        digest.update(await request.body())
    return digest.hexdigest()
