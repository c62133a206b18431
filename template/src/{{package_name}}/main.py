"""The ASGI entry point: `uvicorn <package>.main:app`."""

from .app import create_app
from .startup import settings_or_exit

app = create_app(settings_or_exit())
