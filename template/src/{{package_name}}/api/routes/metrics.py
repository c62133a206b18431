"""`GET /metrics`: the service's Prometheus metrics, for an operator's scraper.

Guarded like the rest of the API, and more: the metrics name every task and route and count
every caller's tasks together, so only an admin caller reads them (AUTH_ADMIN_CALLERS, or the
admin scope of a JWT; with AUTH_MODE=none everybody is). Prometheus sends the credentials with
`authorization: {credentials: ...}` in its scrape config. METRICS_ENABLED=false serves nothing
here (404, like any unknown path) and counts nothing.
"""

import asyncio

from fastapi import APIRouter, Request, Response
from starlette.exceptions import HTTPException

from ...auth import CurrentCaller
from ...tasks import TaskService
from ...telemetry.prometheus import CONTENT_TYPE, exposition

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, caller: CurrentCaller) -> Response:
    if not caller.is_admin:
        raise HTTPException(403, "the metrics are for admin callers only")
    service: TaskService = request.app.state.tasks
    # Off the loop: it reads the store (and, with several workers, every worker's files).
    text = await asyncio.to_thread(exposition, service.store)
    return Response(text, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})
