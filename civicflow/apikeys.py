"""API keys of the systems that call civicflow over gRPC: their form, hash, scopes, rate limit and caller."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

Clock = Callable[[], float]
T = TypeVar("T")


class Scope(StrEnum):
    """What a key may do. One scope per kind of work, so a call centre's key cannot reload the rules."""

    SUBMIT = "submit"  # IntakeService.SubmitRequest
    TRACK = "track"  # CaseQueryService.GetCase
    RECATEGORISE = "recategorise"  # IntakeService.RecategoriseCase
    RULES_READ = "rules-read"  # RoutingService.ExplainRoute
    RULES_ADMIN = "rules-admin"  # RoutingService.ReloadRules
    # A call-taker setting a resident's channel: a key for a public web form must not be able to switch
    # any tracking number's notices off or over to calls, so this is not part of `submit`.
    PREFERENCES = "preferences"  # NotifierService.SetPreferences
    # Reserved for departments reporting work-order status over gRPC (today they use the signed
    # webhook); a key may hold it already so departments need no new key when that method comes.
    STATUS_REPORT = "status-report"
    # WorkOrderSync (services/workorder_bridge/grpc_api.py): a department's own system pulling its work orders
    # and reporting their status. Never granted bare: a key holds `workorders:<department_id>` for each
    # department it may act for, and the servicer checks the department of every call.
    WORK_ORDERS = "workorders"


# `all` is every scope a person at the city uses; a department's work orders are its own system's business.
ALL_SCOPES = frozenset(Scope) - {Scope.WORK_ORDERS}
DEPARTMENT_SCOPE_PREFIX = f"{Scope.WORK_ORDERS.value}:"

# Every keyed method and the one scope it needs. A method of ours missing here is refused to every
# key (fail closed), so a new RPC cannot go out open by accident: add it here.
METHOD_SCOPES: Mapping[str, Scope] = {
    "/civicflow.v1.IntakeService/SubmitRequest": Scope.SUBMIT,
    "/civicflow.v1.IntakeService/RecategoriseCase": Scope.RECATEGORISE,
    "/civicflow.v1.NotifierService/SetPreferences": Scope.PREFERENCES,
    "/civicflow.v1.CaseQueryService/GetCase": Scope.TRACK,
    "/civicflow.v1.RoutingService/ExplainRoute": Scope.RULES_READ,
    "/civicflow.v1.RoutingService/ReloadRules": Scope.RULES_ADMIN,
    "/civicflow.v1.WorkOrderSync/WorkOrders": Scope.WORK_ORDERS,
    "/civicflow.v1.WorkOrderSync/Acknowledge": Scope.WORK_ORDERS,
    "/civicflow.v1.WorkOrderSync/ReportStatus": Scope.WORK_ORDERS,
}
# Load balancers and orchestrators check health without a key.
OPEN_SERVICES = ("/grpc.health.v1.Health/",)
# Reflection lists our methods and message shapes: open in development (grpcurl), any valid key in production.
REFLECTION_SERVICES = ("/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/")

NO_KEY = "no API key: send `authorization: Bearer <key>`; create one with `civicflow keys create`"
CLIENT_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_KEY = re.compile(r"^cf_(?P<id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{20,100})$")


class MalformedKey(ValueError):
    """Text that is not a civicflow API key at all."""


@dataclass(frozen=True)
class ApiKey:
    """`cf_<id>_<secret>`: the id finds the stored client, the secret proves the caller holds the key.
    Only the secret's SHA-256 is stored; the secret is 256 random bits, so a plain hash cannot be guessed
    back, and a slow password hash would only slow every call."""

    key_id: str
    secret: str = field(repr=False)

    @classmethod
    def issue(cls) -> ApiKey:
        return cls(secrets.token_hex(6), secrets.token_urlsafe(32))

    @classmethod
    def parse(cls, text: str) -> ApiKey:
        found = _KEY.match(text.strip())
        if found is None:
            raise MalformedKey(
                "the API key is not in civicflow's form cf_<id>_<secret>; send it whole, as `civicflow keys create`"
                " printed it"
            )
        return cls(found["id"], found["secret"])

    @property
    def secret_hash(self) -> str:
        return hash_secret(self.secret)

    def reveal(self) -> str:
        """The key as the client must send it; shown once, when it is created."""
        return f"cf_{self.key_id}_{self.secret}"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    """Compared in constant time, so response times tell nothing about how much of a guess was right."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)


_DEPARTMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # civicflow.codes' department id


def department_scope(department_id: str) -> str:
    """The scope that lets a key act for one department's work orders: `workorders:<department_id>`."""
    return DEPARTMENT_SCOPE_PREFIX + department_id


def is_department_scope(name: str) -> bool:
    department = name.removeprefix(DEPARTMENT_SCOPE_PREFIX)
    return department != name and _DEPARTMENT_ID.match(department) is not None


def grants(scopes: frozenset[str], needed: Scope) -> bool:
    """Whether a key's scopes let it call a method needing `needed`: a department's scope admits the
    WorkOrderSync methods, and the servicer then checks the department."""
    if needed is Scope.WORK_ORDERS:
        return any(is_department_scope(s) for s in scopes)
    return needed in scopes


def parse_scopes(names: Iterable[str]) -> frozenset[str]:
    """Scopes by name; 'all' stands for every scope a person uses, `workorders:<department_id>` lets a
    department's system act for that department. An unknown name is an error that lists the known ones."""
    chosen: set[str] = set()
    for name in names:
        if name == "all":
            chosen |= ALL_SCOPES
        elif is_department_scope(name):
            chosen.add(name)
        elif name.startswith(Scope.WORK_ORDERS.value):
            raise ValueError(
                f"{name!r}: work orders are granted per department: write workorders:<department_id>,"
                " e.g. workorders:water (the department id as in the city file)"
            )
        else:
            try:
                chosen.add(Scope(name))
            except ValueError:
                known = ", ".join(s.value for s in Scope if s in ALL_SCOPES)
                raise ValueError(
                    f"no scope {name!r}; choose from {known}, workorders:<department_id> (or all)"
                ) from None
    if not chosen:
        known = ", ".join([*(s.value for s in Scope if s in ALL_SCOPES), "workorders:<department_id>"])
        raise ValueError(f"give at least one scope, e.g. --scope submit --scope track (known: {known})")
    return frozenset(chosen)


def key_from_metadata(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    """The key a call carries: `authorization: Bearer <key>`, else `x-api-key: <key>`."""
    bearer = plain = None
    for name, value in metadata:
        if not isinstance(value, str):
            continue
        if name == "authorization":
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                bearer = token.strip()
        elif name == "x-api-key" and value.strip():
            plain = value.strip()
    return bearer or plain


def call_metadata(key: str) -> tuple[tuple[str, str], ...]:
    """What a client adds to every call it makes with `key`."""
    return (("authorization", f"Bearer {key}"),)


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per client: `per_second` calls on average, bursts of up to `burst`.

    In process memory, so each server process counts on its own (two intake replicas allow twice the
    rate in total). At most `max_clients` buckets are kept; the longest unused goes first, and a client
    that comes back starts with a full bucket."""

    def __init__(self, per_second: float, burst: int, clock: Clock = time.monotonic, max_clients: int = 10_000) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.per_second = per_second
        self.burst = burst
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, client: str) -> float:
        """0 when the call may go ahead (one token taken), else how many seconds until one may."""
        now = self._clock()
        bucket = self._buckets.pop(client, None) or _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.per_second)
        bucket.updated = now
        self._buckets[client] = bucket
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.per_second


class ShortMemory(Generic[T]):
    """Remembers an answer for `ttl` seconds, so a busy client is not looked up in the database on every
    call; the price is that a change (a revoked key) is seen up to `ttl` seconds late."""

    def __init__(self, ttl: float, clock: Clock = time.monotonic, max_entries: int = 10_000) -> None:
        self._ttl = ttl
        self._clock = clock
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, T]] = OrderedDict()

    def recall(self, key: str) -> tuple[bool, T | None]:
        entry = self._entries.get(key)
        if entry is None or self._clock() - entry[0] >= self._ttl:
            return False, None
        return True, entry[1]

    def remember(self, key: str, value: T) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (self._clock(), value)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


# The client whose call is being answered (set by civicflow.access for the length of the call), so what
# the call records names who asked for it.
CALLING_CLIENT: ContextVar[str | None] = ContextVar("civicflow_calling_client", default=None)


def actor(service: str) -> str:
    """Who an event records as its actor: `client:<name>` inside a keyed gRPC call, else the service."""
    client = CALLING_CLIENT.get()
    return f"client:{client}" if client else service
