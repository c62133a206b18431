"""What every entry point loads first: the settings, checked, or a clear reason not to start.

`uvicorn <package>.main:app`, the Celery worker and the Lambda handler all start with
`settings_or_exit()`. A bad setting (a negative queue size, a word where a number goes, an
unknown choice) or a state folder that cannot be written ends the process before anything runs:
one line on stderr per problem, naming the environment variable and what it accepts (never the
value given, which may be a secret), and exit code 2, the code of a usage error. A traceback
would only bury the one line that matters.
"""

import os
import sys
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError

from .settings import Settings, get_settings
from .tasks.store import StoreLocationError, prepare_store_location

# The exit code of a process started with a bad configuration (as for a bad command line).
BAD_CONFIGURATION = 2


def settings_or_exit() -> Settings:
    """The settings, once valid and once the task store's folder takes files; else exit."""
    try:
        settings = get_settings()
        prepare_store_location(settings.task_store_url)
    except ValidationError as error:
        _exit(settings_problems(error))
    except StoreLocationError as error:
        _exit([str(error)])
    if problems := unwritable_folders(settings):
        _exit(problems)
    return settings


def unwritable_folders(settings: Settings) -> list[str]:
    """Make the folders the service writes files into (0700) and check they take files; one line
    per folder that does not. An optional part whose settings name such folders lists them in
    `writable_folders()` (the examples do)."""
    listed: dict[str, Path] = getattr(settings, "writable_folders", dict)()
    problems = []
    for name, folder in listed.items():
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            reason = error.strerror or str(error)
            problems.append(f"{name}: the folder {folder} cannot be made: {reason}")
            continue
        if not os.access(folder, os.W_OK | os.X_OK):
            problems.append(f"{name}: the folder {folder} takes no new files")
    return problems


def settings_problems(error: ValidationError) -> list[str]:
    """One line per bad setting: its environment variable and what it accepts."""
    lines = []
    for problem in error.errors(include_url=False, include_input=False):
        if problem["type"] == "default_factory_not_called":
            continue  # a default computed from a bad setting: that one has its own line
        message = " ".join(str(problem["msg"]).split())
        # A check across settings (a model validator) says which settings in its message.
        message = message.removeprefix("Value error, ")
        names = ".".join(str(part).upper() for part in problem["loc"])
        lines.append(
            f"invalid setting {names}: {message}" if names else f"invalid settings: {message}"
        )
    return lines


def _exit(lines: list[str]) -> NoReturn:
    for line in lines:
        print(line, file=sys.stderr)
    # SystemExit, not an exception with a traceback: uvicorn, Celery and the Lambda runtime
    # let it end the process with its code.
    raise SystemExit(BAD_CONFIGURATION)
