"""One POST request through an ASGI app in this process: no server, no socket, no HTTP client.

For the in-process drivers (hot_path.py, contract_floor.py), which run it in a rendered project's
interpreter with bench/in_process/ on PYTHONPATH: standard library only.
"""

import asyncio
from typing import Any


async def post(app: Any, path: str, body: bytes) -> int:
    """POST the JSON `body` to `path`; the response's status."""
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    statuses = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    headers = [
        (b"host", b"bench"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    await app(scope, receive, send)
    return statuses[0]
