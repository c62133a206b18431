"""Sending e-mail behind a small interface, so the welcome task does not care how.

The default writes each message to an outbox folder (one .eml file, readable by any mail client)
and logs it. Swap in an SMTP or provider-API sender by implementing `EmailSender`.

`key` makes a send idempotent: the same key sends the message once however often it is called
(a task is delivered at least once, so its retry or re-run calls again). The outbox names the
file after it; a provider API takes it as its idempotency key (an `Idempotency-Key` header).
"""

import asyncio
import logging
import os
import re
import uuid
from email.message import EmailMessage
from email.policy import SMTPUTF8
from pathlib import Path
from typing import Protocol

from ..settings import get_settings

logger = logging.getLogger(__name__)

# A key becomes a file name only if it cannot leave the outbox (task ids are hex).
_SAFE_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")


class EmailSender(Protocol):
    async def send(self, message: EmailMessage, key: str | None = None) -> None: ...


class OutboxEmailSender:
    """Writes messages to `directory` as .eml files instead of sending them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, message: EmailMessage, key: str | None = None) -> None:
        # One file per key: sending again replaces it with the same message, never adds one.
        name = key if key is not None and _SAFE_KEY.fullmatch(key) else uuid.uuid4().hex
        path = self.directory / f"{name}.eml"
        # Headers as UTF-8 (RFC 6532, as an SMTPUTF8 server takes them). The default policy
        # writes RFC 2047 encoded words, and folds an address whose two parts are both non-ASCII
        # into a line without leading whitespace: a malformed header on 3.11-3.13, and an error
        # on 3.14, which checks what it writes.
        content = message.as_bytes(policy=SMTPUTF8)
        await asyncio.to_thread(self._write, path, content)
        logger.info("e-mail written to outbox", extra={"to": message["To"], "path": str(path)})

    def _write(self, path: Path, content: bytes) -> None:
        # The outbox holds addresses and messages: only the service's user may read it.
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Written aside, then renamed over: a reader never sees half a message, and a repeated
        # send (even one overlapping the first) leaves exactly one whole file.
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            private = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(private, "wb") as out:
                out.write(content)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)


def get_email_sender() -> EmailSender:
    return OutboxEmailSender(get_settings().outbox_dir)
