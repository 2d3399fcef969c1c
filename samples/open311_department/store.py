"""The SAMPLE Open311 server's requests and updates, in memory, each request also written to a readable file.

Not a real department's system: a stand-in for `civicflow dev` and the tests. Opening is atomic (no await between
the look-up and the insert). Like a real GeoReport server, it does not refuse a second POST with the same
attribute[civicflow_key]: it only keeps the attribute and lets a client search by it (the client's job is to
look before it posts again, services/workorder_bridge/kinds/open311.py).
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

Clock = Callable[[], datetime]
FINAL = frozenset({"fixed", "closed", "not_councils_responsibility", "no_further_action", "duplicate", "cancelled"})


def now_to_the_second() -> datetime:
    """The sample stamps times to the second, as many GeoReport servers do: updates share instants."""
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class Update:
    """One change of a request's status in the department's system (mySociety's service_request_update)."""

    update_id: str
    request_id: str
    status: str
    at: datetime
    description: str = ""
    external_status_code: str | None = None


@dataclass
class ServiceRequest:
    id: str
    service_code: str
    description: str
    requested_at: datetime
    lat: float | None = None
    long: float | None = None
    address: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    key: str | None = None  # attribute[civicflow_key]
    token: str | None = None  # when the POST was answered with a token
    status: str = "open"
    status_notes: str = ""
    updated_at: datetime | None = None
    by_staff: bool = False  # a person moved it: the automatic progression leaves it alone
    posted: list[dict[str, str]] = field(default_factory=list)  # updates the client posted (cancellations)
    history: list[Update] = field(default_factory=list)  # its updates in the feed

    def as_record(self, service_name: str, stamp: Callable[[datetime], str] = datetime.isoformat) -> dict[str, Any]:
        """GeoReport's GET requests fields (and Chicago's extended_attributes, holding the key)."""
        return {
            "service_request_id": self.id,
            "status": self.status,  # mySociety's extended statuses (investigating, fixed…), not only open/closed
            "status_notes": self.status_notes or None,
            "service_name": service_name,
            "service_code": self.service_code,
            "description": self.description,
            "requested_datetime": stamp(self.requested_at),
            "updated_datetime": stamp(self.updated_at or self.requested_at),
            "address": self.address,
            "lat": self.lat,
            "long": self.long,
            "extended_attributes": {"civicflow_key": self.key},
        }


class Open311Store:
    """Requests by id, key and token; the updates feed; the client's posted updates by update_id."""

    def __init__(self, state_dir: Path | None = None, clock: Clock = now_to_the_second) -> None:
        self.requests: dict[str, ServiceRequest] = {}
        self.updates: list[Update] = []
        self._by_token: dict[str, ServiceRequest] = {}
        self._by_key: dict[str, list[ServiceRequest]] = {}
        self._posted: dict[str, str] = {}  # update_id -> request id
        self._run = secrets.token_hex(2).upper()  # a restarted sample never hands out an id it handed out before
        self._numbers = itertools.count(1)
        self._updates = itertools.count(1)
        self._folder = state_dir / "open311" if state_dir is not None else None
        self.clock = clock

    def open(self, **fields: Any) -> ServiceRequest:
        number = next(self._numbers)
        request = ServiceRequest(id=f"{self._run}-{number:05d}", requested_at=self.clock(), **fields)
        self.requests[request.id] = request
        if request.key is not None:
            self._by_key.setdefault(request.key, []).append(request)
        self._file(request)
        return request

    def with_token(self, request: ServiceRequest) -> str:
        request.token = secrets.token_hex(8)
        self._by_token[request.token] = request
        return request.token

    def by_token(self, token: str) -> ServiceRequest | None:
        return self._by_token.get(token)

    def by_key(self, key: str) -> list[ServiceRequest]:
        return list(self._by_key.get(key, ()))

    def move(self, request: ServiceRequest, status: str, note: str, external_status_code: str | None = None) -> Update:
        """Their staff (or crew) moved the request: a new update in the feed."""
        at = self.clock()
        request.status, request.status_notes, request.updated_at = status, note, at
        update = Update(f"U{self._run}-{next(self._updates):06d}", request.id, status, at, note, external_status_code)
        self.updates.append(update)
        request.history.append(update)
        self._file(request)
        return update

    def posted_update(self, update_id: str, request: ServiceRequest, status: str, description: str) -> bool:
        """A client's update (mySociety's POST servicerequestupdates): applied once per update_id (False: again).
        It changes the request but is not put in the feed: it is the client's own news."""
        if update_id in self._posted:
            return False
        self._posted[update_id] = request.id
        request.status, request.status_notes, request.updated_at = status.lower(), description, self.clock()
        request.by_staff = True
        request.posted.append({"update_id": update_id, "status": status, "description": description})
        self._file(request)
        return True

    def updates_between(self, start: datetime | None, end: datetime | None) -> list[Update]:
        return [u for u in self.updates if (start is None or u.at >= start) and (end is None or u.at <= end)]

    def _file(self, request: ServiceRequest) -> None:
        """<state>/open311/<id>.json: the request as the department sees it, for a person to read."""
        if self._folder is None:
            return
        self._folder.mkdir(parents=True, exist_ok=True)
        shown = {
            k: (v.isoformat() if isinstance(v, datetime) else v)
            for k, v in request.__dict__.items()
            if k not in ("token", "history")
        }
        shown["updates"] = [u.__dict__ | {"at": u.at.isoformat()} for u in request.history]
        (self._folder / f"{request.id}.json").write_text(json.dumps(shown, indent=2) + "\n")
