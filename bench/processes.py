"""What a run prints and what it reads back from the processes it starts.

Nothing here imports a third-party package: the host-side scripts (deployment.py, the Lambda
part, celery_throughput.py) run under the host's interpreter, which need not have httpx.
"""

import contextlib
import os
import sys
import time
from pathlib import Path

_T0 = time.monotonic()


def say(message: str) -> None:
    """One progress line, stamped with the seconds since the run started."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", flush=True)


def host_python() -> str:
    """The interpreter run.py was started with (the deployment part needs its boto3 and moto)."""
    return os.environ.get("BENCH_HOST_PYTHON") or sys.executable


def last_line(path: Path) -> str:
    """The line of a script's log that says why it failed: its last error line, else its last line."""
    with contextlib.suppress(OSError):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        for line in reversed(lines):
            if "error" in line.lower():
                return line.strip()[:200]
        return lines[-1].strip()[:200] if lines else "no output"
    return "no log"


def error_line(output: str) -> str:
    """The line of a failed command's output that says what went wrong (its last error line)."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if "error" in line.lower() or "failed" in line.lower():
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""
