"""The performance targets the template holds itself to, each checked against the numbers of the
run: BENCHMARKS.md's "Targets" table (value, baseline, ratio or difference, target, met or not).

A target's numbers come from the metric modules' own `stats` (or the scripts' JSON), so a row here
and the metric's rows in "Results" can never disagree.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import api_latency_under_cpu_load
import scheduling_latency
import task_throughput
from report_cells import STOCK, TIMES, cell_text, ms, runner_name, seconds
from report_cells import unavailable_reason as why_not


@dataclass(frozen=True)
class Target:
    name: str
    value: str
    baseline: str
    comparison: str
    target: str
    # None: not measured in this run (`value` says why).
    met: bool | None

    def row(self) -> str:
        verdict = {True: "met", False: "**not met**", None: "—"}[self.met]
        return f"| {self.name} | {self.value} | {self.baseline} | {self.comparison} | {self.target} | {verdict} |"


def unmeasured(name: str, why: str, target: str) -> Target:
    return Target(name, f"not measured: {cell_text(why, 100)}", "—", "—", target, None)


def at_most(value: float, limit: float) -> bool:
    # Rounded as the table shows it: a value printed as the limit meets it.
    return round(value, 2) <= limit


def scheduling_cost(results: dict[str, Any]) -> list[Target]:
    """Metric 1: what scheduling one task adds to the request, p50 and p99."""
    number = scheduling_latency.NUMBER
    targets = []
    for key in ("python", "rust"):
        name = f"Scheduling one task adds, p50 / p99 ({runner_name(key)})"
        limit = "≤ +0.15 / ≤ +0.5 ms"
        why = why_not(results, key, number) or why_not(results, STOCK, number)
        if why:
            targets.append(unmeasured(name, why, limit))
            continue
        ours, stock = scheduling_latency.stats(results, key), scheduling_latency.stats(results, STOCK)
        p50, p99 = ours["cost_p50"], ours["cost_p99"]
        if p50 is None or p99 is None or stock["cost_p50"] is None or stock["cost_p99"] is None:
            targets.append(unmeasured(name, "no complete run", limit))
            continue
        targets.append(
            Target(
                name,
                f"{p50:+.2f} / {p99:+.2f} ms",
                f"stock {stock['cost_p50']:+.2f} / {stock['cost_p99']:+.2f} ms",
                "— (differences)",
                limit,
                at_most(p50, 0.15) and at_most(p99, 0.5),
            )
        )
    return targets


def against_stock(
    results: dict[str, Any],
    number: int,
    stats: Callable[[dict[str, Any], str], dict[str, float | None]],
    field: str,
    limits: dict[str, tuple[str, Callable[[float, float], bool]]],
    name: Callable[[str], str],
    show: Callable[[float], str],
) -> list[Target]:
    """One target per runner: its `field` of `stats` against stock's in the same run; `limits`
    gives each runner's target text and whether (ours, stock) meets it."""
    targets = []
    for key, (limit, meets) in limits.items():
        why = why_not(results, key, number) or why_not(results, STOCK, number)
        ours = stats(results, key)[field] if why is None else None
        stock = stats(results, STOCK)[field] if why is None else None
        if ours is None or stock is None:
            targets.append(unmeasured(name(key), why or "no complete run", limit))
            continue
        targets.append(
            Target(name(key), show(ours), f"stock {show(stock)}", times(ours, stock), limit, meets(ours, stock))
        )
    return targets


def health_under_load(results: dict[str, Any]) -> list[Target]:
    """Metric 2: /health p99 while 200 document analyses run."""
    return against_stock(
        results,
        api_latency_under_cpu_load.NUMBER,
        api_latency_under_cpu_load.stats,
        "load_p99",
        {
            "rust": ("≤ 10 ms", lambda ours, _: at_most(ours, 10.0)),
            "python": ("≤ 40 ms", lambda ours, _: at_most(ours, 40.0)),
        },
        lambda key: f"`GET /health` p99 while 200 document analyses run ({runner_name(key)})",
        lambda value: f"{ms(value)} ms",
    )


def throughput(results: dict[str, Any], tasks: int) -> list[Target]:
    """Metric 3: a batch of tasks over HTTP until all are final, SQLite store, against stock."""
    within = (f"≤ 1.25{TIMES}", lambda ours, stock: at_most(ours / stock, 1.25))
    return against_stock(
        results,
        task_throughput.NUMBER,
        task_throughput.stats,
        "seconds",
        {"python": within, "rust": within},
        lambda key: f"{tasks:,} tasks over HTTP until all final, durable (SQLite) ÷ stock ({runner_name(key)})",
        seconds,
    )


def celery_scaling(results: dict[str, Any]) -> list[Target]:
    """Celery: the drain rate of two worker processes against one (celery_throughput.py)."""
    name = "Celery: tasks per second with 2 worker processes ÷ 1"
    limit = f"≥ 1.5{TIMES}"
    celery = results.get("celery") or {}
    one, two = celery.get("one_worker_tasks_per_s"), celery.get("two_workers_tasks_per_s")
    if not one or not two:
        why = celery.get("missing") or "bench/celery_throughput.py reported no two-worker rate"
        return [unmeasured(name, why, limit)]
    return [
        Target(
            name,
            f"{two:.0f} tasks/s",
            f"1 worker {one:.0f} tasks/s",
            f"{two / one:.2f}{TIMES}",
            limit,
            round(two / one, 2) >= 1.5,
        )
    ]


def lambda_cold_start(results: dict[str, Any]) -> list[Target]:
    """Metric 4: import of the handler + its first scheduling event, against stock Mangum."""
    name = "Lambda cold start (import + first scheduling event) ÷ stock Mangum"
    limit = f"≤ 1.0{TIMES}"
    numbers = (results.get("deploy") or {}).get("lambda") or {}
    stock, rendered = numbers.get("stock"), numbers.get("rendered")
    if not stock or not rendered:
        why = (results.get("deploy") or {}).get("lambda_missing") or "bench/deployment.py did not run"
        return [unmeasured(name, why, limit)]
    ours = (rendered["import_s"] + rendered["first_event_s"]) * 1000
    theirs = (stock["import_s"] + stock["first_event_s"]) * 1000
    return [
        Target(
            name, f"{ms(ours)} ms", f"stock {ms(theirs)} ms", times(ours, theirs), limit, at_most(ours / theirs, 1.0)
        )
    ]


def image_shares(results: dict[str, Any]) -> list[Target]:
    """Metric 6: each image's size over its runtime base image."""
    images = (results.get("deploy") or {}).get("images") or []
    targets = []
    for kind, label, limit in (("lambda", "Lambda", 50), ("container", "container", 45)):
        for key in ("python", "rust"):
            name = f"{label} image, the app's share over its base ({runner_name(key)})"
            entry = next((e for e in images if e["image"] == kind and f"-{key}-" in e["variant"]), None)
            if entry is None or "size_mb" not in entry or not entry.get("base_size_mb"):
                why = (entry or {}).get("missing") or "bench/deployment.py reported no such image"
                targets.append(unmeasured(name, why, f"≤ {limit} MB"))
                continue
            # One decimal, and compared as measured: 45.1 MB is over a 45 MB limit.
            share = entry["size_mb"] - entry["base_size_mb"]
            targets.append(
                Target(
                    name,
                    f"{share:.1f} MB",
                    f"base {entry['base_size_mb']:.1f} MB",
                    "—",
                    f"≤ {limit} MB",
                    share <= limit,
                )
            )
    return targets


def times(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}{TIMES}" if theirs > 0 else "—"


def all_targets(results: dict[str, Any], sizes: Any) -> list[Target]:
    makers: list[Callable[[], list[Target]]] = [
        lambda: lambda_cold_start(results),
        lambda: throughput(results, sizes.tasks),
        lambda: scheduling_cost(results),
        lambda: health_under_load(results),
        lambda: image_shares(results),
        lambda: celery_scaling(results),
    ]
    return [target for make in makers for target in make()]


def markdown(targets: list[Target]) -> str:
    lines = [
        "| target | this template | baseline | ratio | target | met |",
        "| --- | ---: | ---: | ---: | ---: | :---: |",
    ]
    return "\n".join([*lines, *(target.row() for target in targets)])
