"""A task store in a dict: for tests and throwaway runs. Everything is lost with the process.

One lock makes every method atomic: a save keeps a stored request to cancel, a claim is a check
and an insert under the lock.
"""

import collections
import copy
import dataclasses
import threading
import time
from datetime import datetime, timedelta

from ..models import IdempotencyClaim, TaskProgress, TaskRecord, TaskState, utcnow
from .codec import slot_number


class MemoryTaskStore:
    def __init__(self, *, retention: timedelta | None = None) -> None:
        self.retention = retention
        self._records: dict[str, TaskRecord] = {}
        self._heartbeats: dict[str, float] = {}
        self._claims: dict[tuple[str, str], IdempotencyClaim] = {}
        # The latest slot claimed of each schedule (microseconds since the epoch).
        self._slots: dict[str, int] = {}
        self._lock = threading.Lock()

    def save(self, record: TaskRecord) -> None:
        stored = copy.deepcopy(record)
        with self._lock:
            previous = self._records.get(record.task_id)
            if previous is not None and previous.cancel_requested:
                stored.cancel_requested = True
            self._records[record.task_id] = stored

    def get(self, task_id: str) -> TaskRecord | None:
        with self._lock:
            record = self._records.get(task_id)
            return copy.deepcopy(record) if record is not None else None

    def recent(
        self,
        state: TaskState | None = None,
        limit: int = 50,
        caller: str | None = None,
        *,
        with_arguments: bool = True,
    ) -> list[TaskRecord]:
        with self._lock:
            records = [
                r
                for r in self._records.values()
                if (state is None or r.state == state) and (caller is None or r.caller == caller)
            ]
        records.sort(key=lambda r: r.created_at, reverse=True)
        if not with_arguments:
            records = [dataclasses.replace(r, args=[], kwargs={}) for r in records[:limit]]
        return [copy.deepcopy(r) for r in records[:limit]]

    def request_cancel(self, task_id: str) -> TaskRecord | None:
        with self._lock:
            record = self._records.get(task_id)
            if record is None:
                return None
            record.cancel_requested = True
            return copy.deepcopy(record)

    def save_progress(self, task_id: str, progress: TaskProgress, version: int) -> None:
        with self._lock:
            record = self._records.get(task_id)
            # Never back to an older version (a late write after the save that ended the task).
            if record is not None and record.version <= version:
                record.progress = copy.deepcopy(progress)
                record.version = version

    def claim_idempotency_key(self, claim: IdempotencyClaim) -> IdempotencyClaim | None:
        with self._lock:
            holder = self._claims.get((claim.caller, claim.key))
            if holder is not None:
                return copy.copy(holder)
            self._claims[claim.caller, claim.key] = copy.copy(claim)
            return None

    def release_idempotency_key(self, caller: str, key: str, task_id: str) -> None:
        with self._lock:
            holder = self._claims.get((caller, key))
            if holder is not None and holder.task_id == task_id:
                del self._claims[caller, key]

    def claim_schedule_slot(self, schedule: str, slot: datetime) -> bool:
        number = slot_number(slot)
        with self._lock:
            if number <= self._slots.get(schedule, -1):
                return False
            self._slots[schedule] = number
            return True

    def heartbeat(self, owner: str) -> None:
        with self._lock:
            self._heartbeats[owner] = time.time()

    def retire(self, owner: str) -> None:
        with self._lock:
            self._heartbeats.pop(owner, None)

    def claim_orphans(self, owner: str, stale_after: float, limit: int) -> list[TaskRecord]:
        now = time.time()
        claimed: list[TaskRecord] = []
        with self._lock:
            self._heartbeats[owner] = now
            for record in sorted(self._records.values(), key=lambda r: r.created_at):
                if len(claimed) >= limit:
                    break
                if record.state.is_final or record.owner is None or record.owner == owner:
                    continue
                last_seen = self._heartbeats.get(record.owner)
                if last_seen is None or now - last_seen > stale_after:
                    record.owner = owner
                    claimed.append(copy.deepcopy(record))
        return claimed

    def purge_expired(self, limit: int) -> int:
        if self.retention is None:
            return 0
        now = utcnow()
        with self._lock:
            expired = [
                task_id for task_id, record in self._records.items() if self._expired(record, now)
            ][:limit]
            for task_id in expired:
                del self._records[task_id]
            # The claims of the records deleted, and those whose request never stored its task,
            # once they are as old as the retention.
            deleted, cutoff = set(expired), now - self.retention
            for pair, claim in list(self._claims.items()):
                if claim.task_id in deleted or (
                    claim.created_at <= cutoff and claim.task_id not in self._records
                ):
                    del self._claims[pair]
        return len(expired)

    def _expired(self, record: TaskRecord, now: datetime) -> bool:
        expires_at = record.expires_at(self.retention)
        return expires_at is not None and expires_at <= now

    def count_states(self) -> dict[TaskState, int]:
        with self._lock:
            return dict(collections.Counter(record.state for record in self._records.values()))

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None
