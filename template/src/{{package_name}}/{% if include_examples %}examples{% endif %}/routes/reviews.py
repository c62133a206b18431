"""Product reviews, analysed for sentiment in the background."""

from typing import Annotated

from fastapi import APIRouter, Path, status
from pydantic import BaseModel, Field

from ...errors import ErrorEnvelope
from ...tasks import TaskAccepted, Tasks, idempotent
from ..jobs import analyze_review

router = APIRouter(prefix="/products", tags=["examples"])


class ReviewSubmission(BaseModel):
    customer_id: Annotated[int, Field(ge=1, le=2**53)]
    rating: Annotated[int, Field(ge=1, le=5)]
    review_text: Annotated[str, Field(min_length=1, max_length=20_000)]


@router.post(
    "/{product_id}/reviews",
    status_code=status.HTTP_202_ACCEPTED,
    responses={503: {"model": ErrorEnvelope, "description": "Task queue full; retry later"}},
)
# A repeat with the same Idempotency-Key gets the first answer, not a second task.
@idempotent
def submit_review(
    product_id: Annotated[int, Path(ge=1, le=2**53)], review: ReviewSubmission, tasks: Tasks
) -> TaskAccepted:
    """Accept a review; its sentiment appears in the task's result."""
    return tasks.add_task(
        analyze_review, product_id, review.customer_id, review.rating, review.review_text
    )
