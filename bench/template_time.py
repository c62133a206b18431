"""Metric 5: how long the template takes to render (`copier copy`) and to test (the whole CI run)."""

import contextlib
import math
import os
import re
import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Any

from processes import say
from report_cells import Table, not_measured
from run_results import Results
from systems import SetupError
from variants import render, variant_answers

NUMBER = 5
NAME = "template_time"
# Representative variants for `copier copy` timing (label, answers).
COPY_VARIANTS = [
    ("python runner, container, bare", variant_answers("python", include_examples=False)),
    ("python runner, both targets, examples", variant_answers("python", deploy_target="both")),
    ("rust runner, both targets, examples (the defaults)", variant_answers("rust", deploy_target="both")),
    ("python runner, container, celery, examples", variant_answers("python", task_queue="celery")),
]


def time_copier_copy(results: Results, scratch: Path, runs: int) -> None:
    """`copier copy` of each of COPY_VARIANTS, `runs` times, into results.json's "copy"."""
    copy_times = results.data["copy"]
    for run in range(runs):
        for label, answers in COPY_VARIANTS:
            destination = scratch / f"{run}-{abs(hash(label))}"
            try:
                took = render(answers, destination)
            except SetupError as error:
                copy_times[label] = [float("nan")]
                say(f"copier copy {label}: {error}")
                continue
            finally:
                shutil.rmtree(destination, ignore_errors=True)
            copy_times.setdefault(label, []).append(took)
            say(f"copier copy {label}: {took:.1f}s")


def ci_test_run_seconds() -> dict[str, Any]:
    """The whole template test run, from the last CI log (`issues ci`), if there is one."""
    override = os.environ.get("BENCH_CI_LOG")
    text = ""
    from_override = bool(override) and Path(str(override)).exists()
    if from_override:
        text = Path(str(override)).read_text(errors="replace")
    elif shutil.which("issues"):
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            text = subprocess.run(["issues", "ci"], capture_output=True, text=True, timeout=60, check=False).stdout
    match = re.search(r"template test run took (\d+)s", text)
    if match:
        source = "the CI log BENCH_CI_LOG names" if from_override else "last CI log"
        return {"seconds": int(match.group(1)), "source": source}
    return {
        "missing": "no CI log on record yet (`issues ci` has none); .ci/run prints it as 'template test run took Ns'"
    }


# -- in the report ----------------------------------------------------------------------------


def add_rows(table: Table, results: dict[str, Any], sizes: Any) -> None:
    skipped = results.get("skipped", {}).get(str(NUMBER))
    copies = results.get("copy") or {}
    if skipped or not copies:
        table.add("5. `copier copy` time per variant", "—", not_measured(skipped or "no render completed"), "—")
    for label, times in copies.items():
        kept = [t for t in times if not math.isnan(t)]
        if not kept:
            table.add(f"5. `copier copy` ({label})", "—", not_measured("copier copy failed"), "—")
            continue
        spread = f" (min {min(kept):.1f}, max {max(kept):.1f}, {len(kept)} runs)" if len(kept) > 1 else " (1 run)"
        table.add(f"5. `copier copy` ({label})", "—", f"{statistics.median(kept):.1f} s{spread}", "—")
    ci = results.get("ci") or {}
    if skipped:
        cell = not_measured(skipped)
    elif "seconds" in ci:
        cell = f"{ci['seconds'] / 60:.1f} min ({ci['source']})"
    else:
        cell = not_measured(ci.get("missing", "no CI log"))
    table.add("5. the whole template test run (`bash .ci/run`)", "—", cell, "—")
