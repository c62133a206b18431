"""Security headers on every response: pure ASGI, like the request-context middleware.

- `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, `X-Frame-Options: DENY`;
- `Content-Security-Policy`: an API answer needs nothing loaded, so it may load nothing (should a
  browser ever render one, nothing in it runs). The documentation pages (DOCS_ENABLED) get a
  policy that lets in what FastAPI's pages load: Swagger UI and ReDoc from cdn.jsdelivr.net,
  ReDoc's fonts from Google Fonts, FastAPI's favicon, and the inline script that starts Swagger UI.
  The task page (`/tasks/ui`) sets its own, `page_policy`: the API's, plus its one stylesheet;
- `Cache-Control: no-store` on `/tasks` answers: a task's status and result are its caller's, not
  something for a browser or a shared cache to keep.

A header the app set itself is left as it is.
"""

import base64
import hashlib
from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOCS_POLICY = (
    "default-src 'none'; "
    # FastAPI's Swagger UI page starts Swagger UI with an inline script.
    "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    # Both UIs style elements inline.
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src https://fonts.gstatic.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.jsdelivr.net; "
    # "Try it out" calls this API; ReDoc searches in a worker it makes from a blob.
    "connect-src 'self'; worker-src blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def page_policy(stylesheet: str) -> str:
    """The policy of a page the service renders itself: nothing loads and nothing runs, as for an
    API answer, but its one inline `<style>` element holding exactly `stylesheet`, allowed by its
    SHA-256 hash (not by 'unsafe-inline', which would let in any style injected into the page)."""
    digest = base64.b64encode(hashlib.sha256(stylesheet.encode()).digest()).decode()
    return (
        f"default-src 'none'; style-src 'sha256-{digest}'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
_NO_STORE_PREFIX = "/tasks"


class SecurityHeadersMiddleware:
    """Add the headers above to every HTTP response; `docs_paths` get the documentation policy."""

    def __init__(self, app: ASGIApp, docs_paths: Collection[str] = ()) -> None:
        self.app = app
        self.docs_paths = frozenset(docs_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        policy = DOCS_POLICY if path in self.docs_paths else API_POLICY
        added = [*_ALWAYS, (b"content-security-policy", policy.encode())]
        if path == _NO_STORE_PREFIX or path.startswith(_NO_STORE_PREFIX + "/"):
            added.append((b"cache-control", b"no-store"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in added if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
