"""How the metrics measured against the running servers (1-3, 7, 8) are run.

Each metric gets freshly started servers (nothing left over from the previous one), is repeated
`sizes.runs` times with the systems interleaved (the order rotates each run, so none is always
first or last), and waits for a system to be idle before the next measurement.
"""

import asyncio
import contextlib
import shutil
import time
from types import ModuleType
from typing import Any

import httpx
from processes import say
from run_results import Results
from systems import SetupError, System


def measure_on_fresh_servers(
    metrics: list[ModuleType], systems: dict[str, System], results: Results, sizes: Any
) -> None:
    """Each metric module's `measure(system, run, sizes, results)`, on servers started for it alone."""
    for metric in metrics:
        for key, system in list(systems.items()):
            system.stop()
            # A fresh working directory (task database, logs, uploads): nothing left over
            # from the previous metric can be recovered into this one.
            shutil.rmtree(system.workdir, ignore_errors=True)
            try:
                system.start()
            except SetupError as error:
                results.unavailable[key] = error.cell
                del systems[key]
        if not systems:
            return
        asyncio.run(repeat_interleaved(metric, systems, results, sizes))


async def repeat_interleaved(metric: ModuleType, systems: dict[str, System], results: Results, sizes: Any) -> None:
    for run in range(sizes.runs):
        for system in ordered(systems, run):
            say(f"metric {metric.NUMBER} ({metric.TITLE}), run {run + 1}/{sizes.runs}: {system.label}")
            try:
                await metric.measure(system, run, sizes, results)
            except (httpx.HTTPError, OSError, KeyError, ValueError) as error:
                say(f"  failed: {type(error).__name__}: {error}")
                results.data[metric.KEY].setdefault(system.key, []).append(
                    {"error": f"{type(error).__name__}: {error}"}
                )
                await asyncio.to_thread(revive, system)
            await settle(system)


def ordered(systems: dict[str, System], run: int) -> list[System]:
    """The systems, rotated each run, so none is always measured first or last."""
    keys = [k for k in ("stock", "python", "rust") if k in systems]
    keys += [k for k in systems if k not in keys]  # any other (scheduling_floor.py's floor)
    shift = run % len(keys) if keys else 0
    return [systems[k] for k in keys[shift:] + keys[:shift]]


def revive(system: System) -> None:
    """After a failed run: restart the server if it died or stopped answering."""
    if system.healthy():
        return
    say(f"  {system.label} is not healthy any more: restarting it (see {system.log_path})")
    system.stop()
    try:
        system.start()
    except SetupError as error:
        say(f"  could not restart it: {error}")


async def settle(system: System, timeout: float = 60.0) -> None:
    """Wait until the system has no task queued or running (the stock app cannot say: pause)."""
    if system.kind == "stock":
        await asyncio.sleep(0.3)
        return
    stop_at = time.monotonic() + timeout
    while time.monotonic() < stop_at:
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            counters = await asyncio.to_thread(system.counters)
            if counters["queued"] == 0 and counters["running"] == 0:
                break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.2)
