"""The JSON text every store keeps the record's structured fields in, and the keys of the
lease-like entries (idempotency claims, schedule slots) the key-value stores keep beside records.

One spelling for all stores, so a record reads back unchanged from any of them.
"""

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..models import CallbackDelivery, IdempotencyClaim, TaskProgress


def progress_to_json(progress: TaskProgress) -> str:
    return json.dumps(
        {
            "done": progress.done,
            "total": progress.total,
            "message": progress.message,
            "updated_at": progress.updated_at.isoformat(),
        }
    )


def progress_from_json(text: str | None) -> TaskProgress | None:
    if text is None:
        return None
    fields: dict[str, Any] = json.loads(text)
    return TaskProgress(
        done=fields["done"],
        total=fields.get("total"),
        message=fields.get("message"),
        updated_at=datetime.fromisoformat(fields["updated_at"]),
    )


def deliveries_to_json(deliveries: list[CallbackDelivery]) -> str:
    return json.dumps(deliveries_to_data(deliveries))


def deliveries_from_json(text: str | None) -> list[CallbackDelivery]:
    return deliveries_from_data(json.loads(text) if text is not None else None)


def deliveries_to_data(deliveries: list[CallbackDelivery]) -> list[dict[str, Any]]:
    """The deliveries as JSON values (for a store that keeps them inside a JSON document)."""
    return [
        {
            "attempt": each.attempt,
            "at": each.at.isoformat(),
            "status": each.status,
            "error": each.error,
        }
        for each in deliveries
    ]


def deliveries_from_data(data: list[dict[str, Any]] | None) -> list[CallbackDelivery]:
    return [
        CallbackDelivery(
            attempt=each["attempt"],
            at=datetime.fromisoformat(each["at"]),
            status=each.get("status"),
            error=each.get("error"),
        )
        for each in data or []
    ]


def claim_to_json(claim: IdempotencyClaim) -> str:
    return json.dumps(
        {
            "caller": claim.caller,
            "key": claim.key,
            "fingerprint": claim.fingerprint,
            "task_id": claim.task_id,
            "created_at": claim.created_at.isoformat(),
        }
    )


def claim_from_json(text: str) -> IdempotencyClaim:
    return claim_from_fields(json.loads(text))


def claim_from_fields(fields: Mapping[str, Any]) -> IdempotencyClaim:
    """A claim from its fields by name (a decoded JSON object, a database row)."""
    return IdempotencyClaim(
        caller=fields["caller"],
        key=fields["key"],
        fingerprint=fields["fingerprint"],
        task_id=fields["task_id"],
        created_at=datetime.fromisoformat(fields["created_at"]),
    )


def claim_digest(caller: str, key: str) -> str:
    """A fixed-length name for (caller, key): both are free text (a colon in a caller id cannot
    make two pairs one), and either may be long."""
    return hashlib.sha256(json.dumps([caller, key]).encode()).hexdigest()


def slot_number(slot: datetime) -> int:
    """A schedule slot as whole microseconds since the epoch: one number per instant, whatever
    the time zone it was given in, that orders as time does (and a double holds exactly)."""
    if slot.tzinfo is None:
        raise ValueError(f"a schedule slot needs a time zone: {slot.isoformat()}")
    moment = slot.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (moment.days * 86_400 + moment.seconds) * 1_000_000 + moment.microseconds
