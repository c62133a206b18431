"""Project task creation, with the activity written to a log in the background."""

from typing import Annotated

from fastapi import APIRouter, Path, Query, status
from pydantic import BaseModel, Field

from ...errors import ErrorEnvelope
from ...settings import get_settings
from ...tasks import TaskAccepted, Tasks, idempotent
from ..activity import project_page
from ..jobs import record_project_activity

router = APIRouter(prefix="/projects", tags=["examples"])

ProjectId = Annotated[int, Path(ge=1, le=2**53)]
# The most entries one page of activity holds.
MAX_PAGE = 200


class ProjectTaskCreate(BaseModel):
    task_name: Annotated[str, Field(min_length=1, max_length=200)]
    assigned_to: Annotated[str, Field(min_length=1, max_length=100)]


class ActivityEntry(BaseModel):
    """One entry of a project's activity log, each field as it was written."""

    entry_id: Annotated[
        int, Field(description="Its place in the log; later entries have larger ids")
    ]
    at: Annotated[str, Field(description="When it was written (ISO 8601, UTC)")]
    user: Annotated[str, Field(description="Who the task was assigned to, exactly as sent")]
    activity: Annotated[str, Field(description="What happened, e.g. created 'Setup database'")]
    task_id: Annotated[str | None, Field(description="The task that wrote it")]


class ProjectActivity(BaseModel):
    """One page of a project's activity, newest first."""

    project_id: int
    entries: Annotated[
        list[ActivityEntry], Field(description=f"At most `limit` (up to {MAX_PAGE}) entries")
    ]
    next_before: Annotated[
        int | None,
        Field(
            description="Pass as `before` for the next, older page; null when this page is the last"
        ),
    ]


@router.post(
    "/{project_id}/tasks",
    status_code=status.HTTP_202_ACCEPTED,
    responses={503: {"model": ErrorEnvelope, "description": "Task queue full; retry later"}},
)
# A repeat with the same Idempotency-Key gets the first answer, not a second task.
@idempotent
def create_project_task(
    project_id: ProjectId, body: ProjectTaskCreate, tasks: Tasks
) -> TaskAccepted:
    """Create a task in a project; the activity log is written after the response."""
    return tasks.add_task(
        record_project_activity, project_id, f"created {body.task_name!r}", body.assigned_to
    )


@router.get("/{project_id}/activity")
def project_activity(
    project_id: ProjectId,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Entries per page")] = 50,
    before: Annotated[
        int | None,
        Query(
            ge=1,
            le=2**53,
            description="Only entries older than this `entry_id` (a page's `next_before`)",
        ),
    ] = None,
) -> ProjectActivity:
    """A page of the project's activity, newest first; follow `next_before` for older ones.

    A page reads only its own entries (an index on the project), however long the log grows.
    """
    entries, more = project_page(
        get_settings().activity_log_path, project_id, limit=limit, before=before
    )
    return ProjectActivity(
        project_id=project_id,
        entries=[ActivityEntry.model_validate(entry, from_attributes=True) for entry in entries],
        next_before=entries[-1].entry_id if more else None,
    )
