"""The one error envelope every error response uses, and the handlers that produce it.

    {"error": {"code": "not_found", "message": "...", "request_id": "...", "details": [...]}}

No handler ever puts a stack trace in a response; unhandled exceptions are logged with their
traceback and answered with a generic 500 by the request middleware.
"""

from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import Match

from .logs import request_id_var
from .telemetry import metrics
from .telemetry.metrics import REFUSALS

REQUEST_ID_HEADER = "X-Request-ID"


class ErrorBody(BaseModel):
    code: str
    message: str
    request_id: str | None = None
    details: list[dict[str, Any]] | None = None


class ErrorEnvelope(BaseModel):
    """What every error response contains (also used in the OpenAPI schema)."""

    error: ErrorBody


# Why a 503 was answered: the runner's queue is full, the runner cannot take work (draining, its
# broker unreachable), or the task store failed.
BusyReason = Literal["queue_full", "runner_unavailable", "store_unavailable"]


class ServiceBusyError(Exception):
    """The service cannot take more work right now; the client should retry after a delay."""

    def __init__(self, message: str, retry_after: int, *, reason: BusyReason) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        # Counted by reason in `task_refusals_total`.
        self.reason = reason


class InputRefusedError(Exception):
    """Input the request passed validation with, refused later because the service cannot keep
    it (`add_task`'s check of task arguments): 422 with where it is, or 413 when it is too large.

    `location` is where the refused value is (["args", 0, "name"]), as a validation error's
    `loc`; the message never repeats the value itself.
    """

    def __init__(
        self, message: str, *, status: int = 422, location: list[str | int] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.location = location


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Build an error response in the envelope, stamped with the current request id."""
    request_id = request_id_var.get()
    body = ErrorEnvelope(
        error=ErrorBody(code=code, message=message, request_id=request_id, details=details)
    )
    all_headers = dict(headers or {})
    if request_id is not None:
        all_headers[REQUEST_ID_HEADER] = request_id
    return JSONResponse(
        status_code=status,
        content=body.model_dump(exclude_none=True),
        headers=all_headers,
    )


# Stable machine-readable codes; HTTP reason phrases change between Python versions.
_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "content_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "service_unavailable",
}


def _code_for(status: int) -> str:
    return _CODES.get(status, "client_error" if status < 500 else "server_error")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    message = exc.detail if isinstance(exc.detail, str) else _code_for(exc.status_code)
    details = exc.detail if isinstance(exc.detail, list) else None
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and "Allow" in headers:
        headers["Allow"] = _allowed_methods(request) or headers["Allow"]
    return error_response(
        exc.status_code, _code_for(exc.status_code), message, details=details, headers=headers
    )


def _allowed_methods(request: Request) -> str | None:
    """Every method of every route at the request's path: Starlette's 405 names only those of
    the first route there (`GET /tasks/{id}` and `DELETE /tasks/{id}` are two routes)."""
    methods = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]
    return ", ".join(methods) if methods else None


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")}
        for error in jsonable_encoder(exc.errors())
    ]
    return error_response(422, "validation_error", "The request is not valid.", details=details)


async def _input_refused(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InputRefusedError)
    details = None
    if exc.location is not None:
        details = [{"loc": exc.location, "msg": str(exc), "type": "value_error"}]
    message = "The request is not valid." if exc.status == 422 else str(exc)
    return error_response(exc.status, _code_for(exc.status), message, details=details)


async def _service_busy(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceBusyError)
    metrics.count(REFUSALS, exc.reason)
    return error_response(
        503, "service_unavailable", str(exc), headers={"Retry-After": str(exc.retry_after)}
    )


def install_error_handlers(app: FastAPI) -> None:
    """Route every expected error through the envelope."""
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ServiceBusyError, _service_busy)
    app.add_exception_handler(InputRefusedError, _input_refused)
