"""The eight metrics, in the order of the report. Each is one module:

| # | module | measures |
| --- | --- | --- |
| 1 | scheduling_latency | latency of an endpoint with and without one scheduled task |
| 2 | api_latency_under_cpu_load | `GET /health` latency while CPU-heavy tasks run |
| 3 | task_throughput | a batch of tasks over HTTP until all are final (Celery's and PostgreSQL's: scripts) |
| 4 | lambda_latency | the Lambda handler's cold start and its response with a 1 s task |
| 5 | template_time | `copier copy` per variant, the whole template test run |
| 6 | image_sizes | image sizes (the app's share), `docker run` until /health answers |
| 7 | task_control_costs | an Idempotency-Key's cost; `GET /health` while a task reports progress |
| 8 | observability_cost | scheduling with metrics on and tracing off (the default) vs METRICS_ENABLED=false |

Each module has NUMBER (its number in the report, in `--only` and in results.json's "skipped"),
NAME (also accepted by `--only`) and add_rows(table, results, sizes) (its rows of BENCHMARKS.md);
1-4 also have headline(results, sizes) (their line of the headline). Those measured against the
running servers (1-3, 7, 8) have TITLE, KEY (their results.json key) and measure(system, run, sizes,
results); deployment.py measures 4 and 6 together.
"""

from types import ModuleType

import api_latency_under_cpu_load
import image_sizes
import lambda_latency
import observability_cost
import scheduling_latency
import task_control_costs
import task_throughput
import template_time

METRICS: list[ModuleType] = [
    scheduling_latency,
    api_latency_under_cpu_load,
    task_throughput,
    lambda_latency,
    template_time,
    image_sizes,
    task_control_costs,
    observability_cost,
]
ON_SERVERS = [
    scheduling_latency,
    api_latency_under_cpu_load,
    task_throughput,
    task_control_costs,
    observability_cost,
]
DEPLOYMENT = {lambda_latency.NUMBER, image_sizes.NUMBER}  # both come from deployment.py
NAMES = {metric.NAME: metric.NUMBER for metric in METRICS}


def parse_only(text: str) -> set[int]:
    """`--only`: comma-separated metric numbers or names."""
    numbers = set()
    for part in (part.strip() for part in text.split(",")):
        if not part:
            continue
        if part in NAMES:
            numbers.add(NAMES[part])
        elif part.isdigit():
            numbers.add(int(part))
        else:
            raise ValueError(
                f"--only: {part!r} is neither a metric number (1-{len(METRICS)}) nor one of {', '.join(NAMES)}"
            )
    return numbers
