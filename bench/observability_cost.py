"""Metric 8: what observability costs a request (the template alone: stock has none).

The no-op scheduling endpoint (metric 1's `system.endpoints.noop`) on the system as started,
which is the default configuration: Prometheus metrics on (every request, task transition and
store call counted), tracing off (a trace id made and carried per request, no OTEL_* variable,
so the OpenTelemetry SDK is never imported); against a second server of the same render started
with METRICS_ENABLED=false (no sink: every count is a no-op). Sequential requests, each server on
a connection of its own, in alternating blocks of BLOCK (the first mode alternating by run); the
ratio of the p50s is what metrics and tracing-off cost together (target < 1.05).

Why both servers are up at once and the blocks alternate, rather than alternating whole rounds
(one server stopped, the other started): on a 2-core machine shared with other work the load
changes over seconds, and a round of a few thousand requests lasts seconds, so a slow spell
would land on one mode and not the other. Blocks of BLOCK requests (a fraction of a second each)
put both modes in every such spell. Having both up costs nothing that falls on one mode only:
one request is in flight at a time, so at any moment the client and one server work while the
other server idles (its only clock is the periodic tick, every 15 s), and each block's tasks,
run by its server's runner just after their 202s, overlap the start of the other mode's block
alike both ways. The METRICS_ENABLED=false server is started from an empty working directory
for each run and stopped at its end (`System.variant(...).running()`); the metrics-on server has
served the earlier runs too (metrics 1-3 and 7 share it the same way), so its task store holds
more records, which costs an SQLite insert nothing measurable at these sizes.
"""

import functools
import time
from typing import Any

from load_client import client, summary
from report_cells import TIMES, Table, good_runs, median, not_measured, p50_p99, runner_name
from report_cells import unavailable_reason as why_not
from run_results import Results
from server_rounds import settle
from systems import SetupError, System

NUMBER = 8
NAME = "observability_cost"
TITLE = "metrics on vs METRICS_ENABLED=false"
KEY = "m8"
# Requests to one server in a row.
BLOCK = 50
TARGET = 1.05  # the issue's: metrics and tracing-off change scheduling p50 by less than 5%
MODES = ("on", "off")
# What GET /metrics must answer on each server: proof that the two differ as meant.
METRICS_STATUS = {"on": 200, "off": 404}


async def measure(system: System, run: int, sizes: Any, results: Results) -> None:
    if system.kind == "stock":
        return  # stock FastAPI counts nothing and carries no trace ids: nothing to compare
    off = system.variant("metrics-off", METRICS_ENABLED="false")
    try:
        with off.running():
            per_run = await compare(system, off, run, sizes)
    except SetupError as error:  # the run fails, not the whole metric (server_rounds catches these)
        raise ValueError(f"the METRICS_ENABLED=false server: {error}") from error
    results.data[KEY].setdefault(system.key, []).append(per_run)


async def compare(on: System, off: System, run: int, sizes: Any) -> dict[str, Any]:
    servers = {"on": on, "off": off}
    order = MODES if run % 2 == 0 else MODES[::-1]
    statuses = {}
    for mode, server in servers.items():
        async with client(server.base_url, 1) as http:
            statuses[mode] = (await http.get("/metrics")).status_code
    if statuses != METRICS_STATUS:
        raise ValueError(f"GET /metrics answered {statuses}, not {METRICS_STATUS}: the servers are not as meant")
    await alternate(servers, order, sizes.warmup, sizes)
    for server in servers.values():
        await settle(server)
    latencies = await alternate(servers, order, sizes.requests, sizes)
    for server in servers.values():
        await settle(server)
    return {"first": order[0], **{mode: summary(latencies[mode]) for mode in MODES}}


async def alternate(
    servers: dict[str, System], order: tuple[str, ...], per_mode: int, sizes: Any
) -> dict[str, list[float]]:
    """`per_mode` sequential POSTs of the no-op scheduling endpoint to each server, in blocks that
    alternate between them (`order[0]` first): BLOCK long, or shorter when `per_mode` is too small
    for two blocks each (a smoke run), each server on one connection of its own; latencies per mode."""
    block = max(1, min(BLOCK, per_mode // 2))
    latencies: dict[str, list[float]] = {mode: [] for mode in order}
    stop_at = time.monotonic() + sizes.timeout
    async with client(servers["on"].base_url, 1) as on_http, client(servers["off"].base_url, 1) as off_http:
        http = {"on": on_http, "off": off_http}
        while any(len(latencies[mode]) < per_mode for mode in order):
            for mode in order:
                for _ in range(min(block, per_mode - len(latencies[mode]))):
                    if time.monotonic() > stop_at:
                        done = sum(map(len, latencies.values()))
                        raise ValueError(f"scheduling: {done} of {2 * per_mode} requests within {sizes.timeout:.0f}s")
                    started = time.perf_counter()
                    response = await http[mode].post(servers[mode].endpoints.noop)
                    elapsed = time.perf_counter() - started
                    if response.status_code != 202:
                        raise ValueError(
                            f"scheduling (metrics {mode}) answered {response.status_code}: {response.text[:200]}"
                        )
                    latencies[mode].append(elapsed)
    return latencies


# -- in the report ----------------------------------------------------------------------------


def stats(results: dict[str, Any], key: str) -> dict[str, float | None]:
    runs = [r for r in good_runs(results, NUMBER, key) if r["on"].get("n") and r["off"].get("n")]
    out: dict[str, float | None] = {}
    for mode in MODES:
        out[f"{mode}_p50"] = median([r[mode]["p50_ms"] for r in runs])
        out[f"{mode}_p99"] = median([r[mode]["p99_ms"] for r in runs])
    # The median of the runs' own ratios: each run's two modes shared the same spells of the machine.
    for q in ("p50", "p99"):
        out[f"ratio_{q}"] = median([r["on"][f"{q}_ms"] / r["off"][f"{q}_ms"] for r in runs if r["off"][f"{q}_ms"] > 0])
    return out


def add_rows(table: Table, results: dict[str, Any], sizes: Any) -> None:
    stock = "— (stock has no metrics or traces)"
    for key in ("python", "rust"):
        runner = runner_name(key)
        reason = why_not(results, key, NUMBER)
        t = stats(results, key) if reason is None else None

        pair = functools.partial(p50_p99, t, reason=reason)

        if t is None:
            verdict = not_measured(reason or "")
        elif t["ratio_p50"] is None:
            verdict = "—"
        else:
            met = "met" if t["ratio_p50"] < TARGET else "not met"
            p99 = "" if t["ratio_p99"] is None else f"; p99 {t['ratio_p99']:.3f}{TIMES}"
            verdict = f"{t['ratio_p50']:.3f}{TIMES} ({met}){p99}"
        default = f"8. scheduling, metrics on and tracing off (the default): p50 / p99 ({runner})"
        table.add(default, stock, pair("on"), "—")
        table.add(f"8. scheduling with METRICS_ENABLED=false: p50 / p99 ({runner})", stock, pair("off"), "—")
        table.add(f"8. **metrics on ÷ off at p50** (target < {TARGET:.2f}{TIMES}) ({runner})", stock, verdict, "—")
