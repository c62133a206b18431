"""What leaves the service is trimmed: error text that clients see, personal data in log lines.

- `client_text`: an exception's message as a client sees it (a task's `error`, the details of
  `/ready`): absolute file system paths cut to `<path>/<name>`, credentials in URLs, bearer
  tokens and `key=value` secrets replaced by `***`. ERROR_DETAIL=full (development) shows the
  message as it is. Logs always keep the whole exception, traceback included.
- `mask_emails`: e-mail addresses in log lines as `a***@example.com` (logs.py applies it to every
  message and field), so logs can be kept and shared without the addresses they mention.
"""

import re
from typing import Literal

ErrorDetail = Literal["safe", "full"]

# An absolute path of two parts or more: a slash that starts no URL part (not after a word
# character, a dot or another slash), then directories, then the last part, which is kept.
_PATH = re.compile(r"(?<![\w.~:/-])/(?:[^\s/'\"`:,;()<>\[\]{}]+/)+([^\s/'\"`:,;()<>\[\]{}]*)")
_URL_CREDENTIALS = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^\s/@]+@")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+")
# `name=value` where the name says it holds a secret: api_key=, token=, PASSWORD=, client_secret=.
_SECRET_SETTING = re.compile(
    r"(?i)\b([\w.-]*(?:key|token|secret|password|passwd|pwd)s?\s*=\s*['\"]?)[^\s,;&'\"]+"
)
_EMAIL = re.compile(r"\b([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")

_error_detail: ErrorDetail = "safe"


def set_error_detail(detail: ErrorDetail) -> None:
    """How much of an error clients see, for the whole process (ERROR_DETAIL, set at startup)."""
    global _error_detail
    _error_detail = detail


def client_text(text: str) -> str:
    """`text` (an exception's message) as a client may see it; see the module docstring."""
    # Valid Unicode in either mode: a lone surrogate in a message would fail every response
    # (and every read of a record) that shows it.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if _error_detail == "full":
        return text
    text = _URL_CREDENTIALS.sub(r"\1***@", text)
    text = _BEARER.sub(r"\1***", text)
    text = _SECRET_SETTING.sub(r"\1***", text)
    return _PATH.sub(r"<path>/\1", text)


def mask_emails(text: str) -> str:
    """`text` with each e-mail address shown as its first character and its domain."""
    # A function, not a template string: the template would be compiled on first use, an import
    # that fails in the last log lines of an interpreter shutting down.
    return _EMAIL.sub(_masked_address, text)


def _masked_address(address: re.Match[str]) -> str:
    return f"{address[1]}***@{address[2]}"
