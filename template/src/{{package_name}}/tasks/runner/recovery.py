"""Crash recovery for the in-process runners: a heartbeat, and claiming what dead runners left.

Every runner writes its heartbeat to the task store. A record whose owner stopped beating (a
`kill -9`, a lost host) or retired (a drain that left work behind) is claimed by a live runner and
run again: delivery is at-least-once. On the same beat the runner deletes the finished records
whose retention (`TASK_RETENTION_SECONDS`) has passed, and restarts any of its workers that died.

A store outage stops every runner's heartbeat alike. So that the first runner to reach the store
again does not take over its siblings' tasks (still running, their heartbeats merely late), a
runner whose own heartbeat failed claims nothing until it has beaten for `owner_ttl` again:
by then every live sibling has beaten too.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime

from ...logs import task_context
from ..ledger import TaskLedger, describe_error
from ..models import TaskRecord, utcnow

logger = logging.getLogger(__name__)

# Orphans are claimed this many at a time, each with a queue slot reserved beforehand.
RECOVERY_BATCH = 16
# Expired records are deleted this many per statement, and at most PURGE_BATCHES statements a
# beat: a backlog (retention just shortened) is worked off over several beats instead of holding
# the database's write lock, or delaying the next heartbeat, for long.
PURGE_BATCH = 500
PURGE_BATCHES = 10
# While the heartbeat keeps failing, one log line at most this often.
FAILURE_LOG_INTERVAL = 30.0


class Caretaker:
    """Keeps one runner's heartbeat and hands it orphans, as many as its queue has room for.

    `reserve(n)` takes up to n queue slots and says how many it took, `release(n)` gives slots
    back, and `resume(record, delay)` runs a claimed record in a reserved slot after `delay`
    seconds (what is left of its retry backoff); when it raises, the record is failed with the
    reason (nobody else will run it: it is ours now) and the rest of the batch goes on.
    `supervise()` restarts the runner's dead workers.
    """

    def __init__(
        self,
        ledger: TaskLedger,
        owner: str,
        *,
        interval: float,
        owner_ttl: float,
        reserve: Callable[[int], int],
        release: Callable[[int], None],
        resume: Callable[[TaskRecord, float], None],
        supervise: Callable[[], None],
    ) -> None:
        self._store = ledger.store
        self._ledger = ledger
        self._owner = owner
        self._supervise = supervise
        # monotonic time from which claiming is safe again; 0 = at once (a fresh start).
        self._claims_from = 0.0
        self._interval = interval
        self._owner_ttl = owner_ttl
        self._reserve = reserve
        self._release = release
        self._resume = resume
        self._beating: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Recover what a crashed predecessor left, then keep beating in the background."""
        await self.look_after_orphans()
        self._beating = asyncio.create_task(self._keep_alive(), name="task-caretaker")

    async def stop(self) -> None:
        """Stop beating and say this runner is gone, so its leftovers are claimed at once."""
        if self._beating is not None:
            self._beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beating
        try:
            await asyncio.to_thread(self._store.retire, self._owner)
        except Exception:
            # Not fatal: once our heartbeat is stale (owner_ttl) a live runner claims our leftovers.
            logger.exception("could not retire from the task store; our tasks wait for owner_ttl")

    async def look_after_orphans(self) -> None:
        await self._beat()
        if time.monotonic() < self._claims_from:
            return
        while slots := self._reserve(RECOVERY_BATCH):
            orphans: list[TaskRecord] = []
            try:
                orphans = await asyncio.to_thread(
                    self._store.claim_orphans, self._owner, self._owner_ttl, slots
                )
            finally:
                self._release(slots - len(orphans))
            for record in orphans:
                with task_context(record):
                    logger.warning(
                        "recovered a task whose runner stopped; running it again",
                        extra={"task_name": record.name},
                    )
                try:
                    self._resume(record, seconds_until(record.next_attempt_at))
                except Exception as error:
                    # Claimed by us, so nobody else will run it: record why, go on with the rest.
                    await self._ledger.not_handed_over(record, error)
            if len(orphans) < slots:
                return

    async def purge_expired(self) -> int:
        """Delete finished records past their retention; say how many went."""
        purged = 0
        for _ in range(PURGE_BATCHES):
            deleted = await asyncio.to_thread(self._store.purge_expired, PURGE_BATCH)
            purged += deleted
            if deleted < PURGE_BATCH:
                break
        if purged:
            logger.info("deleted task records past their retention", extra={"purged": purged})
        return purged

    async def _beat(self) -> None:
        try:
            await asyncio.to_thread(self._store.heartbeat, self._owner)
        except Exception as error:
            self._ledger.health.failed(describe_error(error))
            self._claims_from = time.monotonic() + self._owner_ttl
            raise
        self._ledger.health.wrote()

    async def _keep_alive(self) -> None:
        # While the store is down every beat fails: one line when it starts failing, then one
        # every FAILURE_LOG_INTERVAL, not one (with a traceback) per beat.
        failing_since: float | None = None
        last_logged = 0.0
        while True:
            await asyncio.sleep(self._interval)
            try:
                self._supervise()
            except Exception:
                logger.exception("restarting the task workers failed; will try again")
            try:
                await self.look_after_orphans()
                await self.purge_expired()
            except Exception:
                now = time.monotonic()
                if failing_since is None or now - last_logged >= FAILURE_LOG_INTERVAL:
                    logger.exception(
                        "task store heartbeat failed; beating again every interval",
                        extra={"failing_for_s": round(now - (failing_since or now), 1)},
                    )
                    last_logged = now
                failing_since = failing_since or now
                continue
            if failing_since is not None:
                logger.info(
                    "task store heartbeat works again",
                    extra={"failed_for_s": round(time.monotonic() - failing_since, 1)},
                )
                failing_since = None


def seconds_until(moment: datetime | None) -> float:
    return 0.0 if moment is None else max(0.0, (moment - utcnow()).total_seconds())
