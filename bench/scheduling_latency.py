"""Metric 1: the cost of scheduling one task, as the latency a client sees.

The same endpoint with and without one no-op task, sequential requests on one connection; the
difference of the two latencies is what scheduling a task costs.
"""

from typing import Any

import httpx
from load_client import closed_loop, summary
from report_cells import STOCK, Table, good_runs, median, ms, not_measured, per_runner, ratio, runner_name
from report_cells import unavailable_reason as why_not
from run_results import Results
from server_rounds import settle
from systems import System

NUMBER = 1
NAME = "scheduling_latency"
TITLE = "scheduling cost"
KEY = "m1"  # its results.json and samples.json key


async def measure(system: System, run: int, sizes: Any, results: Results) -> None:
    endpoints = [("nothing", system.endpoints.nothing), ("noop", system.endpoints.noop)]
    if run % 2:
        endpoints.reverse()
    per_run = {}
    for name, path in endpoints:

        async def post(http: httpx.AsyncClient, _: int, path: str = path) -> httpx.Response:
            return await http.post(path)

        await closed_loop(system.base_url, post, count=sizes.warmup, concurrency=1, deadline=sizes.timeout)
        await settle(system)
        batch = await closed_loop(system.base_url, post, count=sizes.requests, concurrency=1, deadline=sizes.timeout)
        per_run[name] = {**summary(batch.latencies), "rejected": batch.rejected, "timed_out": batch.timed_out}
        results.samples[KEY].setdefault(system.key, {}).setdefault(name, []).extend(batch.latencies)
        await settle(system)
    results.data[KEY].setdefault(system.key, []).append(per_run)


# -- in the report ----------------------------------------------------------------------------


def stats(results: dict[str, Any], key: str) -> dict[str, float | None]:
    runs = good_runs(results, NUMBER, key)
    out: dict[str, float | None] = {}
    for name in ("noop", "nothing"):
        out[f"{name}_p50"] = median([r[name].get("p50_ms") for r in runs])
        out[f"{name}_p99"] = median([r[name].get("p99_ms") for r in runs])
    out["cost_p50"] = median([r["noop"]["p50_ms"] - r["nothing"]["p50_ms"] for r in runs if r["noop"].get("n")])
    out["cost_p99"] = median([r["noop"]["p99_ms"] - r["nothing"]["p99_ms"] for r in runs if r["noop"].get("n")])
    return out


def pair(stats: dict[str, float | None], name: str) -> str:
    return f"{ms(stats[name + '_p50'])} / {ms(stats[name + '_p99'])} ms"


def pair_ratio(t: dict[str, float | None], s: dict[str, float | None], name: str) -> str:
    return f"{ratio(t[name + '_p50'], s[name + '_p50'])} / {ratio(t[name + '_p99'], s[name + '_p99'])}"


def signed_pair(stats: dict[str, float | None], name: str) -> str:
    def fmt(value: float | None) -> str:
        return "?" if value is None else f"{value:+.2f}"

    return f"{fmt(stats[name + '_p50'])} / {fmt(stats[name + '_p99'])} ms"


def add_rows(table: Table, results: dict[str, Any], sizes: Any) -> None:
    stock_reason = why_not(results, STOCK, NUMBER)
    stock = stats(results, STOCK) if stock_reason is None else None
    for key in ("python", "rust"):
        runner = runner_name(key)
        reason = why_not(results, key, NUMBER)
        template = stats(results, key) if reason is None else None
        rows = [
            (f"1. POST endpoint that schedules one no-op task: latency p50 / p99 ({runner})", "noop", pair),
            (f"1. the same endpoint scheduling nothing: p50 / p99 ({runner})", "nothing", pair),
            (f"1. **cost of scheduling one task** (difference): p50 / p99 ({runner})", "cost", signed_pair),
        ]
        for label, name, fmt in rows:
            stock_cell = fmt(stock, name) if stock else not_measured(stock_reason or "")
            template_cell = fmt(template, name) if template else not_measured(reason or "")
            ratio_cell = pair_ratio(template, stock, name) if (template and stock and name != "cost") else "—"
            if name == "cost" and template and stock:
                ratio_cell = "— (differences)"
            table.add(label, stock_cell, template_cell, ratio_cell)


def headline(results: dict[str, Any], sizes: Any) -> list[str]:
    if why_not(results, STOCK, NUMBER) is not None:
        return []
    stock = stats(results, STOCK)
    parts = per_runner(results, NUMBER, lambda key: f"{stats(results, key)['cost_p50']:+.2f} ms")
    if not parts or stock["cost_p50"] is None:
        return []
    return [
        f"- Scheduling one task (stored durably, logged, a task id returned) adds {', '.join(parts)} to "
        f"the request's p50; stock `BackgroundTasks`, which stores nothing and returns no id, adds "
        f"{stock['cost_p50']:+.2f} ms."
    ]
