"""Storing uploaded files under names that cannot escape the upload directory."""

import re
import unicodedata
import uuid
from pathlib import Path

_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME_LENGTH = 100


def safe_filename(name: str | None) -> str:
    """A plain ASCII file name made from a client-supplied one.

    Directories (either slash) are dropped, compatibility characters folded (NFKC), anything
    but letters, digits, '.', '_' and '-' replaced, leading dots removed (no hidden files, no
    '..'), and the length capped. Never empty.
    """
    # Fold first: compatibility forms (fullwidth dots and slash, U+FF0E U+FF0F) become '../' only
    # now, and must be split off like the plain ones.
    folded = unicodedata.normalize("NFKC", name or "")
    base = folded.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE_RUN.sub("_", base).lstrip("._").rstrip("_")
    if len(cleaned) > MAX_NAME_LENGTH:
        stem, dot, suffix = cleaned.rpartition(".")
        keep = suffix[:16] if dot and stem else ""
        cleaned = cleaned[: MAX_NAME_LENGTH - len(keep) - 1].rstrip(".") + (
            "." + keep if keep else ""
        )
    return cleaned or "upload"


def upload_path(upload_dir: Path, filename: str | None) -> Path:
    """A fresh path inside `upload_dir` for a file the client called `filename`."""
    root = upload_dir.resolve()
    target = (root / f"{uuid.uuid4().hex[:12]}-{safe_filename(filename)}").resolve()
    if target.parent != root:
        raise ValueError(f"refusing a path outside the upload directory: {filename!r}")
    return target
