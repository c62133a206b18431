"""Metric 1 for a server that keeps the task contract and does nothing more: the floor of the
scheduling cost, beside stock and the template measured the same way in the same minutes.

    python3 bench/scheduling_floor.py [--runs 4] [--work DIR]

Issue 14 asks scheduling one task to add at most +0.15 ms at p50 and +0.5 ms at p99 to the
request. contract_floor.py gives the CPU of the insert and its line alone (about 0.1 ms); but a
closed loop of sequential requests also pays for the task's run, on another thread, while the next
request is served, and for the hand-off to that thread. This measures both in a real server:
in_process/contract_floor_app.py (a bare FastAPI app whose no-op task is accepted, handed to one
worker thread and run with the contract's reads, writes and lines: contract_steps.py) under the
same uvicorn, with metric 1's own `measure`, interleaved with the stock baseline and the
template's Python-runner service, `--runs` rounds each, the order rotating. The same bare server
also accepts the task and never runs it (the request's part alone), and commits one bare row in
place of the record and its line (what "committed before the 202" costs by itself).
"""

import argparse
import asyncio
import dataclasses
import tempfile
from pathlib import Path

import scheduling_latency
from repository import BENCH_DIR
from run import FULL
from run_results import Results
from server_rounds import repeat_interleaved
from systems import System
from variants import install, package_name, render, stock_system, template_system, variant_answers

FLOOR = "floor"
# The bare server's modes (in_process/contract_floor_app.py), the whole contract first.
MODES = {
    "run": "the contract alone, in a bare server",
    "accept": "the same, the task accepted, never run",
    "insert": "the same, one bare row committed",
}


def floor_systems(python: Path, package: str, work: Path) -> dict[str, System]:
    run = System(
        key=FLOOR,
        label=MODES["run"],
        # It answers as the template's bench service does: the same endpoints, and /ready.
        kind="template",
        python=python,
        app_dir=BENCH_DIR / "in_process",
        module="contract_floor_app",
        workdir=work / "state" / FLOOR,
        log_path=work / "logs" / "floor.log",
        env={"CONTRACT_FLOOR_PACKAGE": package},
    )
    others = {
        f"{FLOOR}-{mode}": dataclasses.replace(
            run.variant(mode, CONTRACT_FLOOR_MODE=mode), key=f"{FLOOR}-{mode}", label=label
        )
        for mode, label in MODES.items()
        if mode != "run"
    }
    return {FLOOR: run, **others}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cft-scheduling-floor")
    options = parser.parse_args()
    work = options.work
    project = work / "render" / "python"
    render(variant_answers("python"), project)
    python = install(project)
    systems = {
        "stock": stock_system(work / "state" / "stock", work / "logs", project, python, work / "stock-venv"),
        "python": template_system("python", "template, Python runner", project, python, work / "state" / "python",
                                  work / "logs", 1000),
        **floor_systems(python, package_name(project), work),
    }  # fmt: skip
    results = Results(only={scheduling_latency.NUMBER})
    sizes = dataclasses.replace(FULL, runs=options.runs)
    for system in systems.values():
        system.start()
    try:
        asyncio.run(repeat_interleaved(scheduling_latency, systems, results, sizes))
    finally:
        for system in systems.values():
            system.stop()
    print(f"# metric 1, {sizes.requests} sequential requests per endpoint per run, medians of {sizes.runs} runs")
    for key, system in systems.items():
        stats = scheduling_latency.stats(results.data, key)
        print(
            f"{system.label:48} no task {stats['nothing_p50']:.2f} / {stats['nothing_p99']:.2f} ms, "
            f"cost of one task {stats['cost_p50']:+.2f} / {stats['cost_p99']:+.2f} ms (p50 / p99)"
        )
    print("target: cost <= +0.15 / +0.50 ms")


if __name__ == "__main__":
    main()
