"""The environment the measured servers start with, shared by run.py's systems and the scripts
that start servers of their own (postgres_throughput.py). Standard library only: those scripts
also run under a rendered project's interpreter."""

import os

# What would change the apps' settings. Callers too: the rendered servers run with the default
# AUTH_MODE (none), as `uv run` does; and with the default telemetry: metrics on, tracing off
# (no OTEL_* variable, so the OpenTelemetry SDK is never imported). A metric that wants another
# setting says so in the system's own env (systems.py `System.variant`).
_SETTINGS_PREFIXES = (
    "TASK_", "LOG_LEVEL", "UPLOAD_DIR", "OUTBOX_DIR", "ACTIVITY_LOG_PATH", "MAX_UPLOAD_BYTES",
    "AUTH_", "API_KEYS", "JWT_", "METRICS_ENABLED", "WORKER_METRICS_PORT", "OTEL_",
)  # fmt: skip


def clean_environment() -> dict[str, str]:
    """Ours, minus what would change the apps' settings, outside any virtual environment."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(_SETTINGS_PREFIXES)}
    environment.pop("VIRTUAL_ENV", None)
    return environment
