"""Periodic tasks: `@task(schedule="*/15 * * * *")` fired once per slot across every process.

A slot is one time the cron expression names (in UTC). `fire_due(now)` fires, for each periodic
task, the latest slot at or before `now`, and only that one: slots missed while nothing ran (every
process down) run once when one comes back, not once each. Firing a slot means winning
`store.claim_schedule_slot(name, slot)`, which exactly one caller does however many processes and
hosts tick on one store; the winner accepts a record (state `queued`, `schedule_slot` = the slot,
caller "scheduler") through the ledger and hands it to the runner, like `add_task`.

Who ticks depends on the backend: the in-process runner's app ticks every
PERIODIC_TICK_SECONDS (`PeriodicClock`, started in the app's lifespan); Celery beat and
EventBridge Scheduler (Lambda) keep time themselves and call `fire_slot(name, slot)` for the slot
they meant.

A store that fails is logged (one line per FAILURE_LOG_INTERVAL while it goes on failing) and
asked again on the next tick; a record the store did not take after its slot was won is kept and
written on the next tick. Neither ever stops the clock.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from cronsim import CronSim

from ..logs import task_context
from .ledger import TaskLedger
from .models import TaskRecord, utcnow
from .registry import TaskRegistry, TaskSpec

logger = logging.getLogger(__name__)

# The `caller` of a fired record: no API caller, so only an admin lists it.
SCHEDULER_CALLER = "scheduler"
# While the store keeps failing, one log line at most this often.
FAILURE_LOG_INTERVAL = 30.0


def latest_slot(schedule: str, now: datetime) -> datetime:
    """The latest time at or before `now` that the cron expression `schedule` names (UTC)."""
    # cronsim iterates backwards from strictly before its start; slots are whole minutes.
    start = now.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
    slot: datetime = next(CronSim(schedule, start, reverse=True))
    return slot


_WEEKDAYS = {
    name: day for day, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])
}


def eventbridge_expression(schedule: str) -> str:
    """The cron expression as EventBridge Scheduler writes it: `cron(min hour dom month dow
    year)`, with `?` for the day field left open, 1-7 for Sunday-Saturday and `0/n` for `*/n`.

    What `template.yaml` declares for each periodic task; ValueError for an expression
    EventBridge cannot say (both a day of the month and a day of the week, a step of weekdays).
    """
    minute, hour, day_of_month, month, day_of_week = (field.upper() for field in schedule.split())
    if day_of_month != "*" and day_of_week != "*":
        raise ValueError(
            f"{schedule!r}: EventBridge cannot fire on a day of the month or a day of the week"
        )
    if day_of_week == "*":
        day_of_week = "?"
    else:
        day_of_month = "?"
        day_of_week = _eventbridge_weekdays(schedule, day_of_week)
    fields = [_eventbridge_step(field) for field in (minute, hour, day_of_month, month)]
    return f"cron({' '.join(fields)} {day_of_week} *)"


def _eventbridge_step(field: str) -> str:
    return field.replace("*/", "0/") if field.startswith("*/") else field


def _eventbridge_weekdays(schedule: str, field: str) -> str:
    days: set[int] = set()
    for part in field.split(","):
        first, _, last = part.partition("-")
        try:
            low = _WEEKDAYS[first] if first in _WEEKDAYS else int(first)
            high = (_WEEKDAYS[last] if last in _WEEKDAYS else int(last)) if last else low
        except ValueError:
            message = f"{schedule!r}: EventBridge cannot say the weekdays {field!r}"
            raise ValueError(message) from None
        days.update(day % 7 for day in range(low, high + 1))
    return ",".join(str(day + 1) for day in sorted(days))


class HandOver(Protocol):
    """Where a fired record goes: a TaskRunner, or a worker's publisher (Celery beat)."""

    @property
    def owner(self) -> str | None: ...

    def reserve(self) -> None: ...

    def release(self) -> None: ...

    async def submit(self, record: TaskRecord) -> None: ...


@dataclass(frozen=True)
class Fired:
    """A slot this process won and handed over."""

    name: str
    slot: datetime
    task_id: str


class Periodic:
    """Fires the registry's periodic tasks through one ledger and one runner."""

    def __init__(self, registry: TaskRegistry, ledger: TaskLedger, runner: HandOver) -> None:
        self._registry = registry
        self._ledger = ledger
        self._runner = runner
        # The latest slot of each task known to be fired (by us or another process): not asked
        # for again.
        self._settled: dict[str, datetime] = {}
        # Slots won whose record the store has not taken yet: written again next tick.
        self._unsaved: dict[str, TaskRecord] = {}
        self._failing_since: float | None = None
        self._last_logged = 0.0
        # Why the last slot asked for was not fired, when it was not fired elsewhere either (an
        # outside clock retries on it); None after a slot was fired or found fired.
        self.last_error: BaseException | None = None

    async def fire_due(self, now: datetime | None = None) -> list[Fired]:
        """Fire the latest slot at or before `now` of every periodic task not fired yet."""
        now = now or utcnow()
        fired: list[Fired] = []
        for spec in self._registry.periodic():
            assert spec.schedule is not None
            outcome = await self._fire(spec, latest_slot(spec.schedule, now))
            if outcome is not None:
                fired.append(outcome)
        return fired

    async def fire_slot(self, name: str, slot: datetime) -> Fired | None:
        """Fire `slot` of the periodic task `name` (an outside clock's call: Celery beat,
        EventBridge Scheduler). None when another process fired it already, or it could not be
        fired now (logged)."""
        spec = self._registry.get(name)
        if spec is None or spec.schedule is None:
            raise LookupError(f"no periodic task is registered as {name!r}")
        return await self._fire(spec, slot.astimezone(UTC).replace(second=0, microsecond=0))

    async def _fire(self, spec: TaskSpec[Any, Any], slot: datetime) -> Fired | None:
        settled = self._settled.get(spec.name)
        # A slot older than one fired is never fired; the one fired only if its record is unsaved.
        if settled is not None and (
            slot < settled or (slot == settled and spec.name not in self._unsaved)
        ):
            return None
        runner = self._runner
        try:
            runner.reserve()
        except Exception as error:
            self._failed(spec.name, slot, error, "the runner takes no task now")
            return None
        try:
            record = self._unsaved.get(spec.name)
            if record is None or record.schedule_slot != slot:
                if not await asyncio.to_thread(
                    self._ledger.store.claim_schedule_slot, spec.name, slot
                ):
                    runner.release()
                    self._settled[spec.name] = slot
                    self.last_error = None
                    logger.debug(
                        "periodic slot fired elsewhere",
                        extra={"task_name": spec.name, "schedule_slot": slot.isoformat()},
                    )
                    return None
                record = self._record(spec, slot)
                self._settled[spec.name] = slot
                self._unsaved[spec.name] = record
            await asyncio.to_thread(self._ledger.accept, record)
        except Exception as error:
            runner.release()
            self._failed(spec.name, slot, error, "the task store failed")
            return None
        del self._unsaved[spec.name]
        self.last_error = None
        self._recovered()
        with task_context(record):
            logger.info(
                "periodic task fired",
                extra={"task_name": spec.name, "schedule_slot": slot.isoformat()},
            )
        try:
            await runner.submit(record)
        except Exception as error:
            await self._ledger.not_handed_over(record, error)
        return Fired(name=spec.name, slot=slot, task_id=record.task_id)

    def _record(self, spec: TaskSpec[Any, Any], slot: datetime) -> TaskRecord:
        return TaskRecord(
            name=spec.name,
            args=[],
            kwargs={},
            max_attempts=spec.retry.max_attempts,
            owner=self._runner.owner,
            caller=SCHEDULER_CALLER,
            schedule_slot=slot,
        )

    def _failed(self, name: str, slot: datetime, error: BaseException, why: str) -> None:
        self.last_error = error
        now = time.monotonic()
        if self._failing_since is None or now - self._last_logged >= FAILURE_LOG_INTERVAL:
            self._last_logged = now
            logger.warning(
                "periodic task not fired (%s); trying again next tick",
                why,
                exc_info=error,
                extra={
                    "task_name": name,
                    "schedule_slot": slot.isoformat(),
                    "failing_for_s": round(now - (self._failing_since or now), 1),
                },
            )
        self._failing_since = self._failing_since or now

    def _recovered(self) -> None:
        if self._failing_since is not None:
            logger.info(
                "periodic tasks fire again",
                extra={"failed_for_s": round(time.monotonic() - self._failing_since, 1)},
            )
            self._failing_since = None


class PeriodicClock:
    """Calls `periodic.fire_due` every `interval` seconds on the app's loop (container
    deployments: every API process ticks; the slot claims keep each slot to one firing)."""

    def __init__(
        self,
        periodic: Periodic,
        interval: float,
        *,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._periodic = periodic
        self._interval = interval
        self._clock = clock
        self._sleep = sleep
        self._ticking: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._ticking = asyncio.create_task(self._tick_forever(), name="periodic-clock")

    async def stop(self) -> None:
        if self._ticking is not None:
            self._ticking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticking
            self._ticking = None

    async def _tick_forever(self) -> None:
        # The first tick one interval after start: an app that only lives for a moment (a test,
        # a command) fires nothing.
        while True:
            await self._sleep(self._interval)
            try:
                await self._periodic.fire_due(self._clock())
            except Exception:
                # fire_due logs what it expects; anything else is a bug, never the clock's end.
                logger.exception("periodic tick failed; ticking on")
