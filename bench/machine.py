"""The "meta" of results.json: when and where a run happened, on which versions and sizes."""

import contextlib
import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from repository import REPO_ROOT
from run_results import Results
from systems import System

from tests.rendering import LOCAL_PYTHON


def run_metadata(
    started_at: float, *, sizes: Any, smoke: bool, results: Results, systems: dict[str, System]
) -> dict[str, Any]:
    return {
        "date": datetime_utc(started_at),
        "duration_s": round(time.time() - started_at),
        "mode": "smoke" if smoke else "full",
        "runs": sizes.runs,
        "sizes": vars(sizes) if hasattr(sizes, "__dict__") else {},
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "kernel": os.uname().release,
        "python": LOCAL_PYTHON,
        "versions": results.versions,
        "commit": git_commit(),
        "systems": {key: system.label for key, system in systems.items()},
        "unavailable": results.unavailable,
        "reused": results.reused,
    }


def datetime_utc(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M UTC")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def git_commit() -> str:
    """HEAD, read-only (the working tree on top of it is what was rendered)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )
        if result.returncode == 0:
            return result.stdout.strip()
    return "unknown"
