"""Metric 2: how fast the API answers while CPU-heavy tasks run.

CSV documents are uploaded and analysed in the background while `GET /health` is probed on a
connection of its own, from a process of its own (load_client.probe_while), until every analysis
is final; the same probe, idle, is the reference.
"""

import asyncio
import time
from typing import Any

import httpx
from load_client import Batch, closed_loop, probe_while, summary, wait_for_count
from report_cells import RUNNERS, STOCK, TIMES, Table, good_runs, median, ms, not_measured, ratio, runner_name, seconds
from report_cells import unavailable_reason as why_not
from run_results import Results
from server_rounds import settle
from systems import System

NUMBER = 2
NAME = "api_latency_under_cpu_load"
TITLE = "health under CPU-heavy tasks"
KEY = "m2"  # its results.json key; the probes' latencies are samples "m2" and "m2_idle"


async def measure(system: System, run: int, sizes: Any, results: Results) -> None:
    s = sizes
    idle = await probe_while(system.base_url, asyncio.sleep(s.idle_probe_seconds), interval=s.probe_interval)
    counter = system.finished_counter("document")
    before = await asyncio.to_thread(counter)
    body = csv_document(s.document_bytes)
    outcome: dict[str, Any] = {}

    async def upload(http: httpx.AsyncClient, index: int) -> httpx.Response:
        name = f"bench-{run}-{index}.csv"
        return await http.post("/documents/upload", files={"file": (name, body, "text/csv")})

    async def work() -> None:
        started = time.perf_counter()
        batch = await closed_loop(
            system.base_url, upload, count=s.documents, concurrency=s.upload_concurrency, deadline=s.timeout
        )
        outcome["batch"] = batch
        outcome["uploaded"] = time.perf_counter() - started
        done = await wait_for_count(counter, before + batch.accepted, timeout=s.timeout)
        outcome["seconds"] = None if done is None else done - started

    failed_before = await asyncio.to_thread(system.failed_count)
    probed = await probe_while(system.base_url, work(), interval=s.probe_interval)
    batch: Batch = outcome["batch"]
    if outcome["seconds"] is None:
        raise ValueError(f"not every accepted document was analysed within {s.timeout:.0f}s")
    if batch.accepted == 0:
        raise ValueError(f"no upload was accepted: {batch.statuses}, {batch.errors} errors")
    results.samples["m2"].setdefault(system.key, []).extend(probed.latencies)
    results.samples["m2_idle"].setdefault(system.key, []).extend(idle.latencies)
    results.data[KEY].setdefault(system.key, []).append(
        {
            "health": summary(probed.latencies),
            "health_errors": probed.errors,
            "idle": summary(idle.latencies),
            "documents_accepted": batch.accepted,
            "documents_rejected": batch.rejected,
            "upload_seconds": outcome["uploaded"],
            "work_seconds": outcome["seconds"],
            "tasks_failed": await asyncio.to_thread(system.failed_count, failed_before),
        }
    )
    await settle(system)
    await asyncio.to_thread(system.clear_uploads)


def csv_document(size: int) -> bytes:
    """A deterministic CSV document of about `size` bytes: a header, numeric and text columns."""
    rows = ["id,product,price,quantity,rating,weight,discount,note"]
    total = len(rows[0]) + 1
    state = 12345
    index = 0
    while total < size:
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        index += 1
        row = (
            f"{index},item-{state % 9973},{state % 100000 / 100:.2f},{state % 50},"
            f"{1 + state % 5},{(state >> 7) % 10000 / 1000:.3f},{-(state % 30)},"
            f"{'great value' if state % 3 else 'arrived late'}"
        )
        rows.append(row)
        total += len(row) + 1
    return ("\n".join(rows) + "\n").encode()


# -- in the report ----------------------------------------------------------------------------


def stats(results: dict[str, Any], key: str) -> dict[str, float | None]:
    runs = good_runs(results, NUMBER, key)
    return {
        "load_p50": median([r["health"].get("p50_ms") for r in runs]),
        "load_p99": median([r["health"].get("p99_ms") for r in runs]),
        "load_max": median([r["health"].get("max_ms") for r in runs]),
        "idle_p50": median([r["idle"].get("p50_ms") for r in runs]),
        "idle_p99": median([r["idle"].get("p99_ms") for r in runs]),
        "work": median([r.get("work_seconds") for r in runs]),
        "probes": median([r["health"].get("n") for r in runs]),
        "failed": max([r.get("tasks_failed") or 0 for r in runs], default=0),
    }


def add_rows(table: Table, results: dict[str, Any], sizes: Any) -> None:
    stock_reason = why_not(results, STOCK, NUMBER)
    stock = stats(results, STOCK) if stock_reason is None else None
    n = sizes.documents
    for key, runner in RUNNERS.items():
        reason = why_not(results, key, NUMBER)
        template = stats(results, key) if reason is None else None

        def cell(stats: dict[str, float | None] | None, why: str | None, name: str) -> str:
            if stats is None:
                return not_measured(why or "")
            return f"{ms(stats[name + '_p50'])} / {ms(stats[name + '_p99'])} ms"

        def both(name: str, template: dict[str, float | None] | None = template) -> str:
            if not (stock and template):
                return "—"
            p50 = ratio(template[name + "_p50"], stock[name + "_p50"])
            return f"{p50} / {ratio(template[name + '_p99'], stock[name + '_p99'])}"

        table.add(
            f"2. **GET /health p50 / p99 while {n} document analyses run** ({runner})",
            cell(stock, stock_reason, "load"),
            cell(template, reason, "load"),
            both("load"),
        )
        table.add(
            f"2. GET /health p50 / p99, idle, same probe ({runner_name(key)})",
            cell(stock, stock_reason, "idle"),
            cell(template, reason, "idle"),
            both("idle"),
        )
        table.add(
            f"2. time from first upload until all {n} analyses are final ({runner_name(key)})",
            seconds(stock["work"]) if stock else not_measured(stock_reason or ""),
            (seconds(template["work"]) + (f", {template['failed']:.0f} tasks failed" if template["failed"] else ""))
            if template
            else not_measured(reason or ""),
            ratio(template["work"], stock["work"]) if (stock and template) else "—",
        )


def headline(results: dict[str, Any], sizes: Any) -> list[str]:
    lines: list[str] = []
    if why_not(results, STOCK, NUMBER) is not None:
        return lines
    stock = stats(results, STOCK)
    for key in ("rust", "python"):
        if why_not(results, key, NUMBER) is None:
            template = stats(results, key)
            if template["load_p99"] and stock["load_p99"]:
                lines.append(
                    f"- `GET /health` p99 while {sizes.documents} document analyses run: "
                    f"{ms(template['load_p99'])} ms with the {RUNNERS[key]} vs {ms(stock['load_p99'])} ms with "
                    f"stock `BackgroundTasks` ({stock['load_p99'] / template['load_p99']:.1f}{TIMES} lower)."
                )
    return lines
