"""Pure-Python analysis for the example tasks: the reference every faster implementation matches.

The definitions are byte-level and ASCII-only on purpose, so that a native implementation can
give exactly the same answers (Unicode case and whitespace rules differ between languages).
"""

import csv
import hashlib
import io
import re
from collections.abc import Callable
from typing import Any

POSITIVE_WORDS = frozenset(
    b"great excellent amazing love loved perfect good fantastic wonderful happy recommend best "
    b"awesome nice fast".split()
)
NEGATIVE_WORDS = frozenset(
    b"bad terrible awful hate hated poor broken worst slow disappointing disappointed refund "
    b"useless horrible waste".split()
)
# What bytes.split() splits at.
_ASCII_WHITESPACE = b" \t\n\r\x0b\x0c"
# How many bytes of a document are analysed between two progress reports.
PROGRESS_CHUNK = 1024 * 1024
# How many rows of a CSV document are read between two progress reports.
PROGRESS_ROWS = 10_000
_ASCII_PUNCTUATION = b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
# A number is plain decimal notation, optionally signed, with an optional exponent; ASCII digits
# only (a str pattern's \d would also take other scripts' digits, which float() accepts).
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)


def document_stats(
    data: bytes, on_progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Bytes, lines, words and SHA-256 of a document.

    words: runs of bytes between ASCII whitespace (space, \\t, \\n, \\r, \\v, \\f).
    lines: newlines, plus one for a last line without a trailing newline.

    The document is read in pieces of `PROGRESS_CHUNK` bytes; after each, `on_progress(done,
    total)` is told how many of its bytes are analysed, the last time with done == total (once,
    with 0 and 0, for an empty document). An exception it raises ends the analysis.
    """
    total = len(data)
    sha256 = hashlib.sha256()
    newlines = words = 0
    in_word = False  # the previous piece ended inside a word
    chunk = PROGRESS_CHUNK
    for start in range(0, total, chunk):
        piece = data[start : start + chunk]
        sha256.update(piece)
        newlines += piece.count(b"\n")
        words += len(piece.split())
        if in_word and piece[0] not in _ASCII_WHITESPACE:
            words -= 1  # a word running on from the previous piece, counted there
        in_word = piece[-1] not in _ASCII_WHITESPACE
        if on_progress is not None:
            on_progress(start + len(piece), total)
    if on_progress is not None and not data:
        on_progress(0, 0)
    return {
        "bytes": total,
        "lines": newlines + (1 if data and not data.endswith(b"\n") else 0),
        "words": words,
        "sha256": sha256.hexdigest(),
    }


def review_sentiment(text: str) -> dict[str, Any]:
    """Count positive and negative words (ASCII-lower-cased, punctuation trimmed from both ends)."""
    positive = negative = 0
    for token in text.encode("utf-8").split():
        word = token.strip(_ASCII_PUNCTUATION).lower()
        if word in POSITIVE_WORDS:
            positive += 1
        elif word in NEGATIVE_WORDS:
            negative += 1
    score = positive - negative
    label = "positive" if score > 0 else "negative" if score < 0 else "neutral"
    return {"positive": positive, "negative": negative, "score": score, "label": label}


def csv_column_stats(
    data: bytes, on_progress: Callable[[int, int], None] | None = None
) -> dict[str, dict[str, float | int]]:
    """Per-column statistics of the numeric cells of a CSV document with a header row.

    A cell is numeric when, stripped of spaces, it is a plain decimal number; other cells are
    skipped. Columns without a numeric cell are left out. Sums run in row order.

    `on_progress(done, total)` is told how many characters of the decoded document are read
    every `PROGRESS_ROWS` rows, and once at the end with done == total.
    """
    text = data.decode("utf-8", errors="replace")
    source = io.StringIO(text, newline="")
    reader = csv.reader(source)
    header = next(reader, [])
    columns: dict[str, list[float]] = {name: [] for name in header}
    for number, row in enumerate(reader, start=1):
        for name, cell in zip(header, row, strict=False):
            cell_text = cell.strip(" ")
            if _NUMBER.fullmatch(cell_text):
                columns[name].append(float(cell_text))
        # The end is reported once, below.
        if on_progress is not None and number % PROGRESS_ROWS == 0 and source.tell() < len(text):
            on_progress(source.tell(), len(text))
    if on_progress is not None:
        on_progress(len(text), len(text))
    return {name: _summary(values) for name, values in columns.items() if values}


def list_stats(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | int]]:
    """Per-field statistics of the numbers (not booleans) in a list of JSON objects."""
    fields: dict[str, list[float]] = {}
    for row in rows:
        for name, value in row.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                fields.setdefault(name, []).append(float(value))
    return {name: _summary(values) for name, values in fields.items()}


def _summary(values: list[float]) -> dict[str, float | int]:
    total = 0.0
    for value in values:
        total += value
    return {
        "count": len(values),
        "sum": total,
        "min": min(values),
        "max": max(values),
        "mean": total / len(values),
    }
