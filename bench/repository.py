"""Where the benchmark and the repository are. Importing this puts the repository on sys.path, so
that tests/rendering.py and tests/images.py import from run.py and from the scripts it starts."""

import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
