"""gRPC NotifierService: a resident's change of preferences, turned into PreferencesChanged on the case."""

from __future__ import annotations

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.events import PreferencesChanged
from civicflow.eventstore import ConcurrencyConflict, EventStore
from civicflow.grpc_errors import abort_with, invalid_argument
from civicflow.pii import ContactVault
from civicflow.v1 import intake_pb2, notifier_pb2, notifier_pb2_grpc
from services.notifier.preferences import CannotReach, CaseNotFound, change_violations, set_preferences

_CHANNELS = {
    intake_pb2.CONTACT_CHANNEL_EMAIL: "email",
    intake_pb2.CONTACT_CHANNEL_SMS: "sms",
    intake_pb2.CONTACT_CHANNEL_VOICE: "voice",
    intake_pb2.CONTACT_CHANNEL_NONE: "none",
}
_UPDATES = {intake_pb2.CONTACT_UPDATES_ALL: "all", intake_pb2.CONTACT_UPDATES_OUTCOME: "outcome"}


class NotifierServicer(notifier_pb2_grpc.NotifierServiceServicer):
    def __init__(self, engine: AsyncEngine, store: EventStore, vault: ContactVault) -> None:
        self._engine = engine
        self._store = store
        self._vault = vault

    async def SetPreferences(
        self, request: notifier_pb2.SetPreferencesRequest, context: grpc.aio.ServicerContext
    ) -> notifier_pb2.SetPreferencesResponse:
        problems = []
        if request.preferred_channel and request.preferred_channel not in _CHANNELS:
            problems.append(("preferred_channel", "give email, sms, voice or none"))
        change = PreferencesChanged(
            preferred_channel=_CHANNELS.get(request.preferred_channel),
            language=request.language[:8] or None,
            updates=_UPDATES.get(request.updates),  # type: ignore[arg-type]
        )
        number, violations = change_violations(request.tracking_number, change)
        if problems or violations:
            await abort_with(context, invalid_argument([*problems, *violations]))
        try:
            now = await set_preferences(self._engine, self._store, self._vault, number, change)
        except CaseNotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            raise
        except CannotReach as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            raise
        except ConcurrencyConflict:
            await context.abort(grpc.StatusCode.ABORTED, "the case changed while it was being updated; try again")
            raise
        return notifier_pb2.SetPreferencesResponse(
            preferred_channel=now.preferred_channel or "", language=now.language, updates=now.updates
        )
