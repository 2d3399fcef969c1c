"""Department connectors: how a work order is opened, cancelled and followed in a department's own system.

`Connector` is the contract every kind meets (rest_webhook, open311, grpc, email; the city file says which a
department uses, civicflow/department_systems.py). One instance serves one department. The contract test
class every kind runs is tests/connector_contract.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from civicflow.department_systems import ConnectorSpec
from services.workorder_bridge.domain import WorkOrderRequest


@dataclass(frozen=True)
class OpenedWorkOrder:
    external_id: str
    status: str


# The answers that mean the department's system read the work order and will not take it.
REFUSALS = frozenset({400, 409, 422})
MISCONFIGURED = "; check CIVICFLOW_WORKORDER_BASE_URL and the department system's credentials"


class ConnectorError(Exception):
    """Opening a work order failed."""


class DepartmentUnavailable(ConnectorError):
    """The department's system did not answer, failed, or cannot be reached as configured (network error,
    timeout, 5xx, 429, 408; a redirect, 401, 403 or 404 means our address or credentials are wrong): try
    again later (the bridge parks the work order and retries it, see opener.py)."""


class WorkOrderRefused(ConnectorError):
    """The department's system read this work order and will not take it (400, 409, 422); retrying will
    not help, so the bridge tells the router the department turned the case down (see opener.py)."""

    def __init__(self, department_id: str, status_code: int) -> None:
        super().__init__(f"{department_id}: the work-order system refused the work order with HTTP {status_code}")
        self.status_code = status_code


class CannotCancel(ConnectorError):
    """This kind of system has no way to cancel a work order: the bridge tells the department by its channel
    instead, and the case records that it was told."""


class CannotRead(ConnectorError):
    """This kind of system cannot be asked how one work order stands now (it only receives, or only pushes):
    reconciliation (services/workorder_bridge/reconcile.py) skips its departments."""


@dataclass(frozen=True)
class ExternalUpdate:
    """One status update from a department's system, in its own words: `status` is theirs (mapped to ours by
    the department's reverse mapping); `update_id` identifies the update where their system numbers them
    (Open311 servicerequestupdates), else None; `refers_to` is what a duplicate or an internal referral
    points at (another case's tracking number, the department it was referred to), when they say."""

    external_id: str
    status: str
    changed_at: datetime
    note: str | None = None
    update_id: str | None = None
    refers_to: str | None = None


@dataclass(frozen=True)
class UpdatesPage:
    """What a poll found, and the cursor to poll from next time (None: their system keeps no cursor)."""

    updates: list[ExternalUpdate]
    cursor: str | None


@dataclass(frozen=True)
class Health:
    """Whether the department's system answers, and in words what was seen (never a credential)."""

    up: bool
    detail: str


class Connector(Protocol):
    """One department's system, whatever it runs.

    - open_work_order: idempotent by our key (the routing event's id): the same key names the same work order,
      however often it is sent. DepartmentUnavailable: try later; WorkOrderRefused: it will never take it.
    - cancel_work_order: idempotent too (the key is the cause of the cancellation); CannotCancel where the kind
      has no way; DepartmentUnavailable: try later.
    - updates_since: the updates a poll finds after `cursor` (None: from the catch-up window); push kinds, whose
      updates arrive at the bridge's endpoints, return an empty page.
    - read_work_order: the work order as their system shows it now, as an update in their words (changed_at: their
      last change), for reconciling a work order with no news for too long; None when their system does not know
      it (lost, never there); DepartmentUnavailable when it cannot tell now; CannotRead where the kind has no way.
    - health: a cheap call that says whether their system answers.
    """

    kind: str
    department_id: str

    async def open_work_order(self, request: WorkOrderRequest, idempotency_key: str) -> OpenedWorkOrder: ...

    async def cancel_work_order(self, external_id: str, reason: str, idempotency_key: str) -> None: ...

    async def updates_since(self, cursor: str | None) -> UpdatesPage: ...

    async def read_work_order(self, external_id: str) -> ExternalUpdate | None: ...

    async def health(self) -> Health: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class FindsByKey(Protocol):
    """A kind that can look up, cheaply and without opening anything, the work order our key opened (grpc: its
    outbox; open311: the key attribute search). The opener uses it for a routing decision it finds replaced on a
    replay: a work order opened under that decision's key before a crash is then cancelled, not left open. The
    rest_webhook protocol has no such look-up (POSTing the key again would open one where none exists), nor has
    an inbox (email)."""

    async def find_by_key(self, idempotency_key: str) -> OpenedWorkOrder | None: ...


@dataclass(frozen=True)
class ConnectorContext:
    """What a kind's builder (services/workorder_bridge/kinds/) is given to make one department's connector."""

    department_id: str
    spec: ConnectorSpec
    settings: Any  # the bridge's BridgeSettings (services/workorder_bridge/main.py), which kinds add fields to
    city_dir: Path | None  # where a credential's {file: PATH} is relative to
    callback_url: str  # the bridge's status webhook, for systems that post status back
    public_url: str  # the bridge's public base URL (signed links, other endpoints)


class Outcome(Enum):
    """What became of one status update the bridge was given."""

    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    OUTDATED = "outdated"  # older than the latest report recorded for the work order
    # kept until the work order is recorded (the department answered before the bridge committed it), then
    # applied (updates.UpdateRecorder.apply_held); a resend while it waits is held once
    HELD = "held"
    # not held: the department already has the most updates waiting that the bridge keeps for it; send it later
    HOLD_FULL = "hold_full"
    # changed_at more than a day ahead of our clock: a wrong clock or a wrong field; refused, recorded not
    TOO_FAR_AHEAD = "too_far_ahead"
    # a RecordUpdate that does not hold (UpdateRecorder holds instead)
    UNKNOWN_WORK_ORDER = "unknown_work_order"


class RecordUpdate(Protocol):
    """Records one department's update (services/workorder_bridge/updates.py): every push endpoint and poller
    hands what it received here, in their words; the department's reverse mapping makes it ours."""

    async def __call__(self, department_id: str, update: ExternalUpdate) -> Outcome: ...
