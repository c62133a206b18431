"""A task store in a dict: for tests and throwaway runs. Everything is lost with the process."""

import copy
import dataclasses
import threading
import time
from datetime import datetime, timedelta

from ..models import TaskProgress, TaskRecord, TaskState, utcnow


class MemoryTaskStore:
    def __init__(self, *, retention: timedelta | None = None) -> None:
        self.retention = retention
        self._records: dict[str, TaskRecord] = {}
        self._heartbeats: dict[str, float] = {}
        self._lock = threading.Lock()

    def save(self, record: TaskRecord) -> None:
        with self._lock:
            kept = copy.deepcopy(record)
            stored = self._records.get(record.task_id)
            # Never clears a request to cancel: the writer's copy may predate it.
            kept.cancel_requested = kept.cancel_requested or (
                stored is not None and stored.cancel_requested
            )
            self._records[record.task_id] = kept

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
            if record is not None:
                record.progress = copy.deepcopy(progress)
                record.version = version

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
        now = utcnow()
        with self._lock:
            expired = [
                task_id for task_id, record in self._records.items() if self._expired(record, now)
            ][:limit]
            for task_id in expired:
                del self._records[task_id]
        return len(expired)

    def _expired(self, record: TaskRecord, now: datetime) -> bool:
        expires_at = record.expires_at(self.retention)
        return expires_at is not None and expires_at <= now

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None
