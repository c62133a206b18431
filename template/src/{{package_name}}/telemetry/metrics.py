"""What the service counts and times, and where it goes: one list of metrics, one sink per process.

    metrics.count(TASK_TRANSITIONS, record.name, record.state.value)
    metrics.observe(ATTEMPT_DURATION, seconds, record.name, "succeeded")

Code that knows something happened says so here, never to a metrics library: the sink the
process installed at startup decides what becomes of it. The API and a Celery worker install
Prometheus's (`telemetry/prometheus.py`, scraped at `GET /metrics`), a Lambda function the
CloudWatch Embedded Metric Format's (`telemetry/emf.py`), and METRICS_ENABLED=false nothing at
all: until a sink is installed, every call is a no-op, so tests and scripts that build no app
pay nothing for it.

Labels are bounded by construction: task names are the registered ones, routes the app's route
templates (never a raw path a client could make up), states and reasons fixed sets.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

# Seconds: from a cached read to a long task (Prometheus's defaults stop at 10 s).
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# Store operations and requests: sub-millisecond to a stalled dependency.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


@dataclass(frozen=True)
class Metric:
    """One metric as every sink sees it: a counter or a histogram of seconds."""

    name: str
    documentation: str
    labels: tuple[str, ...]
    kind: Literal["counter", "histogram"]
    buckets: tuple[float, ...] = ()


TASK_TRANSITIONS = Metric(
    "task_transitions_total",
    "Task state transitions written, by task and the state entered (queued: accepted).",
    ("task", "state"),
    "counter",
)
ATTEMPT_DURATION = Metric(
    "task_attempt_duration_seconds",
    "How long task attempts ran, by task and how the attempt ended.",
    ("task", "outcome"),
    "histogram",
    DURATION_BUCKETS,
)
QUEUE_WAIT = Metric(
    "task_queue_wait_seconds",
    "From when an attempt was due (accepted, or its retry's backoff over) to its start.",
    ("task",),
    "histogram",
    DURATION_BUCKETS,
)
STORE_OPERATION = Metric(
    "task_store_operation_seconds",
    "Task store calls, by operation (failed calls included).",
    ("operation",),
    "histogram",
    LATENCY_BUCKETS,
)
STORE_ERRORS = Metric(
    "task_store_errors_total",
    "Task store calls that raised, by operation.",
    ("operation",),
    "counter",
)
REFUSALS = Metric(
    "task_refusals_total",
    "Tasks refused with 503 and Retry-After, by reason.",
    ("reason",),
    "counter",
)
HTTP_REQUESTS = Metric(
    "http_requests_total",
    "HTTP requests answered, by method, route template and status.",
    ("method", "route", "status"),
    "counter",
)
HTTP_DURATION = Metric(
    "http_request_duration_seconds",
    "HTTP request latency to the last byte of the answer, by method and route template.",
    ("method", "route"),
    "histogram",
    LATENCY_BUCKETS,
)

METRICS: Sequence[Metric] = (
    TASK_TRANSITIONS,
    ATTEMPT_DURATION,
    QUEUE_WAIT,
    STORE_OPERATION,
    STORE_ERRORS,
    REFUSALS,
    HTTP_REQUESTS,
    HTTP_DURATION,
)


class MetricsSink(Protocol):
    """Where a process's measurements go. Called from any thread: it must be thread-safe."""

    # Which sink it is ("prometheus", "emf", "none"): what the app serves depends on it.
    name: str

    def count(self, metric: Metric, labels: tuple[str, ...]) -> None: ...

    def observe(self, metric: Metric, labels: tuple[str, ...], value: float) -> None: ...


class NoMetrics:
    """The sink of a process that installed none (METRICS_ENABLED=false, a script)."""

    name = "none"

    def count(self, metric: Metric, labels: tuple[str, ...]) -> None:
        return None

    def observe(self, metric: Metric, labels: tuple[str, ...], value: float) -> None:
        return None


_sink: MetricsSink = NoMetrics()


def install(sink: MetricsSink) -> None:
    """Send this process's measurements to `sink` from now on."""
    global _sink
    _sink = sink


def installed() -> MetricsSink:
    return _sink


def count(metric: Metric, *labels: str) -> None:
    _sink.count(metric, labels)


def observe(metric: Metric, value: float, *labels: str) -> None:
    _sink.observe(metric, labels, value)
