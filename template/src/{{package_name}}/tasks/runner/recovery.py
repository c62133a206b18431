"""Crash recovery for the in-process runners: a heartbeat, and claiming what dead runners left.

Every runner writes its heartbeat to the task store. A record whose owner stopped beating (a
`kill -9`, a lost host) or retired (a drain that left work behind) is claimed by a live runner and
run again: delivery is at-least-once. On the same beat the runner deletes the finished records
whose retention (`TASK_RETENTION_SECONDS`) has passed.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from ...logs import task_context
from ..ledger import TaskLedger
from ..models import TaskRecord, utcnow
from ..store import TaskStore

logger = logging.getLogger(__name__)

# Orphans are claimed this many at a time, each with a queue slot reserved beforehand.
RECOVERY_BATCH = 16
# Expired records are deleted this many per statement, and at most PURGE_BATCHES statements a
# beat: a backlog (retention just shortened) is worked off over several beats instead of holding
# the database's write lock, or delaying the next heartbeat, for long.
PURGE_BATCH = 500
PURGE_BATCHES = 10


class Caretaker:
    """Keeps one runner's heartbeat and hands it orphans, as many as its queue has room for.

    `reserve(n)` takes up to n queue slots and says how many it took, `release(n)` gives slots
    back, and `resume(record, delay)` runs a claimed record in a reserved slot after `delay`
    seconds (what is left of its retry backoff); when it raises, the record is failed with the
    reason (nobody else will run it: it is ours now) and the rest of the batch goes on.
    """

    def __init__(
        self,
        store: TaskStore,
        owner: str,
        *,
        interval: float,
        owner_ttl: float,
        reserve: Callable[[int], int],
        release: Callable[[int], None],
        resume: Callable[[TaskRecord, float], None],
    ) -> None:
        self._store = store
        self._ledger = TaskLedger(store)
        self._owner = owner
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
        await asyncio.to_thread(self._store.retire, self._owner)

    async def look_after_orphans(self) -> None:
        await asyncio.to_thread(self._store.heartbeat, self._owner)
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

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.look_after_orphans()
            except Exception:
                logger.exception("task store heartbeat failed; will try again")
            try:
                await self.purge_expired()
            except Exception:
                logger.exception("deleting expired task records failed; will try again")


def seconds_until(moment: datetime | None) -> float:
    return 0.0 if moment is None else max(0.0, (moment - utcnow()).total_seconds())
