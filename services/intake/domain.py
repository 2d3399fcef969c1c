"""What makes a request acceptable, and what a call-taker is told when it is not. Pure: no I/O."""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from civicflow.events import Location
from civicflow.pii import ResidentContact

Channel = Literal["phone", "web", "app", "system"]
PreferredChannel = Literal["email", "sms", "voice", "none"]
SERVICE_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_PHONE = re.compile(r"^\+?[0-9 ().-]{7,20}$")


class ServiceRequest(BaseModel):
    """A resident's request as intake accepts it."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    service_code: str = Field(min_length=1, max_length=64, pattern=SERVICE_CODE.pattern)
    description: str = Field(min_length=1, max_length=4000)
    location: Location
    contact: ResidentContact | None = None
    preferred_channel: PreferredChannel | None = None
    channel: Channel = "web"
    attributes: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=500)]] = Field(
        default_factory=dict, max_length=50
    )
    flags: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]] = Field(default_factory=list, max_length=10)

    @field_validator("contact")
    @classmethod
    def _phone_looks_like_one(cls, contact: ResidentContact | None) -> ResidentContact | None:
        if contact is not None and contact.phone and not _PHONE.match(contact.phone):
            raise ValueError("phone must be 7 to 20 digits, optionally with +, spaces, dots, dashes or brackets")
        return contact

    @model_validator(mode="after")
    def _preferred_channel_is_reachable(self) -> ServiceRequest:
        contact = self.contact or ResidentContact()
        if self.preferred_channel == "email" and not contact.email:
            raise ValueError("preferred channel is email but no email address was given")
        if self.preferred_channel in ("sms", "voice") and not contact.phone:
            raise ValueError(f"preferred channel is {self.preferred_channel} but no phone number was given")
        return self

    def fingerprint(self, idempotency_key: str) -> str:
        """A digest that tells whether a retried key carries the same request. The contact is left out:
        a digest of it would let someone holding the key guess a forgotten resident's phone number."""
        return hashlib.blake2b(
            self.model_dump_json(exclude={"contact"}).encode(), key=idempotency_key.encode()[:64], digest_size=16
        ).hexdigest()


# pydantic paths → the request's field names as a client sees them
_FIELD_NAMES = {"long": "location.long", "lat": "location.lat"}


def field_violations(error: ValidationError) -> list[tuple[str, str]]:
    violations = []
    for item in error.errors(include_input=False, include_url=False):
        path = ".".join(str(part) for part in item["loc"]) or "request"
        message = item["msg"].removeprefix("Value error, ")
        violations.append((_FIELD_NAMES.get(path, path), message))
    return violations


def validate_request(raw: dict[str, Any]) -> ServiceRequest | list[tuple[str, str]]:
    """The accepted request, or every (field, what is wrong) at once so the caller can fix them together."""
    try:
        return ServiceRequest.model_validate(raw)
    except ValidationError as exc:
        return field_violations(exc)


IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")
