"""A task store that fails on purpose: chosen calls raise, or block, for as long as a test says.

    plan = FaultPlan()
    install(monkeypatch, plan, "my_service")   # every store opened from now on is wrapped
    with plan.outage(WRITES):                  # every write raises until the block ends
        ...
    with plan.outage({"get", "recent"}, block=True, then_raise=False):
        ...                                    # reads hang until the block ends, then go through

No production seam: `install` replaces `open_store` in every module of the package that looked it
up (the app factory, which the API and the SQS consumer share, and the Celery worker), so the
stores the service opens itself are the ones that fail. `FaultyStore` delegates every attribute
to the store it wraps (the Redis store's extra methods included) and passes `isinstance` checks
for that store's class, so the code under test cannot tell it from the real thing until a fault
is injected. One plan serves every store opened under it (an outage hits every process that
shares the store), and is thread-safe: worker threads, the event loop and the test all call it.
"""

import contextlib
import importlib
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

# The writes a TaskStore makes (a state transition, an accepted task, a heartbeat, a claim, a
# request to cancel, a running task's progress).
WRITES = frozenset(
    {
        "save",
        "heartbeat",
        "retire",
        "claim_orphans",
        "purge_expired",
        "request_cancel",
        "save_progress",
    }
)
# Its reads (`transitions` and `count` are the Redis store's, for the Celery runner's counters).
READS = frozenset({"get", "recent", "ping", "transitions", "count"})
EVERYTHING = WRITES | READS
# No window outlives this, whatever a test does: a test that fails inside `outage` cannot leave
# the service's threads blocked forever.
LONGEST_OUTAGE_S = 60.0


class InjectedStoreFault(OSError):
    """What a faulty store raises unless a window says otherwise: an I/O error, as a locked
    SQLite file, a full disk or a dropped Redis connection are."""


def database_is_locked(method: str) -> BaseException:
    return InjectedStoreFault(f"injected fault in {method}: database is locked")


@dataclass
class Window:
    """Calls of `methods` fail from now until `end()` (or `seconds`, when given), on the stores
    `stores` accepts (all when None)."""

    methods: frozenset[str]
    block: bool
    then_raise: bool
    error: Callable[[str], BaseException]
    started: float = field(default_factory=time.monotonic)
    seconds: float | None = None
    stores: "Callable[[FaultyStore], bool] | None" = None
    ended: threading.Event = field(default_factory=threading.Event)

    @property
    def deadline(self) -> float:
        return self.started + min(self.seconds or LONGEST_OUTAGE_S, LONGEST_OUTAGE_S)

    def is_open(self) -> bool:
        if self.ended.is_set():
            return False
        if time.monotonic() >= self.deadline:
            self.ended.set()
            return False
        return True

    def applies(self, method: str, store: "FaultyStore") -> bool:
        return method in self.methods and (self.stores is None or self.stores(store))

    def end(self) -> None:
        self.ended.set()

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class FaultPlan:
    """Which store calls fail now, and what every store call did (for the test to assert on)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: list[Window] = []
        self.calls: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.blocked_now = 0
        self.stores_opened = 0

    def start(
        self,
        methods: Iterable[str],
        *,
        seconds: float | None = None,
        block: bool = False,
        then_raise: bool = True,
        error: Callable[[str], BaseException] = database_is_locked,
        stores: "Callable[[FaultyStore], bool] | None" = None,
    ) -> Window:
        """Open a window: calls of `methods` raise `error(method)` (block: wait for the window to
        end first, then raise, or go through if not `then_raise`), on every store or on those
        `stores` accepts (`lambda store: store is app.state.tasks.store`)."""
        names = frozenset(methods)
        unknown = names - EVERYTHING
        assert not unknown, f"not TaskStore methods: {sorted(unknown)}"
        window = Window(names, block, then_raise, error, seconds=seconds, stores=stores)
        with self._lock:
            self._windows.append(window)
        return window

    @contextlib.contextmanager
    def outage(self, methods: Iterable[str], **how: Any) -> Iterator[Window]:
        """`start` a window that ends when the block does, however it is left."""
        window = self.start(methods, **how)
        try:
            yield window
        finally:
            window.end()

    def end_all(self) -> None:
        with self._lock:
            windows = list(self._windows)
        for window in windows:
            window.end()

    def refusals(self, methods: Iterable[str] = EVERYTHING) -> int:
        with self._lock:
            return sum(self.refused[name] for name in methods)

    def before_call(self, method: str, store: "FaultyStore") -> None:
        """Called by `store` before it delegates `method`: raise, block, or return."""
        with self._lock:
            self.calls[method] += 1
            window = next(
                (w for w in self._windows if w.applies(method, store) and w.is_open()), None
            )
            if window is None:
                return
            if not window.block:
                self.refused[method] += 1
        if window.block:
            with self._lock:
                self.blocked_now += 1
            try:
                while not window.ended.wait(0.05):
                    if not window.is_open():
                        break
            finally:
                with self._lock:
                    self.blocked_now -= 1
            if not window.then_raise:
                return
            with self._lock:
                self.refused[method] += 1
        raise window.error(method)

    def _opened(self) -> int:
        with self._lock:
            self.stores_opened += 1
            return self.stores_opened


class FaultyStore:
    """A TaskStore that asks its plan before every call, then does what `inner` does."""

    def __init__(self, inner: Any, plan: FaultPlan) -> None:
        self._inner = inner
        self._plan = plan
        self.number = plan._opened()

    # Code that checks which store it was given (the Celery runner needs the Redis one) sees the
    # wrapped store's class: isinstance() consults __class__.
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._inner)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name.startswith("_") or not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            if name in EVERYTHING:
                self._plan.before_call(name, self)
            return value(*args, **kwargs)

        return call

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self._plan.before_call(name, self)
        return getattr(self._inner, name)(*args, **kwargs)

    # The TaskStore methods, spelled out (the wrapper is a TaskStore to a reader), passing their
    # arguments through as given: a signature that grows a parameter needs no change here.
    def save(self, *args: Any, **kwargs: Any) -> None:
        self._call("save", *args, **kwargs)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("get", *args, **kwargs)

    def recent(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("recent", *args, **kwargs)

    def heartbeat(self, *args: Any, **kwargs: Any) -> None:
        self._call("heartbeat", *args, **kwargs)

    def request_cancel(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("request_cancel", *args, **kwargs)

    def save_progress(self, *args: Any, **kwargs: Any) -> None:
        self._call("save_progress", *args, **kwargs)

    def retire(self, *args: Any, **kwargs: Any) -> None:
        self._call("retire", *args, **kwargs)

    def claim_orphans(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("claim_orphans", *args, **kwargs)

    def purge_expired(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("purge_expired", *args, **kwargs)

    def ping(self, *args: Any, **kwargs: Any) -> None:
        self._call("ping", *args, **kwargs)

    def close(self) -> None:
        self._inner.close()


def install(monkeypatch: pytest.MonkeyPatch, plan: FaultPlan, package: str) -> list[str]:
    """Make every store `package` opens from now on a FaultyStore following `plan`.

    Replaces `open_store` in each loaded module of the package that holds the real one (imported
    `from .tasks.store import open_store`), and in `tasks.store` itself; says which modules.
    """
    importlib.import_module(f"{package}.app")
    stores = importlib.import_module(f"{package}.tasks.store")
    real_open_store = stores.open_store

    def open_faulty_store(*args: Any, **kwargs: Any) -> Any:
        return FaultyStore(real_open_store(*args, **kwargs), plan)

    patched = []
    for name, module in list(sys.modules.items()):
        ours = name == package or name.startswith(f"{package}.")
        if ours and getattr(module, "open_store", None) is real_open_store:
            monkeypatch.setattr(module, "open_store", open_faulty_store)
            patched.append(name)
    assert f"{package}.app" in patched, f"{package}.app does not look up open_store any more"
    return patched
