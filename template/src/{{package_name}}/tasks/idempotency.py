"""`Idempotency-Key`: a client may send a scheduling request again without scheduling twice.

    @router.post("/reports", status_code=202)
    @idempotent
    def create_report(tasks: Tasks) -> TaskAccepted:
        return tasks.add_task(build_report, "2024-Q1")

A request with the header claims the key for its caller (atomically, in the task store) with a
task id chosen up front, before the endpoint runs; the first `add_task` of that request uses that
id. The same key again:
- same request (method, path, query and body) and the task stored: 200 with the first answer
  (same `task_id`, same `status_url`), the endpoint not run again;
- another request: 422 (a key names one request);
- the first request still in flight (its task not stored yet): 409, try again shortly.
A request that fails, or schedules nothing, gives its key back. Keys are per caller: two callers
using one key get a task each. A key whose task record is gone (TASK_RETENTION_SECONDS) is taken
anew.

A decorator rather than a dependency: the claim is a store write, and a dependency would make it
on a thread of its own before FastAPI moves to the endpoint's thread. Wrapping the endpoint makes
it on the endpoint's own thread, just before the body (BENCHMARKS.md, metric 7, says what each
way costs).
"""

import functools
import hashlib
import inspect
import json
import logging
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, ParamSpec, TypeVar, cast

import anyio
from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute

from .models import IdempotencyClaim, TaskRecord, new_task_id, utcnow
from .scheduler import TaskAccepted, Tasks, TaskScheduler

P = ParamSpec("P")
R = TypeVar("R")
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


@dataclass(frozen=True)
class RequestKey:
    """A request's `Idempotency-Key` and the digest of the request it names."""

    key: str
    fingerprint: str


async def request_key(
    request: Request,
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
) -> RequestKey | None:
    """The key and the request's fingerprint, on the event loop (reading the body is async);
    None without the header."""
    if key is None:
        return None
    return RequestKey(key, await _fingerprint(request))


# The parameter `idempotent` adds to an endpoint's signature; FastAPI fills it.
_PARAMETER = "idempotency_key_"
_Keyed = Annotated[RequestKey | None, Depends(request_key)]


def idempotent(endpoint: Callable[P, R]) -> Callable[P, R]:
    """Make a scheduling endpoint honour `Idempotency-Key`: put `@idempotent` under the route's
    decorator. The endpoint declares `Tasks` (it schedules); sync endpoints claim the key on
    their own thread, async ones off the event loop."""
    signature = inspect.signature(endpoint, eval_str=True)
    if _PARAMETER in signature.parameters:
        raise TypeError(f"{endpoint.__qualname__} has a parameter named {_PARAMETER!r} already")
    tasks_parameter = _tasks_parameter(endpoint, signature)
    if inspect.iscoroutinefunction(endpoint):

        @functools.wraps(endpoint)
        async def keyed_async(*args: Any, **kwargs: Any) -> Any:
            key: RequestKey | None = kwargs.pop(_PARAMETER)
            if key is None:
                return await endpoint(*args, **kwargs)
            tasks: TaskScheduler = kwargs[tasks_parameter]
            claim = await run_in_threadpool(_claim, tasks, key)
            try:
                result = await endpoint(*args, **kwargs)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await run_in_threadpool(_give_back, tasks, claim, failed=True)
                raise
            await run_in_threadpool(_give_back, tasks, claim, failed=False)
            return result

        wrapper: Callable[..., Any] = keyed_async
    else:

        @functools.wraps(endpoint)
        def keyed_sync(*args: Any, **kwargs: Any) -> Any:
            key: RequestKey | None = kwargs.pop(_PARAMETER)
            if key is None:
                return endpoint(*args, **kwargs)
            tasks: TaskScheduler = kwargs[tasks_parameter]
            claim = _claim(tasks, key)
            try:
                result = endpoint(*args, **kwargs)
            except BaseException:
                _give_back(tasks, claim, failed=True)
                raise
            _give_back(tasks, claim, failed=False)
            return result

        wrapper = keyed_sync
    wrapper.__signature__ = _with_keyed_parameter(signature)  # type: ignore[attr-defined]
    _wrapped.add(endpoint)
    return cast(Callable[P, R], wrapper)


# The functions `idempotent` wrapped. One of them registered as a route itself means the
# decorator sat above the route's decorator, which registered the function unwrapped.
_wrapped: "weakref.WeakSet[Callable[..., Any]]" = weakref.WeakSet()


def refuse_unguarded_routes(routes: Iterable[BaseRoute]) -> None:
    """Raise TypeError, naming the route, for an endpoint `@idempotent` was meant to guard but
    does not: it sits above `@router.post(...)`, so the route runs the function without it and
    every retry would schedule again. The app's startup calls this; it does not start so."""
    for route in _api_routes(routes):
        if route.endpoint in _wrapped:
            methods = ", ".join(sorted(route.methods or ()))
            raise TypeError(
                f"{route.endpoint.__qualname__} ({methods} {route.path}): @idempotent is above "
                "the route's decorator, which registered the function without it; put "
                "@idempotent under @router.post(...), directly above the function"
            )


def _api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    """Every APIRoute, those of included routers and mounted apps too. FastAPI keeps an included
    router as a route of its own (its `original_router`), not its routes copied in; the test
    of this check includes a router, so a FastAPI that stores them otherwise fails it."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        nested = getattr(getattr(route, "original_router", None), "routes", None)
        nested = nested if nested is not None else getattr(route, "routes", None)
        if nested:
            yield from _api_routes(nested)


def _tasks_parameter(endpoint: Callable[..., Any], signature: inspect.Signature) -> str:
    """The name of the endpoint's `Tasks` parameter: the claim is made for its caller, and its
    first task takes the claimed id."""
    for parameter in signature.parameters.values():
        if parameter.annotation == Tasks:
            return parameter.name
    raise TypeError(
        f"{endpoint.__qualname__} has no `Tasks` parameter: @idempotent makes an endpoint that "
        "schedules tasks safe to retry, so it declares `tasks: Tasks`"
    )


def _with_keyed_parameter(signature: inspect.Signature) -> inspect.Signature:
    parameters = list(signature.parameters.values())
    keyed = inspect.Parameter(_PARAMETER, inspect.Parameter.KEYWORD_ONLY, annotation=_Keyed)
    # Keyword-only parameters go before a **kwargs, if the endpoint has one.
    at = next(
        (i for i, p in enumerate(parameters) if p.kind is inspect.Parameter.VAR_KEYWORD),
        len(parameters),
    )
    return signature.replace(parameters=[*parameters[:at], keyed, *parameters[at:]])


def _give_back(tasks: TaskScheduler, claim: IdempotencyClaim, *, failed: bool) -> None:
    """Release the key when the request failed (what it stored is failed by the scheduler, so
    a retry may schedule it) or stored nothing under it."""
    if not failed and tasks.idempotency is not claim:
        return  # its task is stored under it: the key answers repeats from now on
    tasks.idempotency = None
    try:
        tasks.service.store.release_idempotency_key(claim.caller, claim.key, claim.task_id)
    except Exception:
        # The key stays claimed without a task: 409 until IN_FLIGHT_LIMIT has passed.
        logger.warning("could not release an idempotency key", exc_info=True)


def _claim(tasks: TaskScheduler, key: RequestKey) -> IdempotencyClaim:
    """Claim the key for the request's caller (the claim the request's first task is stored
    under), or answer for the request that holds it: 200 (IdempotentReplay), 422 or 409."""
    claim = IdempotencyClaim(
        caller=tasks.caller.id, key=key.key, fingerprint=key.fingerprint, task_id=new_task_id()
    )
    service = tasks.service
    for _ in range(3):
        held = service.read(lambda store: store.claim_idempotency_key(claim))
        if held is None:
            tasks.idempotency = claim
            return claim
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


async def _fingerprint(request: Request) -> str:
    """SHA-256 of the method, path, query and body (a form's fields, files' content included)."""
    digest = hashlib.sha256()
    # From the ASGI scope, as received: building `request.url` costs more than the rest.
    scope = request.scope
    for part in (scope["method"].encode(), scope["path"].encode(), scope["query_string"]):
        digest.update(part)
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
