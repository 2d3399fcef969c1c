"""How each department's own system is reached: the `connector:` of a department in the city file.

A department names its connector kind and that kind's settings; secrets are given by reference (an environment
variable or a file), never inline, so a city file can be committed and shared. The router validates this
section with the rest of the file (`civicflow rules check`); the workorder bridge builds its connectors from it
(services/workorder_bridge/connectors.py).

Status travels both ways. Our side speaks one vocabulary (`OurStatus`); each connector maps ours to theirs
(`statuses.forward`, used when we tell their system, e.g. a cancellation) and theirs to ours
(`statuses.reverse`, used for every update they send). Each kind starts from a default reverse mapping for the
vocabulary its standard uses, which the city file extends or overrides; a status neither maps is never an
error: the bridge records it as a note with the external code and counts it (an unmapped status).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ConnectorKind = Literal["rest_webhook", "open311", "grpc", "email"]
CONNECTOR_KINDS: tuple[ConnectorKind, ...] = ("rest_webhook", "open311", "grpc", "email")

# Our side of every status mapping: what a department's update can mean for the case.
OurStatus = Literal[
    "open",
    "acknowledged",
    "in_progress",
    "action_scheduled",
    "resolved",  # fixed: the work is done (resolves the case)
    "closed",  # closed by the department; resolves the case when it was not resolved yet
    "duplicate",  # of another case (resolves this one as a duplicate)
    "not_our_responsibility",  # the router places the case again without this department
    "internal_referral",  # the department passes it to another department (named in the update)
    "reopened",  # the department opened the job again: the case no longer stands resolved
    "cancelled",  # the department cancelled the work order
]
OUR_STATUSES: tuple[str, ...] = OurStatus.__args__  # type: ignore[attr-defined]
# Words cities use for ours, taken as ours when a reverse mapping names them.
OUR_ALIASES = {"fixed": "resolved", "done": "resolved", "rejected": "not_our_responsibility"}

# Each kind's default reverse mapping: the vocabulary its own standard speaks, mapped to ours. A city file's
# `statuses.reverse` is laid over it. Their statuses are compared without case and with spaces and hyphens
# as underscores ("Action Scheduled" = action_scheduled).
DEFAULT_REVERSE: dict[ConnectorKind, dict[str, OurStatus]] = {
    # today's sample REST protocol, and our own vocabulary
    "rest_webhook": {"done": "resolved", "rejected": "not_our_responsibility"},
    # Open311 GeoReport v2 (open, closed) and the statuses mySociety's open311-adapter and FixMyStreet send
    "open311": {
        "investigating": "acknowledged",
        "fixed": "resolved",
        "not_councils_responsibility": "not_our_responsibility",
        "unable_to_fix": "closed",
        "no_further_action": "closed",
        "reopen": "reopened",
        "for_triage": "acknowledged",  # mySociety's extended statuses: in the council's triage queue
    },
    "grpc": {},  # the proto's enum is our vocabulary
    # the words a department replies with on the first line (services/workorder_bridge/kinds/email.py lists them)
    "email": {
        "done": "resolved",
        "fixed": "resolved",
        "working": "in_progress",
        "scheduled": "action_scheduled",
        "not_ours": "not_our_responsibility",
        "refer": "internal_referral",
        "reopen": "reopened",
    },
}
# Each kind's default forward mapping (ours -> theirs); ours is sent as it is where a kind has none.
DEFAULT_FORWARD: dict[ConnectorKind, dict[OurStatus, str]] = {
    "rest_webhook": {"resolved": "done", "not_our_responsibility": "rejected"},
    # cancelled: mySociety's POST servicerequestupdates takes only its extended statuses (no CANCELLED)
    "open311": {
        "resolved": "fixed",
        "not_our_responsibility": "not_councils_responsibility",
        "reopened": "reopen",
        "cancelled": "closed",
    },
    "grpc": {},
    # the words a work-order email asks for: what a person types on a reply's first line
    "email": {
        "resolved": "done",
        "in_progress": "in progress",
        "action_scheduled": "scheduled",
        "not_our_responsibility": "not ours",
        "internal_referral": "refer",
        "reopened": "reopen",
    },
}

_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
_THEIR_STATUS = re.compile(r"[^\x00-\x1f\x7f]{1,64}")


def their_status_key(status: str) -> str:
    """How their status is compared: without case, surrounding space, and with spaces and hyphens as '_'."""
    return re.sub(r"[\s\-]+", "_", status.strip().lower())


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SecretRef(_Strict):
    """A credential by reference: `{env: NAME}` (an environment variable) or `{file: PATH}` (a file, relative
    to the city file's folder or absolute, as Docker and Kubernetes secrets are mounted)."""

    env: str | None = None
    file: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _not_inline(cls, value: Any) -> Any:
        if isinstance(value, str | int | float):
            raise ValueError(
                "a credential is given by reference, never inline: write {env: VARIABLE_NAME} or {file: PATH}"
            )
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env (an environment variable's name) or file (a path)")
        if self.env is not None and not _ENV_NAME.fullmatch(self.env):
            raise ValueError(f"env: {self.env!r} is not an environment variable name (A-Z, 0-9 and _)")
        return self

    def resolve(self, base_dir: Path | None = None) -> str:
        """The secret's value; KeyError-free: a MissingSecret saying which reference is empty."""
        if self.env is not None:
            value = os.environ.get(self.env, "")
            where = f"the environment variable {self.env}"
        else:
            assert self.file is not None
            path = Path(self.file)
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            where = f"the file {self.file}"
            try:
                value = path.read_text().strip()
            except OSError:
                value = ""
        if not value:
            raise MissingSecret(f"{where} is not set or empty")
        return value


class MissingSecret(LookupError):
    """A connector's credential reference names nothing (an unset variable, a missing or empty file)."""


class StatusMappings(_Strict):
    """Ours -> theirs (forward) and theirs -> ours (reverse), laid over the kind's defaults."""

    forward: dict[OurStatus, Annotated[str, Field(min_length=1, max_length=64)]] = {}
    reverse: dict[Annotated[str, Field(min_length=1, max_length=64)], OurStatus] = {}

    @field_validator("reverse", mode="before")
    @classmethod
    def _ours_by_alias(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: OUR_ALIASES.get(str(v), v) if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("reverse")
    @classmethod
    def _printable(cls, value: dict[str, str]) -> dict[str, str]:
        for theirs in value:
            if not _THEIR_STATUS.fullmatch(theirs):
                raise ValueError(f"their status {theirs!r} has control characters")
        return value


class ConnectorSpec(_Strict):
    """A department's connector, as the city file gives it. Fields a kind does not use are refused for it."""

    kind: ConnectorKind
    # rest_webhook, open311: the base URL of their API
    endpoint: str | None = None
    # email: the department's inbox
    inbox: str | None = None
    # rest_webhook (bearer token), open311 (api_key), email (the key its one-click answer links are signed with;
    # none: one derived from the bridge's signing secret for this department)
    credentials: SecretRef | None = None
    # rest_webhook: the secret its system signs status webhooks with; none: one derived from the bridge's signing
    # secret for this department (`department_webhook_secret`; `civicflow departments secret ID` prints it)
    webhook_secret: SecretRef | None = None
    # grpc: the client's key id that may report for this department
    key_id: str | None = None
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # every kind: a work order with no status news for this long is read back from their system (reconciliation,
    # services/workorder_bridge/reconcile.py), and read again no sooner; kinds that cannot be read are skipped
    reconcile_after_minutes: float = Field(default=120.0, gt=0, le=525_600)
    # open311: how often updates are polled, how far back each poll reaches again, and the GeoReport details
    poll_seconds: float = Field(default=30.0, ge=0.05, le=86_400)
    catch_up_minutes: float = Field(default=60.0, ge=0, le=10_080)
    jurisdiction_id: str | None = None
    format: Literal["json", "xml"] = "json"
    # open311: GeoReport has no idempotency key, so ours is sent as this attribute (attribute[civicflow_key]) and,
    # before each POST, looked for with GET requests?attribute[civicflow_key]=KEY (lookup_by_key), so a retry
    # after a lost answer finds the request instead of opening a second one; null: neither (see kinds/open311.py)
    key_attribute: str | None = Field(default="civicflow_key", pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    lookup_by_key: bool = True
    # open311: the zone of their timestamps that carry none (GeoReport asks for an offset; some omit it); UTC if unset
    timezone: str | None = None
    # our service codes -> theirs; a code not listed is sent as ours
    services: dict[str, Annotated[str, Field(min_length=1, max_length=100)]] = {}
    # our attribute (question) codes -> their field names; attributes not listed are not sent
    attributes: dict[str, Annotated[str, Field(min_length=1, max_length=100)]] = {}
    statuses: StatusMappings = StatusMappings()

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError(f"{value!r} is not an http(s) URL (scheme, host, optional path; no query)")
        return value.rstrip("/") if value else value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"{value!r} is not an IANA time zone (e.g. America/Chicago)") from None
        return value

    @field_validator("inbox")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+", value):
            raise ValueError(f"{value!r} is not an e-mail address")
        return value

    @model_validator(mode="after")
    def _fields_of_the_kind(self) -> ConnectorSpec:
        needs: dict[ConnectorKind, tuple[str, ...]] = {
            "rest_webhook": (),  # no endpoint: CIVICFLOW_WORKORDER_BASE_URL, as before connectors were per department
            "open311": ("endpoint",),
            "grpc": (),
            "email": ("inbox",),
        }
        takes: dict[ConnectorKind, frozenset[str]] = {
            "rest_webhook": frozenset({"endpoint", "credentials", "webhook_secret"}),
            "open311": frozenset(
                {
                    "endpoint",
                    "credentials",
                    "poll_seconds",
                    "catch_up_minutes",
                    "jurisdiction_id",
                    "format",
                    "key_attribute",
                    "lookup_by_key",
                    "timezone",
                }
            ),
            "grpc": frozenset({"key_id"}),
            "email": frozenset({"inbox", "credentials"}),
        }
        article = "an" if self.kind[0] in "aeiou" else "a"
        for name in needs[self.kind]:
            if getattr(self, name) is None:
                raise ValueError(f"{article} {self.kind} connector needs {name}")
        kind_fields = frozenset().union(*takes.values())
        for name in sorted(kind_fields - takes[self.kind]):
            if name in self.model_fields_set:
                raise ValueError(f"{name}: not a setting of {article} {self.kind} connector")
        return self

    def reverse(self) -> dict[str, str]:
        """Theirs -> ours: our own vocabulary, then the kind's defaults, then the city file's, by their_status_key."""
        mapping = {status: status for status in OUR_STATUSES} | dict(OUR_ALIASES)
        mapping |= DEFAULT_REVERSE[self.kind]
        mapping |= {their_status_key(k): v for k, v in self.statuses.reverse.items()}
        return mapping

    def ours(self, theirs: str) -> str | None:
        """Our status for one of theirs, or None when it is unmapped."""
        return self.reverse().get(their_status_key(theirs))

    def theirs(self, ours: str) -> str:
        """Their status for one of ours (ours as it is when nothing maps it)."""
        for mapping in (self.statuses.forward, DEFAULT_FORWARD[self.kind]):
            for our_status, their_status in mapping.items():
                if our_status == ours:
                    return their_status
        return ours

    def their_service(self, code: str) -> str:
        return self.services.get(code, code)


DEFAULT_CONNECTOR = ConnectorSpec(kind="rest_webhook")


def department_secret(signing_secret: str, label: str, department_id: str) -> str:
    """A secret of one department's own, derived from the bridge's signing secret: hex HMAC-SHA256 of
    "<label>:<department>". A department given it can sign nothing for another department, nor for another use
    (each use has its label), and nothing it holds reveals the bridge's secret."""
    message = f"{label}:{department_id}".encode()
    return hmac.new(signing_secret.encode(), message, hashlib.sha256).hexdigest()


def department_webhook_secret(signing_secret: str, department_id: str) -> str:
    """The secret a rest_webhook department signs its status webhooks with when its connector names none."""
    return department_secret(signing_secret, "webhook", department_id)


def connector_specs(departments: Any) -> dict[str, ConnectorSpec]:
    """Each department's connector from the city file's `departments` (the default, rest_webhook at the city's
    work-order base URL, where a department names none); ValueError naming the department and the field when one
    is wrong, never the value written there (a credential written inline must not reach a log or a terminal)."""
    found: dict[str, ConnectorSpec] = {}
    for department_id, definition in departments.items() if isinstance(departments, dict) else ():
        raw = definition.get("connector") if isinstance(definition, dict) else None
        try:
            found[str(department_id)] = DEFAULT_CONNECTOR if raw is None else ConnectorSpec.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"]
                for e in exc.errors(include_input=False)
            )
            raise ValueError(f"departments.{department_id}.connector: {problems}") from None
    return found
