"""Project task creation, with the activity written to a log in the background."""

from typing import Annotated

from fastapi import APIRouter, Path, status
from pydantic import BaseModel, Field

from ...errors import ErrorEnvelope
from ...settings import get_settings
from ...tasks import TaskAccepted, Tasks
from ..jobs import record_project_activity

router = APIRouter(prefix="/projects", tags=["examples"])

ProjectId = Annotated[int, Path(ge=1, le=2**53)]


class ProjectTaskCreate(BaseModel):
    task_name: Annotated[str, Field(min_length=1, max_length=200)]
    assigned_to: Annotated[str, Field(min_length=1, max_length=100)]


class ProjectActivity(BaseModel):
    project_id: int
    entries: list[str]


@router.post(
    "/{project_id}/tasks",
    status_code=status.HTTP_202_ACCEPTED,
    responses={503: {"model": ErrorEnvelope, "description": "Task queue full; retry later"}},
)
def create_project_task(
    project_id: ProjectId, body: ProjectTaskCreate, tasks: Tasks
) -> TaskAccepted:
    """Create a task in a project; the activity log is written after the response."""
    return tasks.add_task(
        record_project_activity, project_id, f"created {body.task_name!r}", body.assigned_to
    )


@router.get("/{project_id}/activity")
def project_activity(project_id: ProjectId) -> ProjectActivity:
    """The activity lines logged for a project so far."""
    path = get_settings().activity_log_path
    marker = f"\tproject={project_id}\t"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return ProjectActivity(
        project_id=project_id, entries=[line for line in lines if marker in line]
    )
