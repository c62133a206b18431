"""Traces: a request and the attempts of the tasks it scheduled share one W3C trace.

Every request has a trace context: the caller's (`traceparent` header) when it sends a valid one,
else a new one. `add_task` stores it on the task record (`TaskRecord.traceparent`), so it travels
wherever the record goes (SQLite, PostgreSQL, Redis for the Celery workers, DynamoDB for the SQS
consumer), and each attempt of the task runs as a child of the request's span. Log lines carry
`trace_id` and `span_id` (logs.py), a task's lines the trace id of the request that scheduled it.

Exporting spans is off unless it is configured, the OpenTelemetry way: OTEL_TRACES_EXPORTER
(`otlp`, or `console` to print them) or an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), with OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES and the
exporter's own OTEL_EXPORTER_OTLP_* variables read by the SDK itself. Off, the OpenTelemetry
SDK is never imported: the ids are made and carried here, at the cost of a random number per
request and attempt; OTEL_SDK_DISABLED=true turns exporting off whatever else is set.
"""

import os
import random
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

# version 00, 32 hex digits of trace id, 16 of parent span id, 2 of flags (lower-case only).
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_INVALID_TRACE = "0" * 32
_INVALID_SPAN = "0" * 16
# Flags of a context made here while exporting is off: not sampled (no span was recorded).
_NOT_SAMPLED = "00"
TRACEPARENT_HEADER = b"traceparent"


@dataclass(frozen=True)
class TraceIds:
    """The trace a piece of work belongs to and its own span in it."""

    trace_id: str
    span_id: str
    flags: str = _NOT_SAMPLED

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def parse_traceparent(value: str | None) -> TraceIds | None:
    """The ids of a W3C `traceparent`, or None for a missing or malformed one (ignored, as the
    W3C recommendation says: the request starts a trace of its own)."""
    if not value:
        return None
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    trace_id, span_id, flags = match.groups()
    if trace_id == _INVALID_TRACE or span_id == _INVALID_SPAN:
        return None
    return TraceIds(trace_id, span_id, flags)


def _new_span_id() -> str:
    return f"{random.getrandbits(64) or 1:016x}"


def _new_trace_id() -> str:
    return f"{random.getrandbits(128) or 1:032x}"


# The work this context does while no OpenTelemetry span is active (exporting off).
_current: ContextVar[TraceIds | None] = ContextVar("trace_ids", default=None)
_tracer: "Tracer | None" = None


def exporting() -> bool:
    return _tracer is not None


def exporting_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the OTEL_* variables ask for spans to be exported."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure_tracing(default_service_name: str) -> bool:
    """Export spans if the environment asks for it (see the module docstring); True if so.

    Once per process (the app factory, a worker's start): a second call keeps the first setup.
    """
    if _tracer is not None or not exporting_configured():
        return _tracer is not None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, read by the SDK; the project's name where
    # they name no service (the SDK would say "unknown_service").
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": default_service_name}))
    provider = TracerProvider(resource=resource)
    exporter: SpanExporter
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    from opentelemetry import trace

    # Also the global provider: spans of libraries instrumented with OpenTelemetry join ours.
    trace.set_tracer_provider(provider)
    use_tracer_provider(provider)
    return True


def use_tracer_provider(provider: "TracerProvider | None") -> None:
    """Record spans with `provider` from now on (None: stop). Tests pass one whose exporter
    keeps the spans in memory."""
    global _tracer
    _tracer = provider.get_tracer(__name__) if provider is not None else None


def current_ids() -> TraceIds | None:
    """The trace and span of the work running here, if any: the active OpenTelemetry span's
    while exporting, else the context this module made."""
    if _tracer is not None:
        from opentelemetry import trace

        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            return TraceIds(
                format(context.trace_id, "032x"),
                format(context.span_id, "016x"),
                format(int(context.trace_flags), "02x"),
            )
    return _current.get()


def current_traceparent() -> str | None:
    """What a task scheduled here stores: the context of the span that scheduled it."""
    ids = current_ids()
    return ids.traceparent if ids is not None else None


@contextmanager
def joined(traceparent: str | None) -> Iterator[None]:
    """Inside, the work belongs to the trace `traceparent` names (logs say so); no span."""
    token = _current.set(parse_traceparent(traceparent))
    try:
        yield
    finally:
        _current.reset(token)


@contextmanager
def request_span(
    method: str, path: str, headers: list[tuple[bytes, bytes]]
) -> Iterator["RequestSpan"]:
    """The span of one HTTP request: a child of the caller's `traceparent`, if valid."""
    incoming = None
    for name, value in headers:
        if name == TRACEPARENT_HEADER:
            incoming = value.decode("latin-1")
            break
    if _tracer is None:
        parent = parse_traceparent(incoming)
        if parent is None:
            ids = TraceIds(_new_trace_id(), _new_span_id())
        else:
            ids = TraceIds(parent.trace_id, _new_span_id(), parent.flags)
        # Not reset when the request ends: the background work after the response (the hand-
        # over of its tasks) is still the request's (middleware.py sets its request id alike).
        _current.set(ids)
        yield RequestSpan(None)
        return
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {"traceparent": incoming} if incoming is not None else {}
    parent_context = TraceContextTextMapPropagator().extract(carrier)
    # Named for its route once that is known (`RequestSpan.answered`), never for a raw path.
    with _tracer.start_as_current_span(
        method,
        context=parent_context,
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "url.path": path},
    ) as span:
        yield RequestSpan(span)


class RequestSpan:
    """What the request middleware tells its span once the answer is known."""

    def __init__(self, span: Any) -> None:
        self._span = span

    def answered(self, method: str, route: str, status: int) -> None:
        if self._span is None:
            return
        self._span.update_name(f"{method} {route}")
        self._span.set_attribute("http.route", route)
        self._span.set_attribute("http.response.status_code", status)
        if status >= 500:
            from opentelemetry.trace import Status, StatusCode

            self._span.set_status(Status(StatusCode.ERROR))


@contextmanager
def attempt_span(
    task_name: str, task_id: str, attempt: int, traceparent: str | None
) -> Iterator[None]:
    """The span of one attempt of a task: a child of the span of the request that scheduled it.
    An exception that leaves it is recorded on the span, which ends as an error."""
    parent = parse_traceparent(traceparent)
    if _tracer is None:
        ids = TraceIds(parent.trace_id, _new_span_id(), parent.flags) if parent else None
        token = _current.set(ids)
        try:
            yield
        finally:
            _current.reset(token)
        return
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {"traceparent": traceparent} if traceparent else {}
    with _tracer.start_as_current_span(
        f"task {task_name}",
        context=TraceContextTextMapPropagator().extract(carrier),
        kind=SpanKind.CONSUMER,
        attributes={"task.name": task_name, "task.id": task_id, "task.attempt": attempt},
    ):
        yield
