"""User registration with a welcome e-mail sent in the background."""

from typing import Annotated

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from ...errors import ErrorEnvelope
from ...tasks import TaskAccepted, Tasks, idempotent
from ..jobs import send_welcome_email

router = APIRouter(tags=["examples"])

# Both values become e-mail headers: no whitespace in the address, and no control or line-breaking
# character (str.splitlines breaks on \x1c-\x1e and \x85 too) in either, or the e-mail can never be
# written and the task would only fail later, in the background. Nor, in the address, any of the
# header syntax's special characters: Python's header parser fails (raises AttributeError) on
# some addresses with domain literals, groups or quoted parts ("a@[b.c", "a:b@c.d").
_NO_CONTROL = r"\x00-\x1f\x7f-\x9f\u2028\u2029"
_ADDRESS_CHARACTER = rf'[^@\s{_NO_CONTROL}()<>\[\]:;\\,"]'
EMAIL_PATTERN = rf"^{_ADDRESS_CHARACTER}+@{_ADDRESS_CHARACTER}+\.{_ADDRESS_CHARACTER}+$"
NAME_PATTERN = rf"^[^{_NO_CONTROL}]+$"


class Registration(BaseModel):
    email: Annotated[str, Field(pattern=EMAIL_PATTERN, max_length=254)]
    name: Annotated[str, Field(min_length=1, max_length=100, pattern=NAME_PATTERN)]


@router.post(
    "/register",
    status_code=status.HTTP_202_ACCEPTED,
    responses={503: {"model": ErrorEnvelope, "description": "Task queue full; retry later"}},
)
# A repeat with the same Idempotency-Key gets the first answer, not a second task.
@idempotent
def register_user(registration: Registration, tasks: Tasks) -> TaskAccepted:
    """Register a user; the welcome e-mail goes out after the response."""
    return tasks.add_task(send_welcome_email, registration.email, registration.name)
