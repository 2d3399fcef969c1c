"""gRPC IntakeService: turns SubmitRequest into a ServiceRequest and hands it to Intake."""

from __future__ import annotations

from typing import Any

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow import tracking
from civicflow.city import CityProfile
from civicflow.codes import CODE_RULE
from civicflow.eventstore import ConcurrencyConflict, EventStore
from civicflow.geocode import Geocoder, NoGeocoder
from civicflow.grpc_errors import abort_with, invalid_argument
from civicflow.v1 import intake_pb2, intake_pb2_grpc
from services.intake.domain import (
    IDEMPOTENCY_KEY,
    MAX_REQUEST_BYTES,
    MAX_TRACKING_NUMBER_CHARS,
    SERVICE_CODE,
    place,
    reason_violations,
    validate_request,
)
from services.intake.group_commit import CommitterClosed
from services.intake.handlers import CaseNotFound, IdempotencyKeyReused, Intake, NothingToChange, recategorise

_PREFERRED = {
    intake_pb2.CONTACT_CHANNEL_EMAIL: "email",
    intake_pb2.CONTACT_CHANNEL_SMS: "sms",
    intake_pb2.CONTACT_CHANNEL_VOICE: "voice",
    intake_pb2.CONTACT_CHANNEL_NONE: "none",
}

_UPDATES = {intake_pb2.CONTACT_UPDATES_ALL: "all", intake_pb2.CONTACT_UPDATES_OUTCOME: "outcome"}


def request_fields(message: intake_pb2.SubmitRequestRequest) -> dict[str, Any]:
    """The request as plain fields; unset optional parts are left out so validation names what is missing."""
    raw: dict[str, Any] = {"service_code": message.service_code, "description": message.description}
    if message.channel:
        raw["channel"] = message.channel
    if message.attributes:
        raw["attributes"] = dict(message.attributes)
    if message.flags:
        raw["flags"] = list(message.flags)
    loc = message.location
    if message.HasField("location") and (loc.HasField("lat") or loc.HasField("long") or loc.address):
        raw["location"] = {
            "lat": loc.lat if loc.HasField("lat") else None,
            "long": loc.long if loc.HasField("long") else None,
            "address": loc.address or None,
        }
    if message.HasField("contact"):
        contact = message.contact
        fields = {"name": contact.name, "email": contact.email, "phone": contact.phone}
        if any(fields.values()):
            raw["contact"] = {k: v for k, v in fields.items() if v}
        if contact.preferred_channel in _PREFERRED:
            raw["preferred_channel"] = _PREFERRED[contact.preferred_channel]
        if contact.language:
            raw["language"] = contact.language
        if contact.updates in _UPDATES:
            raw["updates"] = _UPDATES[contact.updates]
    return raw


class IntakeServicer(intake_pb2_grpc.IntakeServiceServicer):
    def __init__(
        self,
        intake: Intake,
        engine: AsyncEngine,
        store: EventStore,
        city: CityProfile | None = None,
        geocoder: Geocoder | None = None,
    ) -> None:
        self._intake = intake
        self._geocoder = geocoder or NoGeocoder()
        self._engine = engine
        self._store = store
        self._city = city

    async def RecategoriseCase(
        self, request: intake_pb2.RecategoriseCaseRequest, context: grpc.aio.ServicerContext
    ) -> intake_pb2.RecategoriseCaseResponse:
        violations = []
        number = ""
        if len(request.tracking_number) > MAX_TRACKING_NUMBER_CHARS:
            violations.append(("tracking_number", "a tracking number is 7 letters and digits, like 4K7Q-M2D"))
        else:
            try:
                number = tracking.parse(request.tracking_number)
            except tracking.InvalidTrackingNumber as exc:
                violations.append(("tracking_number", str(exc)))
        if not SERVICE_CODE.fullmatch(request.service_code):
            violations.append(("service_code", f"give the service code: {CODE_RULE}"))
        violations += reason_violations(request.reason)
        if violations:
            await abort_with(context, invalid_argument(violations))
        try:
            previous = await recategorise(
                self._engine, self._store, number, request.service_code, request.reason.strip()
            )
        except CaseNotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            raise
        except NothingToChange as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            raise
        except ConcurrencyConflict:  # the router or notifier kept appending to the case through every retry
            await context.abort(grpc.StatusCode.ABORTED, "the case changed while it was being corrected; try again")
            raise
        return intake_pb2.RecategoriseCaseResponse(previous_service_code=previous)

    async def SubmitRequest(
        self, request: intake_pb2.SubmitRequestRequest, context: grpc.aio.ServicerContext
    ) -> intake_pb2.SubmitRequestResponse:
        size = request.ByteSize()
        if size > MAX_REQUEST_BYTES:  # before reading any field: nothing this large is one resident's request
            await abort_with(
                context,
                invalid_argument(
                    [("request", f"is {size} bytes; at most {MAX_REQUEST_BYTES} are taken: shorten its texts")]
                ),
            )
        result = validate_request(request_fields(request), self._city)
        violations = result if isinstance(result, list) else []
        if request.idempotency_key and not IDEMPOTENCY_KEY.fullmatch(request.idempotency_key):
            violations.append(("idempotency_key", "must be 1 to 128 printable ASCII characters without spaces"))
        if violations or isinstance(result, list):
            await abort_with(context, invalid_argument(violations))
            raise AssertionError("unreachable")  # abort raises
        try:
            accepted = await self._intake.submit(
                result, request.idempotency_key or None, placed=place(result, self._geocoder, self._city)
            )
        except IdempotencyKeyReused as exc:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
            raise
        except CommitterClosed as exc:  # stopping: the client may retry at another replica with the same key
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            raise
        response = intake_pb2.SubmitRequestResponse(
            tracking_number=accepted.tracking_number, case_id=str(accepted.case_id), replayed=accepted.replayed
        )
        response.submitted_at.FromDatetime(accepted.submitted_at)
        return response
