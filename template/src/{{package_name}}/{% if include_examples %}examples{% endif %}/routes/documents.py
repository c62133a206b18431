"""Document upload: stored at once under a safe name, analysed in the background."""

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, UploadFile, status

from ...errors import ErrorEnvelope
from ...settings import get_settings
from ...tasks import TaskAccepted, Tasks
from ..jobs import process_document
from ..uploads import upload_path

router = APIRouter(prefix="/documents", tags=["examples"])

ACCEPTED_TYPES = frozenset({"text/plain", "text/csv", "text/markdown", "application/json"})
_CHUNK = 1024 * 1024


@router.post(
    "/upload",
    status_code=status.HTTP_202_ACCEPTED,
    # Say in the schema which content types the file part may have, so clients (and schema-driven
    # fuzzers) know that anything else is answered 415.
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "encoding": {"file": {"contentType": ", ".join(sorted(ACCEPTED_TYPES))}}
                }
            }
        }
    },
    responses={
        413: {
            "model": ErrorEnvelope,
            "description": "File larger than MAX_UPLOAD_BYTES (or body than MAX_REQUEST_BYTES)",
        },
        415: {"model": ErrorEnvelope, "description": "Not a text document"},
        503: {"model": ErrorEnvelope, "description": "Task queue full; retry later"},
    },
)
def upload_document(
    file: UploadFile,
    tasks: Tasks,
    # An empty form field counts as not sent (FastAPI's form semantics): it gets the default.
    uploaded_by: Annotated[str, Form(max_length=100)] = "user",
) -> TaskAccepted:
    """Store the file and schedule its analysis (words, lines, SHA-256; column stats for CSV)."""
    settings = get_settings()
    content_type = (file.content_type or "").split(";")[0].strip().lower()
    if content_type not in ACCEPTED_TYPES:
        raise HTTPException(
            status_code=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=f"content type {content_type or 'none'!r} is not accepted; "
            f"send one of {sorted(ACCEPTED_TYPES)}",
        )
    if file.size is not None and file.size > settings.max_upload_bytes:
        raise _too_large(settings.max_upload_bytes)

    settings.upload_dir.mkdir(parents=True, exist_ok=True)
    target = upload_path(settings.upload_dir, file.filename)
    written = 0
    try:
        with target.open("xb") as out:
            while chunk := file.file.read(_CHUNK):
                written += len(chunk)
                if written > settings.max_upload_bytes:
                    raise _too_large(settings.max_upload_bytes)
                out.write(chunk)
        # Inside the try: if add_task refuses (503, queue full or store down), no task will ever
        # read the file, so it is removed like a partial one.
        return tasks.add_task(
            process_document, target.name, file.filename or target.name, uploaded_by, content_type
        )
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def _too_large(limit: int) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"the file is larger than the limit of {limit} bytes",
    )
