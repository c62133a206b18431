"""Prometheus: the sink the API and the Celery workers install, and the text a scrape reads.

A scrape must give the same totals whichever process answers it. uvicorn `--workers N` runs N
processes (and Celery's prefork pool a process per slot), each counting what it does itself:
under `python -m <package>.serve` (the image's command) and in a Celery worker, each process
writes its samples to files in PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode,
chosen when prometheus_client is first imported) and a scrape sums the files of every process,
the dead ones' included, so no total goes backwards when a worker is replaced.

What no process keeps, the number of tasks in each state now, is read from the shared task
store at each scrape (`tasks_in_store`): the same from every process and every host.
"""

import logging
import os
import threading
from collections.abc import Iterator
from functools import cache

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from ..tasks.models import TaskState
from ..tasks.store import TaskStore
from . import metrics
from .metrics import METRICS

logger = logging.getLogger(__name__)

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

_Child = Counter | Histogram


class PrometheusSink:
    """Counters and histograms of prometheus-client, one labelled child per label set.

    One per process (`prometheus_sink()`): in multiprocess mode two objects of one name in one
    process would write over each other's samples.
    """

    name = "prometheus"

    def __init__(self) -> None:
        # Not the library's global registry: what it collects is the scrape's choice (below).
        self.registry = CollectorRegistry(auto_describe=True)
        self._families: dict[metrics.Metric, _Child] = {
            metric: _family(metric, self.registry) for metric in METRICS
        }
        self._children: dict[tuple[metrics.Metric, tuple[str, ...]], _Child] = {}
        self._lock = threading.Lock()

    def count(self, metric: metrics.Metric, labels: tuple[str, ...]) -> None:
        self._child(metric, labels).inc()  # type: ignore[union-attr]

    def observe(self, metric: metrics.Metric, labels: tuple[str, ...], value: float) -> None:
        self._child(metric, labels).observe(value)  # type: ignore[union-attr]

    def _child(self, metric: metrics.Metric, labels: tuple[str, ...]) -> _Child:
        # `labels()` takes the family's lock and builds a key on every call: kept per label set.
        child = self._children.get((metric, labels))
        if child is None:
            with self._lock:
                child = self._families[metric].labels(*labels)
                self._children[(metric, labels)] = child
        return child


def _family(metric: metrics.Metric, registry: CollectorRegistry) -> _Child:
    if metric.kind == "counter":
        return Counter(metric.name, metric.documentation, metric.labels, registry=registry)
    return Histogram(
        metric.name,
        metric.documentation,
        metric.labels,
        buckets=metric.buckets,
        registry=registry,
    )


@cache
def prometheus_sink() -> PrometheusSink:
    """This process's sink, made on first use (after PROMETHEUS_MULTIPROC_DIR is settled)."""
    return PrometheusSink()


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROCESS_DIR))


class StoreGauges(Collector):
    """`tasks_in_store{state}`: records in each state, read from the store at each scrape.

    A store that does not answer leaves the family out of that scrape (its failure is counted in
    `task_store_errors_total`): an absent series, not a wrong zero.
    """

    def __init__(self, store: TaskStore) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        try:
            counts = self._store.count_states()
        except Exception as error:
            logger.warning("task store did not answer the scrape's count", exc_info=error)
            return
        family = GaugeMetricFamily(
            "tasks_in_store",
            "Task records the store holds in each state now (final ones until their retention).",
            labels=["state"],
        )
        for state in TaskState:
            family.add_metric([state.value], counts.get(state, 0))
        yield family


def exposition(store: TaskStore | None) -> bytes:
    """The text of one scrape: every process's counters and histograms, and the store's gauges."""
    if multiprocess():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = prometheus_sink().registry
    text = generate_latest(registry)
    if store is not None:
        gauges = CollectorRegistry()
        gauges.register(StoreGauges(store))
        text += generate_latest(gauges)
    return text
