"""`python -m {package}.serve [app] [uvicorn options]`: uvicorn serving the app, with one set of
metrics.

The image's command. It is `uvicorn <package>.main:app [options]` (any uvicorn option, e.g.
`--workers 4`) with one thing settled first: PROMETHEUS_MULTIPROC_DIR. Each of uvicorn's worker
processes counts what it does itself, and a scrape of GET /metrics reaches one of them; with the
directory set, every worker writes its samples there and each scrape sums all of them
(telemetry/prometheus.py), so the totals are the same whichever worker answers.

The directory's samples belong to one run of the server: a directory given in the environment
is emptied of them at start (a restarted server starts counting from zero, as one process
does), and without one a fresh temporary directory is made.
"""

import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

APP = f"{__package__}.main:app"
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def prepare_metrics_directory() -> Path:
    """The directory the server's processes share their samples in, empty and in the
    environment the workers inherit."""
    given = os.environ.get(MULTIPROCESS_DIR)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
    else:
        directory = Path(tempfile.mkdtemp(prefix="metrics-"))
        os.environ[MULTIPROCESS_DIR] = str(directory)
    return directory


def main(argv: Sequence[str] | None = None) -> None:
    """Serve `APP`, or the app named first (`module:attribute`, as uvicorn takes it)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0].startswith("-"):
        arguments.insert(0, APP)
    prepare_metrics_directory()
    # Imported after: nothing may load prometheus_client before the directory is in place.
    from uvicorn.main import main as uvicorn

    uvicorn.main(args=arguments, prog_name="uvicorn")


if __name__ == "__main__":
    main()
