"""A task store in a dict: for tests and throwaway runs. Everything is lost with the process."""

import copy
import dataclasses
import threading
import time
from datetime import datetime, timedelta

from ..models import IdempotencyClaim, TaskRecord, TaskState, utcnow


class MemoryTaskStore:
    def __init__(self, *, retention: timedelta | None = None) -> None:
        self.retention = retention
        self._records: dict[str, TaskRecord] = {}
        self._heartbeats: dict[str, float] = {}
        self._claims: dict[tuple[str, str], IdempotencyClaim] = {}
        self._lock = threading.Lock()

    def save(self, record: TaskRecord) -> None:
        with self._lock:
            self._records[record.task_id] = copy.deepcopy(record)

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

    def claim_idempotency_key(self, claim: IdempotencyClaim) -> IdempotencyClaim | None:
        with self._lock:
            held = self._claims.setdefault((claim.caller, claim.key), copy.copy(claim))
            return None if held.task_id == claim.task_id else copy.copy(held)

    def release_idempotency_key(self, caller: str, key: str, task_id: str) -> None:
        with self._lock:
            held = self._claims.get((caller, key))
            if held is not None and held.task_id == task_id:
                del self._claims[(caller, key)]

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
