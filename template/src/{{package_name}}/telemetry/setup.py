"""Which metrics sink a process installs: decided once, where the process starts."""

from . import metrics


def start_metrics(enabled: bool) -> str:
    """Install this process's sink and return its name: "none" when METRICS_ENABLED=false; the
    one installed already if it is not the default (a Lambda function's EMF sink, installed
    before its app is made); else "prometheus", whose library is imported only then."""
    if not enabled:
        metrics.install(metrics.NoMetrics())
        return metrics.NoMetrics.name
    if not isinstance(metrics.installed(), metrics.NoMetrics):
        return metrics.installed().name
    from .prometheus import prometheus_sink

    sink = prometheus_sink()
    metrics.install(sink)
    return sink.name
