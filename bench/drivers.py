"""Running an in-process driver (a script given as source) in a rendered project's interpreter.

For hot_path.py and contract_floor.py: the driver imports the rendered app and bench/in_process/
(its PYTHONPATH), and prints one JSON line last on stdout, which is returned.
"""

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from repository import BENCH_DIR


def run_driver(python: Path, source: str, *arguments: str) -> dict[str, Any]:
    result = subprocess.run(
        [str(python), "-c", source, *arguments],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
        env={**os.environ, "PYTHONPATH": str(BENCH_DIR / "in_process")},
    )
    if result.returncode != 0:
        raise SystemExit(f"the driver failed:\n{result.stderr[-3000:]}")
    # The app logs to stderr; the last stdout line is the driver's.
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))
