"""What every metric's rows of BENCHMARKS.md are made of: the table, number formats, ratios, and
the reason a cell has no number."""

import math
import statistics
from collections.abc import Callable
from typing import Any

RUNNERS = {"python": "Python runner", "rust": "Rust runner, native analysis"}
STOCK = "stock"
TIMES = "\u00d7"  # the multiplication sign


def runner_name(key: str) -> str:
    """The runner's name ("Python runner", "Rust runner") without the detail some rows add."""
    return RUNNERS[key].split(",")[0]


def median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(kept) if kept else None


def ms(value: float | None) -> str:
    if value is None:
        return "?"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def seconds(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:.1f} s" if value >= 10 else f"{value:.2f} s"


def ratio(template: float | None, stock: float | None) -> str:
    if template is None or stock is None or stock <= 0 or template < 0:
        return "—"
    value = template / stock
    return f"{value:.2f}{TIMES}" if value < 10 else f"{value:.0f}{TIMES}"


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, metric: str, stock: str, template: str, ratio_text: str) -> None:
        self.rows.append((metric, stock, template, ratio_text))

    def markdown(self) -> str:
        lines = [
            "| metric | stock baseline | this template | ratio (template ÷ stock) |",
            "| --- | ---: | ---: | ---: |",
        ]
        lines += [f"| {m} | {s} | {t} | {r} |" for m, s, t, r in self.rows]
        return "\n".join(lines)


def not_measured(reason: str) -> str:
    """The cell of a row without a number: "failed: ..." (something broke) or "not measured: ..."."""
    if reason.startswith(("failed:", "not measured:")):
        return cell_text(reason)
    return f"not measured: {cell_text(reason)}"


def p50_p99(stats: dict[str, float | None] | None, name: str, reason: str | None = None) -> str:
    """`name`'s p50 / p99 cell in ms, or why it was not measured (`stats` None)."""
    if stats is None:
        return not_measured(reason or "")
    return f"{ms(stats[name + '_p50'])} / {ms(stats[name + '_p99'])} ms"


def cell_text(text: str, limit: int = 140) -> str:
    """One line, no table-breaking pipes, short (the full reasons are listed under the table)."""
    flat = " ".join(text.split()).replace("|", "/")
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def unavailable_reason(results: dict[str, Any], key: str, metric: int) -> str | None:
    """Why system `key` has no number for `metric` (a metric measured on the servers), or None."""
    skipped = results.get("skipped", {}).get(str(metric))
    if skipped:
        return skipped
    reason = results.get("unavailable", {}).get(key)
    if reason:
        return reason
    runs = results.get(f"m{metric}", {}).get(key)
    if not runs:
        return "no run completed"
    if all("error" in run for run in runs):
        return f"failed: {runs[0]['error']}"
    return None


def good_runs(results: dict[str, Any], metric: int, key: str) -> list[dict[str, Any]]:
    return [run for run in results.get(f"m{metric}", {}).get(key, []) if "error" not in run]


def per_runner(results: dict[str, Any], metric: int, describe: Callable[[str], str]) -> list[str]:
    """`describe(runner)` with the runner's short name, for each in-process runner that measured `metric`."""
    return [
        f"{describe(key)} ({runner_name(key)})"
        for key in ("python", "rust")
        if unavailable_reason(results, key, metric) is None
    ]
