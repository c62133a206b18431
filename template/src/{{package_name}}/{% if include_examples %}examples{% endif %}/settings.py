"""The examples' settings: where they keep files, and the largest upload they take.

`Settings` derives from `ExampleSettings`, so these are read from the environment like every other
setting; delete this module with the package, and `ExampleSettings` from `Settings`' bases.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Self

from pydantic import BaseModel, Field, model_validator

# Room in a request around the largest upload for its multipart framing: boundary lines, the
# part headers (the file name among them) and the other form fields.
MULTIPART_FRAMING_BYTES = 64 * 1024


class ExampleSettings(BaseModel):
    """The example endpoints' settings; they also raise the default request limit to fit their
    largest upload."""

    upload_dir: Path = Path("./var/uploads")
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    outbox_dir: Path = Path("./var/outbox")
    # The projects' activity log: an SQLite database (activity.py).
    activity_log_path: Path = Path("./var/activity.db")

    if TYPE_CHECKING:
        # The service's request limit (Settings, settings.py).
        max_request_bytes: int

    def writable_folders(self) -> dict[str, Path]:
        """The folders the examples write files into, by the setting that names each: checked at
        startup (startup.py), so an unwritable one stops the service with a clear line instead
        of passing /ready and failing requests later."""
        return {
            "UPLOAD_DIR": self.upload_dir,
            "OUTBOX_DIR": self.outbox_dir,
            "ACTIVITY_LOG_PATH": self.activity_log_path.parent,
        }

    @model_validator(mode="after")
    def _an_upload_fits_in_a_request(self) -> Self:
        if "max_request_bytes" not in self.model_fields_set:
            # Unless MAX_REQUEST_BYTES is set: the largest upload and its multipart framing.
            self.max_request_bytes = self.max_upload_bytes + MULTIPART_FRAMING_BYTES
        elif self.max_request_bytes <= self.max_upload_bytes:
            raise ValueError(
                f"MAX_REQUEST_BYTES ({self.max_request_bytes}) must exceed MAX_UPLOAD_BYTES "
                f"({self.max_upload_bytes}): a multipart upload carries framing around the file"
            )
        return self
