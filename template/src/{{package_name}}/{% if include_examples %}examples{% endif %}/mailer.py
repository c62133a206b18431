"""Sending e-mail behind a small interface, so the welcome task does not care how.

The default writes each message to an outbox folder (one .eml file, readable by any mail client)
and logs it. Swap in an SMTP or provider-API sender by implementing `EmailSender`.
"""

import asyncio
import logging
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from ..settings import get_settings

logger = logging.getLogger(__name__)


class EmailSender(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class OutboxEmailSender:
    """Writes messages to `directory` as .eml files instead of sending them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, message: EmailMessage) -> None:
        path = self.directory / f"{uuid.uuid4().hex}.eml"
        await asyncio.to_thread(self._write, path, bytes(message))
        logger.info("e-mail written to outbox", extra={"to": message["To"], "path": str(path)})

    def _write(self, path: Path, content: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def get_email_sender() -> EmailSender:
    return OutboxEmailSender(get_settings().outbox_dir)
