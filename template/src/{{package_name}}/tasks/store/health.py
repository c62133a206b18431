"""Whether the task store takes writes: what `/ready` reports and what store retries log.

Every write the process makes (a state transition, an accepted task, a heartbeat) reports its
outcome here. One failed write makes the store unhealthy until a later write goes through, so
`/ready` answers 503 for as long as writes fail, and 200 again as soon as one succeeds, without
probing the store itself.
"""

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class StoreOutage:
    """The store has failed every write since `since` (time.time()); `error` is the last one."""

    since: float
    error: str
    failures: int


class StoreHealth:
    """Thread-safe: written from worker threads, read by `/ready` on the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outage: StoreOutage | None = None

    def wrote(self) -> StoreOutage | None:
        """A write went through; returns the outage this ends, if there was one."""
        with self._lock:
            ended, self._outage = self._outage, None
        return ended

    def failed(self, error: str) -> StoreOutage:
        """A write failed; returns the outage it starts or continues."""
        with self._lock:
            previous = self._outage
            self._outage = StoreOutage(
                since=previous.since if previous is not None else time.time(),
                error=error,
                failures=(previous.failures if previous is not None else 0) + 1,
            )
            return self._outage

    @property
    def outage(self) -> StoreOutage | None:
        with self._lock:
            return self._outage
