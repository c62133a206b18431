"""Metric 7: what task control costs (the template alone: stock `BackgroundTasks` has none of it).

- Idempotent scheduling: the no-op scheduling endpoint with a fresh `Idempotency-Key` on every
  request (so each one claims a key) against the same endpoint without one, sequential requests
  on one connection, the two kinds in alternating blocks; the difference is what a key costs.
- Progress: `GET /health` probed while one task calls `report_progress` 10,000 times a second,
  against the same probe while the same task paces itself without reporting, in alternating
  rounds: the ratio of the two p99s is what progress reporting costs the API.
"""

import asyncio
import functools
import itertools
import time
from typing import Any

import httpx
from load_client import Probed, closed_loop, probe_while, summary
from report_cells import RUNNERS, TIMES, Table, good_runs, median, p50_p99
from report_cells import unavailable_reason as why_not
from run_results import Results
from server_rounds import settle
from systems import System

NUMBER = 7
NAME = "task_control_costs"
TITLE = "idempotency keys and progress reporting"
KEY = "m7"
PROGRESS_CALLS_PER_SECOND = 10_000
_keys = itertools.count()
# Requests of one kind in a row in the scheduling comparison.
BLOCK = 50
# Rounds of each mode (silent, reporting) in the progress comparison.
PROGRESS_ROUNDS = 3


async def measure(system: System, run: int, sizes: Any, results: Results) -> None:
    if system.kind == "stock":
        return  # nothing to compare: stock BackgroundTasks has neither feature
    per_run: dict[str, Any] = await compare_scheduling(system, run, sizes)
    per_run.update(await compare_progress(system, run, sizes))
    results.data[KEY].setdefault(system.key, []).append(per_run)


async def compare_progress(system: System, run: int, sizes: Any) -> dict[str, Any]:
    """/health probed while the pacing task runs silent and while it reports, PROGRESS_ROUNDS
    times each, alternating (the first mode alternating by run); each mode's latencies pooled.
    One p99 is a few of the largest of some hundred probes: a single round of each swung the
    ratio from 0.6 to 1.3 between runs of the same code."""
    modes = ("silent", "reporting") if run % 2 == 0 else ("reporting", "silent")
    latencies: dict[str, list[float]] = {mode: [] for mode in modes}
    errors = dict.fromkeys(modes, 0)
    outcome: dict[str, dict[str, Any]] = {}
    for _ in range(PROGRESS_ROUNDS):
        for mode in modes:
            probed, result = await health_while_task_runs(system, sizes, report=mode == "reporting")
            latencies[mode] += probed.latencies
            errors[mode] += probed.errors
            outcome[mode] = result  # the last round's task result (calls, rate reached)
            await settle(system)
    return {f"health_{mode}": {**summary(latencies[mode]), **outcome[mode], "errors": errors[mode]} for mode in modes}


async def compare_scheduling(system: System, run: int, sizes: Any) -> dict[str, Any]:
    """`sizes.requests` sequential requests of each kind on one connection, in alternating blocks
    of BLOCK (the first kind alternating by run), so that a slow spell of the machine falls on
    both kinds alike rather than on whichever ran second."""
    kinds = ("plain", "idempotent") if run % 2 == 0 else ("idempotent", "plain")
    paths = {"plain": system.endpoints.noop, "idempotent": "/bench/idempotent-noop-task"}

    def kind_of(index: int) -> str:
        return kinds[(index // BLOCK) % 2]

    async def post(http: httpx.AsyncClient, index: int) -> httpx.Response:
        kind = kind_of(index)
        headers = {"Idempotency-Key": f"bench-{run}-{next(_keys)}"} if kind == "idempotent" else {}
        return await http.post(paths[kind], headers=headers)

    await closed_loop(system.base_url, post, count=2 * sizes.warmup, concurrency=1, deadline=sizes.timeout)
    await settle(system)
    total = 2 * sizes.requests
    batch = await closed_loop(system.base_url, post, count=total, concurrency=1, deadline=sizes.timeout)
    if batch.accepted < total or len(batch.latencies) != total:
        raise ValueError(f"scheduling: {batch.statuses}, {batch.errors} errors")
    await settle(system)
    # One connection, one request at a time: latencies are in the order of the requests.
    return {
        kind: summary([latency for index, latency in enumerate(batch.latencies) if kind_of(index) == kind])
        for kind in kinds
    }


async def health_while_task_runs(system: System, sizes: Any, *, report: bool) -> tuple[Probed, dict[str, Any]]:
    """The /health probes made while the bench's pacing task runs for `sizes.progress_seconds`,
    and what the task returned."""
    seconds = sizes.progress_seconds
    async with httpx.AsyncClient(base_url=system.base_url, trust_env=False, timeout=30) as http:
        params = {"seconds": seconds, "rate": PROGRESS_CALLS_PER_SECOND, "report": int(report)}
        accepted = await http.post("/bench/progress-task", params=params)
        accepted.raise_for_status()
        status_url = accepted.json()["status_url"]
        deadline = time.monotonic() + sizes.timeout
        while (await http.get(status_url)).json()["state"] == "queued":
            if time.monotonic() > deadline:
                raise ValueError("the progress task never started")
            await asyncio.sleep(0.01)
        # Probe for most of the task's run, not past its end.
        probed = await probe_while(system.base_url, asyncio.sleep(seconds * 0.9), interval=sizes.probe_interval)
        while (final := (await http.get(status_url)).json())["state"] not in ("succeeded", "failed", "cancelled"):
            if time.monotonic() > deadline:
                raise ValueError("the progress task never ended")
            await asyncio.sleep(0.05)
    if final["state"] != "succeeded":
        raise ValueError(f"the progress task {final['state']}: {final.get('error')}")
    return probed, final["result"]


# -- in the report ----------------------------------------------------------------------------


def stats(results: dict[str, Any], key: str) -> dict[str, float | None]:
    runs = good_runs(results, NUMBER, key)
    out: dict[str, float | None] = {}
    for name in ("plain", "idempotent", "health_silent", "health_reporting"):
        out[f"{name}_p50"] = median([r[name].get("p50_ms") for r in runs])
        out[f"{name}_p99"] = median([r[name].get("p99_ms") for r in runs])
    out["key_cost_p50"] = median([r["idempotent"]["p50_ms"] - r["plain"]["p50_ms"] for r in runs])
    out["progress_p99_ratio"] = median(
        [r["health_reporting"]["p99_ms"] / r["health_silent"]["p99_ms"] for r in runs if r["health_silent"]["p99_ms"]]
    )
    out["calls_per_second"] = median([r["health_reporting"]["calls_per_second"] for r in runs])
    return out


def add_rows(table: Table, results: dict[str, Any], sizes: Any) -> None:
    stock = "— (stock has no such feature)"
    for key, runner in RUNNERS.items():
        reason = why_not(results, key, NUMBER)
        t = stats(results, key) if reason is None else None

        pair = functools.partial(p50_p99, t, reason=reason)

        cost = "—" if t is None or t["key_cost_p50"] is None else f"{t['key_cost_p50']:+.3f} ms"
        rate = "" if t is None or t["calls_per_second"] is None else f" ({t['calls_per_second']:,.0f} calls/s reached)"
        p99_ratio = "—"
        if t is not None and t["progress_p99_ratio"] is not None:
            p99_ratio = f"{t['progress_p99_ratio']:.2f}{TIMES} p99 (target < 1.10{TIMES})"
        calls = f"{PROGRESS_CALLS_PER_SECOND:,} times a second"
        table.add(f"7. scheduling without a key: p50 / p99 ({runner})", stock, pair("plain"), "—")
        table.add(f"7. scheduling with a fresh Idempotency-Key: p50 / p99 ({runner})", stock, pair("idempotent"), "—")
        table.add(f"7. **cost of an Idempotency-Key at p50** (target < +0.2 ms) ({runner})", stock, cost, "—")
        table.add(
            f"7. GET /health p50 / p99 while a task paces without reporting ({runner})",
            stock,
            pair("health_silent"),
            "—",
        )
        table.add(
            f"7. GET /health p50 / p99 while a task reports progress {calls} ({runner})",
            stock,
            pair("health_reporting") + rate,
            p99_ratio,
        )
