"""Document upload: stored at once under its task's id, analysed in the background, then removed."""

import os
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, UploadFile, status

from ...errors import ErrorEnvelope
from ...settings import get_settings
from ...tasks import TaskAccepted, Tasks, idempotent
from ..jobs import process_document
from ..uploads import partial_upload, task_upload, uploads_swept

# Its lifespan sweeps away the uploads no task will read (uploads.py).
router = APIRouter(prefix="/documents", tags=["examples"], lifespan=uploads_swept)

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
# A repeat with the same Idempotency-Key gets the first answer, not a second task.
@idempotent
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

    # Uploads are the callers' files: only the service's user may read them.
    settings.upload_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = partial_upload(settings.upload_dir)
    written = 0
    try:
        private = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(private, "wb") as out:
            while chunk := file.file.read(_CHUNK):
                written += len(chunk)
                if written > settings.max_upload_bytes:
                    raise _too_large(settings.max_upload_bytes)
                out.write(chunk)
        # Inside the try: if add_task refuses (503, queue full or store down), no task will ever
        # read the file, so it is removed like a partial one.
        accepted = tasks.add_task(
            process_document, file.filename or "upload", uploaded_by, content_type
        )
        # Named after its task once the task's record is stored (so the sweep, finding a file of
        # this name, can ask the store about it) and before the response is sent (so before the
        # task starts). Should this process die in between, the task fails saying its upload is
        # missing, and the sweep removes the partial file.
        os.replace(partial, task_upload(settings.upload_dir, accepted.task_id))
        return accepted
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _too_large(limit: int) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"the file is larger than the limit of {limit} bytes",
    )
