"""List data processing: statistics of posted records, computed in the background."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, status

from ...errors import ErrorEnvelope
from ...tasks import TaskAccepted, Tasks
from ..jobs import process_records

router = APIRouter(tags=["examples"])

MAX_RECORDS = 100_000


@router.post(
    "/process/",
    status_code=status.HTTP_202_ACCEPTED,
    responses={503: {"model": ErrorEnvelope, "description": "Task queue full; retry later"}},
)
def process_data(
    rows: Annotated[list[dict[str, Any]], Body(max_length=MAX_RECORDS)], tasks: Tasks
) -> TaskAccepted:
    """Accept a list of JSON objects; per-field statistics appear in the task's result."""
    return tasks.add_task(process_records, rows)
