"""List data processing: statistics of posted records, computed in the background."""

from typing import Annotated

from fastapi import APIRouter, Body, status
from pydantic import Field

from ...errors import ErrorEnvelope
from ...tasks import TaskAccepted, Tasks, idempotent
from ...tasks.json_values import MAX_EXACT_INTEGER
from ..jobs import process_records

router = APIRouter(tags=["examples"])

MAX_RECORDS = 100_000
# The largest number a field may hold: the sum of a whole request of them stays finite.
MAX_NUMBER = 1e300

# One field of a record: a number statistics are taken of, or any other scalar. What the schema
# allows is what a task can take (tasks/json_values.py): no integer a double cannot hold, no NaN
# or infinity, no nesting.
FieldValue = (
    bool
    | Annotated[int, Field(ge=-MAX_EXACT_INTEGER, le=MAX_EXACT_INTEGER)]
    | Annotated[float, Field(ge=-MAX_NUMBER, le=MAX_NUMBER, allow_inf_nan=False)]
    | str
    | None
)


@router.post(
    "/process/",
    status_code=status.HTTP_202_ACCEPTED,
    responses={503: {"model": ErrorEnvelope, "description": "Task queue full; retry later"}},
)
# A repeat with the same Idempotency-Key gets the first answer, not a second task.
@idempotent
def process_data(
    rows: Annotated[list[dict[str, FieldValue]], Body(max_length=MAX_RECORDS)], tasks: Tasks
) -> TaskAccepted:
    """Accept a list of flat JSON objects; per-field statistics appear in the task's result."""
    return tasks.add_task(process_records, rows)
