"""The request body limit: a body over MAX_REQUEST_BYTES is answered 413 before it is read.

Without it, a multipart upload is spooled to a temporary file in full before any route can look
at its size, so one request could fill the disk. Pure ASGI like the request-context middleware,
and installed inside it, so the refusal carries the request id and is logged like any response.
(Starlette's own RequestBodyLimitMiddleware still calls the app when the declared length is
already too large, and answers in plain text rather than in the error envelope.)
"""

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response

_CONTENT_LENGTH = b"content-length"


class RequestBodyTooLargeError(Exception):
    """What the app's read raises once the body has passed the limit."""


class RequestBodyLimitMiddleware:
    """Answer 413 `content_too_large` to every HTTP request whose body exceeds `max_bytes`.

    A declared Content-Length over the limit is refused before the app is called, so not one
    byte of the body is read. A body of unknown length (chunked) is counted as the app reads it:
    the read that takes it past the limit raises instead of returning the chunk, every later read
    raises too, and whatever the app answers then is replaced by the 413.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return

        received = 0
        cut_off = False  # the body passed the limit
        app_answering = False  # the app's response started before that
        refused = False  # the 413 went out

        async def receive_within_limit() -> Message:
            nonlocal received, cut_off
            if cut_off:
                raise RequestBodyTooLargeError
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    cut_off = True
                    raise RequestBodyTooLargeError
            return message

        async def send_unless_cut_off(message: Message) -> None:
            nonlocal app_answering, refused
            if cut_off and not app_answering:
                # The app answers a body it could not finish (FastAPI would say 400, "error
                # parsing the body"): the client is told the real reason instead.
                if not refused:
                    refused = True
                    await self._refuse(scope, receive, send)
                return
            if message["type"] == "http.response.start":
                app_answering = True
            await send(message)

        try:
            await self.app(scope, receive_within_limit, send_unless_cut_off)
        except RequestBodyTooLargeError:
            if app_answering:
                raise  # headers are out; dropping the connection is all that is left
        if cut_off and not app_answering and not refused:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "content_too_large",
            f"the request body is larger than the limit of {self.max_bytes} bytes",
            # The rest of the body stays unread: the server closes the connection after the
            # answer instead of reading (and discarding) it to reuse the connection.
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == _CONTENT_LENGTH:
            # A malformed length is the server's to reject; the body is still counted.
            return int(value) if value.isdigit() else None
    return None
