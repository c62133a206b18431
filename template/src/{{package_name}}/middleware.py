"""Pure ASGI middleware: request id, one access log line and the HTTP metrics per request, and the
last-resort 500.

Written against the raw ASGI interface rather than `BaseHTTPMiddleware`, which wraps the app in a
task group and is known to break background tasks and context variables.
"""

import logging
import random
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import REQUEST_ID_HEADER, error_response
from .logs import request_id_var
from .telemetry import metrics
from .telemetry.metrics import HTTP_DURATION, HTTP_REQUESTS
from .telemetry.tracing import request_span

logger = logging.getLogger(__name__)

# A caller-supplied id is kept only if it is short and plain, so it is safe to log and echo.
_ACCEPTABLE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_HEADER_NAME = REQUEST_ID_HEADER.lower().encode("latin-1")
# A path segment longer than any id the service issues (task ids are 32 characters) is logged cut
# short, with its length: a client cannot write what it likes, as long as it likes, into the log.
_LOGGED_SEGMENT = 64
_LOGGED_PATH = 512
# Metric labels must stay few: any other method a client sends is counted as "other", and a path
# no route matched as "unmatched" (a route's template, never the path a client chose).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"


class RequestContextMiddleware:
    """Give every HTTP request an id, log it once, and turn unhandled errors into a 500 envelope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = _request_id_from(scope)
        # Deliberately never reset: each request is its own asyncio task with its own context,
        # and the background tasks that run after the response should still carry the id.
        request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        response_started = False
        logged = False

        def log_request() -> None:
            nonlocal logged
            logged = True
            seconds = time.perf_counter() - started
            method, route = _method_label(scope["method"]), _route_label(scope)
            span.answered(method, route, status)
            logger.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": _loggable(scope["path"]),
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                },
            )
            metrics.count(HTTP_REQUESTS, method, route, str(status))
            metrics.observe(HTTP_DURATION, seconds, method, route)

        async def send_with_request_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k != _HEADER_NAME]
                headers.append((_HEADER_NAME, request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)
            # Logged when the last byte is sent, not when background work after it ends.
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                log_request()

        # The request's span (or, with exporting off, its trace ids): every log line and task
        # record made while it is answered belongs to its trace.
        with request_span(scope["method"], scope["path"], scope["headers"]) as span:
            try:
                await self.app(scope, receive, send_with_request_id)
            except Exception:
                logger.exception("unhandled error", extra={"path": _loggable(scope["path"])})
                if response_started:
                    # Headers are out; the only honest thing left is to drop the connection.
                    raise
                response = error_response(500, "internal_error", "An internal error occurred.")
                await response(scope, receive, send_with_request_id)
            finally:
                if not logged:
                    log_request()


def _request_id_from(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == _HEADER_NAME:
            candidate: str = value.decode("latin-1")
            if _ACCEPTABLE_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    # Not uuid4: os.urandom lets go of the GIL, and on a busy process the event loop then waits
    # for a worker thread to give it back. A request id correlates log lines and is echoed to
    # the client; it guards nothing (as OpenTelemetry's ids, which come from the same generator).
    return f"{random.getrandbits(128):032x}"


def _loggable(path: str) -> str:
    """`path` as the log shows it: each overlong segment cut, and the whole bounded."""
    segments = [
        part if len(part) <= _LOGGED_SEGMENT else f"{part[:16]}...({len(part)} chars)"
        for part in path.split("/")
    ]
    shown = "/".join(segments)
    return shown if len(shown) <= _LOGGED_PATH else f"{shown[:_LOGGED_PATH]}...({len(path)} chars)"


def _method_label(method: str) -> str:
    return method if method in _METHODS else "other"


def _route_label(scope: Scope) -> str:
    """The template of the route that answered (`/tasks/{task_id}`), set in the scope by the
    router once it matched."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE
