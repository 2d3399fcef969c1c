"""The SAMPLE department system's work orders: what callers send, and the in-memory store that keeps them."""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AnyHttpUrl, AwareDatetime, BaseModel, ConfigDict, Field

# This system's statuses are civicflow's vocabulary (a city would map its own in the city file); staff may set
# any other word by hand (POST …/status), as real systems grow statuses no mapping knows.
OPEN = "open"
CANCELLED = "cancelled"
# Where a work order's life ends: nothing moves it on by itself, and it can no longer be cancelled.
FINISHED = frozenset({"resolved", "closed", "duplicate", "not_our_responsibility", "cancelled"})
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"


class WorkOrderRequest(BaseModel):
    """What a caller sends to open a work order."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    case_id: str = Field(min_length=1, max_length=100)
    tracking_number: str = Field(min_length=1, max_length=100)
    service_code: str = Field(min_length=1, max_length=100)
    summary: str = Field(min_length=1, max_length=2000)
    callback_url: AnyHttpUrl
    due_at: AwareDatetime | None = None  # None: the case has no due date
    # the answers civicflow's connector maps for this department, under this system's field names
    attributes: dict[Annotated[str, Field(max_length=100)], Annotated[str, Field(max_length=500)]] = Field(
        default={}, max_length=50
    )


class Cancellation(BaseModel):
    """Why civicflow cancels a work order (the case went to another department, was recategorised...)."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    reason: str = Field(min_length=1, max_length=500)


class StatusChange(BaseModel):
    """Staff moving a work order by hand to any status, in this system's words."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    status: str = Field(min_length=1, max_length=64, pattern=_PRINTABLE)
    note: str | None = Field(default=None, max_length=2000)
    # a duplicate's other case (tracking number), a referral's department
    refers_to: str | None = Field(default=None, min_length=1, max_length=100, pattern=_PRINTABLE)


@dataclass
class WorkOrder:
    id: str
    department_id: str
    crew: int
    request: WorkOrderRequest
    status: str = OPEN
    note: str | None = None
    refers_to: str | None = None
    cancel_reason: str | None = None
    changes: int = 0  # how many times it moved: numbers each change's update_id
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "department_id": self.department_id,
            "status": self.status,
            "note": self.note,
            "refers_to": self.refers_to,
            "cancel_reason": self.cancel_reason,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            **self.request.model_dump(mode="json"),
        }


class IdempotencyKeyReused(Exception):
    """The key already opened a work order for a different request."""


class WorkOrderStore:
    """The department's work orders, in memory. Opening is atomic: no await between look-up and insert.

    Being a sample, it forgets its work orders when it restarts; their ids carry the run they were
    opened in (WO-<run>-<n>), so a restarted system never hands out an id it handed out before, as a
    real one never would."""

    def __init__(self, crews: int = 6) -> None:
        self._by_id: dict[tuple[str, str], WorkOrder] = {}
        self._by_key: dict[tuple[str, str], tuple[WorkOrderRequest, WorkOrder]] = {}
        self._run = secrets.token_hex(2).upper()
        self._numbers = itertools.count(1)
        self._crews = crews

    def open(self, department_id: str, idempotency_key: str, request: WorkOrderRequest) -> tuple[WorkOrder, bool]:
        """The work order for this key, and whether it was created now."""
        seen = self._by_key.get((department_id, idempotency_key))
        if seen is not None:
            earlier_request, work_order = seen
            if earlier_request != request:
                raise IdempotencyKeyReused(idempotency_key)
            return work_order, False
        number = next(self._numbers)
        work_order = WorkOrder(
            id=f"WO-{self._run}-{number:05d}",
            department_id=department_id,
            crew=1 + number % self._crews,
            request=request,
        )
        self._by_id[(department_id, work_order.id)] = work_order
        self._by_key[(department_id, idempotency_key)] = (request, work_order)
        return work_order, True

    def get(self, department_id: str, work_order_id: str) -> WorkOrder | None:
        return self._by_id.get((department_id, work_order_id))

    def of_department(self, department_id: str) -> list[WorkOrder]:
        return [w for (d, _), w in self._by_id.items() if d == department_id]

    def lose(self, work_order: WorkOrder, *, keep_key: bool = False) -> None:
        """Forget the work order, as a system that lost data would (for showing civicflow's reconciliation): its
        idempotency key too unless `keep_key`, so the same key opens a new one; kept, the key still finds the
        lost work order's id, which it no longer shows."""
        self._by_id.pop((work_order.department_id, work_order.id), None)
        if not keep_key:
            for key, (_, kept) in list(self._by_key.items()):
                if kept is work_order:
                    del self._by_key[key]

    def move(self, work_order: WorkOrder, status: str, note: str | None, refers_to: str | None = None) -> None:
        work_order.status = status
        work_order.note = note
        work_order.refers_to = refers_to
        work_order.changes += 1
        work_order.updated_at = datetime.now(UTC)

    def __len__(self) -> int:
        return len(self._by_id)
